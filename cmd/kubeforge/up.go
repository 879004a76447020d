package main

import (
	"fmt"
	"io"
	"sort"

	"github.com/spf13/cobra"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/playbooks"
)

func newUpCmd(g *globals, stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Create a cluster from the inventory, or converge an existing one",
		Long: "Create a cluster from the inventory, or converge an existing one. Steps, in order:\n\n" +
			stepList(playbooks.Up(&inventory.Inventory{})),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := playbooks.Run(cmd.Context(), &g.opts, playbooks.Up)
			if res == nil {
				return err
			}
			finish(stdout, g, res)
			if err != nil || g.opts.DryRun {
				return err
			}
			admin := res.Env.AdminKubeconfigPath()
			fmt.Fprintf(stdout, "\nThe cluster is up. Use it with:\n  export KUBECONFIG=%s\n  kubectl get nodes\n", admin)
			fmt.Fprintf(stdout, "`kubeforge kubeconfig -i %s` prints that kubeconfig again.\n", g.opts.Inventory)
			return nil
		},
	}
	changing(cmd, g)
	return cmd
}

// finish prints the summary table and what changed; after a dry run, the plan.
func finish(w io.Writer, g *globals, res *playbooks.RunResult) {
	if g.opts.DryRun {
		if p := res.Env.Plan; p != nil {
			if g.opts.Output == "json" {
				_ = p.WriteJSON(w)
				return
			}
			fmt.Fprintln(w)
			p.WritePlan(w)
			fmt.Fprintln(w, "Dry run: the hosts were read; nothing was changed.")
		}
		return
	}
	changes := res.Env.Changes()
	fmt.Fprintln(w)
	res.Summary.Write(w, changes)
	if d := res.Env.Distribution(); d.Uploaded+d.Fetched > 0 {
		fmt.Fprintf(w, "Artifacts: %d files (%s) sent from here, %d (%s) fetched from peers, %d fallbacks.\n",
			d.Uploaded, mib(d.UploadedBytes), d.Fetched, mib(d.FetchedBytes), d.Fallbacks)
	}
	for _, msg := range res.Env.Warnings() {
		fmt.Fprintln(w, "warning: "+msg)
	}
	n := 0
	for _, c := range changes {
		n += len(c)
	}
	if n == 0 && res.Err == nil {
		fmt.Fprintln(w, "No changes: every host already matched the inventory.")
	}
	if g.opts.Verbose {
		hosts := make([]string, 0, len(changes))
		for h := range changes {
			hosts = append(hosts, h)
		}
		sort.Strings(hosts)
		for _, h := range hosts {
			for _, c := range changes[h] {
				fmt.Fprintf(w, "  %s: %s\n", h, c)
			}
		}
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func stepList(p playbooks.Playbook) string {
	s := ""
	for _, st := range p.Steps {
		s += fmt.Sprintf("  %-22s %s\n", st.Name, st.Help)
	}
	return s
}
