package main

import (
	"fmt"
	"io"
	"slices"

	k8sversion "k8s.io/apimachinery/pkg/util/version"

	"github.com/spf13/cobra"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/playbooks"
	"github.com/kubeforge/kubeforge/tasks"
)

func newUpgradeCmd(g *globals, stdout io.Writer) *cobra.Command {
	var via []string
	cmd := &cobra.Command{
		Use:   "upgrade",
		Short: "Upgrade the cluster to the inventory's kubernetesVersion, one node at a time, workloads kept running",
		Long: "Upgrade the cluster to the inventory's kubernetesVersion (set it and cluster.artifacts to the new build first).\n" +
			"Control planes move one minor at a time (--via gives the builds between), never down. An etcd snapshot is taken first; control planes go one at a time, then\n" +
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
			hops, err := viaBuilds(via)
			if err != nil {
				return err
			}
			for _, b := range hops {
				if err := upgradeHop(cmd, g, stdout, b); err != nil {
					return err
				}
			}
			if g.opts.DryRun && len(hops) > 0 {
				fmt.Fprintln(stdout, "\nThen the upgrade to the inventory's version: planned when the control planes run the last intermediate version.")
				return nil
			}
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
	cmd.Flags().StringArrayVar(&via, "via", nil, "artifacts directory of an intermediate minor (repeat for each): the control planes walk each, then the last step moves every node to the inventory's version")
	return cmd
}

// viaBuilds reads the --via artifacts directories, in version order; two
// builds of one minor are refused.
func viaBuilds(dirs []string) ([]playbooks.Build, error) {
	var out []playbooks.Build
	for _, d := range dirs {
		b, err := playbooks.ReadBuild(d)
		if err != nil {
			return nil, fmt.Errorf("--via %s: %w", d, err)
		}
		if _, err := k8sversion.ParseSemantic(b.Version); err != nil {
			return nil, fmt.Errorf("--via %s: its VERSION %q: %w", d, b.Version, err)
		}
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b playbooks.Build) int {
		c, _ := k8sversion.MustParseSemantic(a.Version).Compare(b.Version)
		return c
	})
	for i := 1; i < len(out); i++ {
		if k8sversion.MustParseSemantic(out[i].Version).Minor() == k8sversion.MustParseSemantic(out[i-1].Version).Minor() {
			return nil, fmt.Errorf("--via names two builds of one minor: %s and %s", out[i-1].Artifacts, out[i].Artifacts)
		}
	}
	return out, nil
}

// upgradeHop runs one hop of a chained upgrade: the control planes to b.
func upgradeHop(cmd *cobra.Command, g *globals, stdout io.Writer, b playbooks.Build) error {
	opts := g.opts
	opts.Via = &b
	res, err := playbooks.Run(cmd.Context(), &opts, playbooks.Upgrade)
	if res == nil {
		return err
	}
	u := res.Env.Upgrade
	if g.opts.DryRun {
		if u != nil {
			fmt.Fprintf(stdout, "\nIntermediate step: the control planes to %s\n", b.Version)
			u.WriteUpgradePlan(stdout)
		}
		return err
	}
	finish(stdout, g, res)
	if err == nil && u != nil {
		if u.Empty() {
			fmt.Fprintf(stdout, "\nThe control planes run %s or newer: nothing to do at this intermediate step.\n", b.Version)
		} else {
			fmt.Fprintf(stdout, "\nThe control planes run %s (an intermediate step).\n", b.Version)
		}
	}
	return err
}
