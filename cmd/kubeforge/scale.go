package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/playbooks"
)

func newScaleCmd(g *globals, stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "scale",
		Short: "Add the inventory's hosts that are not nodes yet; existing nodes are not restarted",
		Long: "Add the inventory's hosts that are not nodes yet. Steps, in order:\n\n" +
			stepList(playbooks.Scale(&inventory.Inventory{})),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			build := playbooks.Scale
			if len(g.opts.Tasks.Remove) > 0 {
				inv, err := playbooks.Load(&g.opts)
				if err != nil {
					return err
				}
				if _, _, err := hostSelector(inv, g.opts.Tasks.Remove); err != nil {
					return fmt.Errorf("--remove: %w", err)
				}
				build = playbooks.Remove
			}
			res, err := playbooks.Run(cmd.Context(), &g.opts, build)
			if res != nil {
				finish(stdout, g, res)
			}
			return err
		},
	}
	changing(cmd, g)
	cmd.Flags().StringSliceVar(&g.opts.Tasks.Remove, "remove", nil, "remove these hosts: cordon, drain, delete the Node (and etcd member), reset")
	cmd.Flags().BoolVar(&g.opts.Tasks.Force, "force", false, "with --remove: delete the node even when the drain fails or the host is down")
	return cmd
}
