package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/playbooks"
)

func newResetCmd(g *globals, stdout io.Writer) *cobra.Command {
	var hosts []string
	var yes, purge bool
	cmd := &cobra.Command{
		Use:   "reset",
		Short: "Tear the cluster down on every host (or --hosts), and verify nothing is left",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			inv, err := playbooks.Load(&g.opts)
			if err != nil {
				return err
			}
			sel, names, err := hostSelector(inv, hosts)
			if err != nil {
				return err
			}
			if purge {
				if err := playbooks.CheckPurge(&g.opts, inv, hosts); err != nil {
					return err
				}
				g.opts.Tasks.PurgeRuntime = true
			}
			if !yes && !g.opts.DryRun {
				q := fmt.Sprintf("Reset %s on %s? This deletes the cluster's data there.", inv.Cluster.Name, strings.Join(names, ", "))
				if purge {
					q += fmt.Sprintf(" --purge also removes %s (the cluster's PKI)", g.opts.StateDir)
					if !g.opts.Tasks.KeepArtifacts {
						q += " and the container runtime kubeforge installed"
					}
					q += "."
				}
				if err := confirm(stdout, q); err != nil {
					return err
				}
			}
			res, err := playbooks.Run(cmd.Context(), &g.opts, playbooks.Reset(sel))
			if res == nil {
				return err
			}
			finish(stdout, g, res)
			if err != nil || g.opts.DryRun {
				return err
			}
			if purge {
				if err := playbooks.PurgeStateDir(&g.opts, inv); err != nil {
					return err
				}
				fmt.Fprintf(stdout, "Removed the state dir %s (PKI included).\n", g.opts.StateDir)
			} else {
				fmt.Fprintf(stdout, "The state dir %s is kept: `kubeforge up` reuses its PKI. --purge removes it.\n", g.opts.StateDir)
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&hosts, "hosts", nil, "reset only these hosts (names from the inventory)")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	cmd.Flags().BoolVar(&purge, "purge", false, "also remove the local state dir (PKI, kubeconfigs, logs) and the container runtime kubeforge installed (a runtime it did not install stays)")
	cmd.Flags().BoolVar(&g.opts.Tasks.KeepArtifacts, "keep-artifacts", false, "keep pushed binaries and images on the hosts")
	cmd.Flags().BoolVar(&g.opts.DryRun, "dry-run", false, "print the plan and touch no host")
	cmd.Flags().BoolVar(&g.opts.Tasks.Force, "force", false, "with --hosts: reset control planes that hold etcd data even when no staying control plane answers to remove their etcd members first")
	return cmd
}

// hostSelector turns --hosts into a selector, checking every name exists.
func hostSelector(inv *inventory.Inventory, names []string) (inventory.Selector, []string, error) {
	if len(names) == 0 {
		all := make([]string, len(inv.Hosts))
		for i, h := range inv.Hosts {
			all[i] = h.Name
		}
		return inventory.SelectAll, all, nil
	}
	want := map[string]bool{}
	for _, n := range names {
		if inv.Host(n) == nil {
			return inventory.Selector{}, nil, fmt.Errorf("--hosts: no host %q in %s", n, inv.Path)
		}
		want[n] = true
	}
	return inventory.Selector{Name: "chosen", Match: func(_ *inventory.Inventory, h *inventory.Host) bool { return want[h.Name] }}, names, nil
}

// confirm asks on the terminal; without one it refuses and names --yes.
func confirm(w io.Writer, question string) error {
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return fmt.Errorf("refusing to reset without confirmation: no terminal to ask on; pass --yes")
	}
	fmt.Fprintf(w, "%s Type yes to continue: ", question)
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	if strings.TrimSpace(line) != "yes" {
		return exitCode(1)
	}
	return nil
}

// askTerminal reads a secret from the terminal without echo.
func askTerminal(w io.Writer) func(string) (string, error) {
	return func(prompt string) (string, error) {
		fd := int(os.Stdin.Fd())
		if !term.IsTerminal(fd) {
			return "", fmt.Errorf("no terminal to ask %q on; use passwordEnv in the inventory", strings.TrimSpace(prompt))
		}
		fmt.Fprint(w, prompt)
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(w)
		return string(b), err
	}
}
