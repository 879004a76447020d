package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/playbooks"
	"github.com/kubeforge/kubeforge/tasks"
)

func newUpgradeCmd(g *globals, stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "upgrade",
		Short: "Upgrade the cluster to the inventory's kubernetesVersion, one node at a time, workloads kept running",
		Long: "Upgrade the cluster to the inventory's kubernetesVersion (set it and cluster.artifacts to the new build first).\n" +
			"One minor at a time, never down. An etcd snapshot is taken first; control planes go one at a time, then\n" +
			"the cluster's objects, then the workers in batches (--max-unavailable), each drained with its\n" +
			"PodDisruptionBudgets respected. Ctrl-C stops at the next safe point; run upgrade again to go on from\n" +
			"what it finds. `up` refuses to change the version: that is this command's work. Steps, in order:\n\n" +
			stepList(playbooks.Upgrade(&inventory.Inventory{})),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := tasks.ParseMaxUnavailable(g.opts.Tasks.MaxUnavailable); err != nil {
				return err
			}
			g.opts.Tasks.Upgrade = true
			g.opts.OnEnv = func(env *tasks.Env) {
				f := env.RequestStop
				gracefulStop.Store(&f)
			}
			defer gracefulStop.Store(nil)
			res, err := playbooks.Run(cmd.Context(), &g.opts, playbooks.Upgrade)
			if res == nil {
				return err
			}
			u := res.Env.Upgrade
			if g.opts.DryRun {
				if u != nil && g.opts.Output == "json" {
					return u.WriteJSON(stdout)
				}
				if u != nil {
					fmt.Fprintln(stdout)
					u.WriteUpgradePlan(stdout)
					fmt.Fprintln(stdout, "Dry run: the hosts and the cluster were read; nothing was changed.")
				}
				return err
			}
			finish(stdout, g, res)
			if b := res.Env.Backup; b != nil {
				fmt.Fprintf(stdout, "etcd snapshot taken before the upgrade: %s (sha256 %s)\n", b.Path, b.SHA256)
			}
			if err == nil && u != nil {
				if u.Empty() {
					fmt.Fprintf(stdout, "\nEvery node runs %s: nothing to upgrade.\n", u.To)
				} else {
					fmt.Fprintf(stdout, "\nThe cluster runs %s.\n", u.To)
				}
			}
			return err
		},
	}
	changing(cmd, g)
	cmd.Flags().StringVar(&g.opts.Tasks.MaxUnavailable, "max-unavailable", "1", "workers upgraded at once: a count (2) or a percentage of the workers (25%)")
	cmd.Flags().DurationVar(&g.opts.Tasks.DrainTimeout, "drain-timeout", 0, "how long one node's drain may take before the upgrade stops (default 2m)")
	return cmd
}
