package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/playbooks"
)

func newSecretsCmd(g *globals, stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "secrets", Short: "Encryption of Secrets at rest (docs/security.md)"}
	rotate := &cobra.Command{
		Use:   "rotate-key",
		Short: "Move every encrypted object to a new key, one control plane at a time; resumes after an interruption",
		Long: "Move every encrypted object (cluster.encryption.resources) to a new key of cluster.encryption.provider, as the\n" +
			"Kubernetes documentation's rotation procedure says, each phase on every control plane before the next.\n" +
			"A run stopped at any point resumes where it stopped. Steps, in order:\n\n" +
			stepList(playbooks.RotateKey(&inventory.Inventory{})),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := playbooks.Run(cmd.Context(), &g.opts, playbooks.RotateKey)
			if res == nil {
				return err
			}
			finish(stdout, g, res)
			if err != nil || g.opts.DryRun {
				return err
			}
			if keys := res.Env.PKI.EncryptionKeys(); len(keys) > 0 {
				fmt.Fprintf(stdout, "\nEvery encrypted object is written with %s; the old keys are gone from the control planes.\n", keys[0])
			}
			return nil
		},
	}
	changing(rotate, g)
	cmd.AddCommand(rotate)
	return cmd
}
