package main

import (
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
			res, err := playbooks.Run(cmd.Context(), &g.opts, playbooks.Scale)
			if res != nil {
				finish(stdout, g, res)
			}
			return err
		},
	}
	changing(cmd, g)
	return cmd
}
