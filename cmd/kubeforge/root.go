package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/playbooks"
	"github.com/kubeforge/kubeforge/tasks"
)

// exitCode carries a process exit code through cobra.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit %d", int(e)) }

// globals are the flags every command has.
type globals struct {
	opts              playbooks.Options
	ignorePreflight   []string
	acceptNewHostKeys bool
	// probeAPI asks an API server's /readyz from this workstation
	// (`kubeforge kubeconfig`); tests put a fake here.
	probeAPI tasks.ServerProber
}

func execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return executeWith(ctx, &globals{probeAPI: tasks.DirectReadyz}, args, stdout, stderr)
}

// executeWith runs the command line args with g, and returns the exit code.
func executeWith(ctx context.Context, g *globals, args []string, stdout, stderr io.Writer) int {
	root := newRoot(g, stdout, stderr)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var code exitCode
	if errors.As(err, &code) {
		return int(code)
	}
	return report(stderr, err, g)
}

func newRoot(g *globals, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "kubeforge",
		Short: "Install and run Kubernetes clusters over SSH, from one workstation",
		Long: `kubeforge builds kubeadm-layout Kubernetes clusters from an inventory file: it checks every host,
generates the cluster PKI locally, pushes files over SFTP and joins the nodes, in parallel, with no agent.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			g.opts.Stdout, g.opts.Stderr = stdout, stderr
			g.opts.AskPassword = askTerminal(stderr)
			if g.opts.Output != "text" && g.opts.Output != "json" {
				return fmt.Errorf("--output must be text or json, not %q", g.opts.Output)
			}
			if g.opts.Concurrency < 1 {
				return fmt.Errorf("--concurrency must be at least 1")
			}
			if g.opts.Tasks.Fanout < 0 {
				return fmt.Errorf("--fanout must be 0 (no host-to-host copies) or more")
			}
			g.opts.Tasks.AcceptNewHostKeys = g.acceptNewHostKeys
			g.opts.Tasks.PeerServer = peerServer
			g.opts.Tasks.IgnorePreflight = map[string]bool{}
			for _, id := range g.ignorePreflight {
				g.opts.Tasks.IgnorePreflight[strings.TrimSpace(id)] = true
			}
			return nil
		},
	}
	f := root.PersistentFlags()
	f.StringVarP(&g.opts.Inventory, "inventory", "i", "", "inventory file (YAML, kind: Cluster)")
	f.StringVar(&g.opts.StateDir, "state-dir", "", "state directory (default <inventory dir>/<cluster name>.kubeforge)")
	f.IntVar(&g.opts.Concurrency, "concurrency", tasks.DefaultConcurrency, "hosts worked on at once")
	f.BoolVarP(&g.opts.Verbose, "verbose", "v", false, "log every command to stderr too")
	f.StringVar(&g.opts.Output, "output", "text", "progress format: text or json (one event per line)")
	f.BoolVar(&g.acceptNewHostKeys, "accept-new-host-keys", false, "trust and record unknown SSH host keys (changed keys are always refused)")
	f.DurationVar(&g.opts.Timeout, "timeout", 0, "deadline for the whole run (0: none)")

	root.AddCommand(
		newInventoryCmd(g, stdout, stderr),
		newPreflightCmd(g, stdout),
		newUpCmd(g, stdout),
		newScaleCmd(g, stdout),
		newUpgradeCmd(g, stdout),
		newResetCmd(g, stdout),
		newBackupCmd(g, stdout),
		newRestoreCmd(g, stdout),
		newAPIProxyCmd(),
		newPeerServeCmd(),
		newCertsCmd(g, stdout),
		newSecretsCmd(g, stdout),
		newRenderCmd(g, stdout),
		newKubeconfigCmd(g, stdout, stderr),
		newConformanceCmd(g, stdout),
		newVersionCmd(stdout),
	)
	return root
}

// changing adds the flags of commands that change hosts.
func changing(cmd *cobra.Command, g *globals) {
	f := cmd.Flags()
	f.BoolVar(&g.opts.DryRun, "dry-run", false, "read the hosts and the cluster, print the plan (files, restarts, etcd members, joins) and change nothing")
	f.BoolVar(&g.opts.Offline, "offline", false, "with --dry-run: contact no host; print the steps x hosts outline")
	f.StringSliceVar(&g.opts.Skip, "skip", nil, "steps to skip (a group name skips the whole group)")
	f.StringSliceVar(&g.opts.Only, "only", nil, "run only these steps (connect and facts always run)")
	f.StringSliceVar(&g.ignorePreflight, "ignore-preflight-errors", nil, "preflight check IDs to ignore, or all")
	f.DurationVar(&g.opts.Tasks.WaitTimeout, "wait-timeout", 5*time.Minute, "how long to wait for the control plane and nodes")
	f.IntVar(&g.opts.Tasks.Fanout, "fanout", tasks.DefaultFanout, "hosts each host that holds the artifacts feeds at once, over the cluster network (0: every host gets them from here)")
}

func newInventoryCmd(g *globals, stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "inventory", Short: "Work with inventory files"}
	cmd.AddCommand(&cobra.Command{
		Use:   "validate",
		Short: "Check an inventory and print every problem with file:line (exit 2 when invalid)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			inv, err := playbooks.Load(&g.opts)
			if err != nil {
				return err
			}
			for _, w := range inv.Warnings {
				fmt.Fprintln(stderr, w)
			}
			fmt.Fprintf(stdout, "%s: valid (%d hosts: %d control plane, %d worker)\n", g.opts.Inventory,
				len(inv.Hosts), len(inv.ControlPlanes()), len(inv.Workers()))
			return nil
		},
	})
	return cmd
}

func newPreflightCmd(g *globals, stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "preflight",
		Short: "Check every host (read-only) and print the check table",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := playbooks.Run(cmd.Context(), &g.opts, playbooks.Preflight)
			if res != nil && res.Env != nil {
				fmt.Fprintln(stdout)
				tasksWritePreflight(stdout, res)
			}
			return err
		},
	}
	cmd.Flags().StringSliceVar(&g.ignorePreflight, "ignore-preflight-errors", nil, "preflight check IDs to ignore, or all")
	return cmd
}

func newVersionCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print kubeforge's version and the Kubernetes versions it installs",
		Args:  cobra.NoArgs,
		Run: func(*cobra.Command, []string) {
			fmt.Fprintf(stdout, "kubeforge %s (installs Kubernetes %s)\n", version, inventory.SupportedKubernetesVersions)
		},
	}
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"
