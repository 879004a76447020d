package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/kubeforge/kubeforge/playbooks"
	"github.com/kubeforge/kubeforge/tasks"
)

func newCertsCmd(g *globals, stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "certs", Short: "Generate, inspect and renew the cluster PKI (kubeadm layout)"}
	cmd.AddCommand(&cobra.Command{
		Use:   "generate",
		Short: "Make the CAs, keys and every leaf in <state dir>/pki, reusing what is valid",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := playbooks.Run(cmd.Context(), &g.opts, playbooks.Certs)
			if err == nil && res != nil {
				fmt.Fprintf(stdout, "PKI is in %s\n", res.Env.PKIDir())
			}
			return err
		},
	})
	var onHosts bool
	check := &cobra.Command{
		Use:   "check-expiration",
		Short: "Print every certificate's subject, expiry and residual time (locally, or read on the hosts)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if onHosts {
				res, err := playbooks.Run(cmd.Context(), &g.opts, playbooks.CheckNodeCerts)
				if res != nil {
					fmt.Fprintln(stdout)
					tasks.WriteCertTable(stdout, res.Env.NodeCertInfos())
				}
				return err
			}
			b, err := playbooks.LoadPKI(&g.opts)
			if err != nil {
				return err
			}
			tasks.WriteCertTable(stdout, b.Certificates())
			return nil
		},
	}
	check.Flags().BoolVar(&onHosts, "hosts", false, "read the certificates on every host over SSH")
	cmd.AddCommand(check)
	cmd.AddCommand(&cobra.Command{
		Use:   "renew NAME... | all",
		Short: "Re-issue leaf certificates in the state dir; `kubeforge up` then pushes them",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			changes, dir, err := playbooks.RenewCerts(&g.opts, args)
			if err != nil {
				return err
			}
			for _, c := range changes {
				fmt.Fprintln(stdout, c)
			}
			fmt.Fprintf(stdout, "Renewed in %s. Run `kubeforge up -i %s` to push them to the hosts.\n", dir, g.opts.Inventory)
			return nil
		},
	})
	return cmd
}

func newRenderCmd(g *globals, stdout io.Writer) *cobra.Command {
	var offline bool
	cmd := &cobra.Command{
		Use:   "render",
		Short: "Write every host's files under <state dir>/nodes/<host>/ (reads facts from the hosts, changes none)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			build := playbooks.Render
			if offline {
				build = playbooks.RenderOffline
			}
			res, err := playbooks.Run(cmd.Context(), &g.opts, build)
			if err == nil && res != nil {
				fmt.Fprintf(stdout, "Rendered every host's tree under %s/nodes/\n", res.Env.StateDir)
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&offline, "offline", false, "contact no host; assume cgroup v2 hosts")
	return cmd
}
