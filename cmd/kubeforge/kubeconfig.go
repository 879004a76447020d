package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/kubeforge/kubeforge/playbooks"
	"github.com/kubeforge/kubeforge/tasks"
)

func newKubeconfigCmd(g *globals, stdout, stderr io.Writer) *cobra.Command {
	var noProbe bool
	cmd := &cobra.Command{
		Use:   "kubeconfig",
		Short: "Print the cluster's admin kubeconfig, naming an API server that answers now",
		Long: `Print the cluster's admin kubeconfig (from the state dir). Its server is one that answers /readyz from
this workstation now: the one the state dir's kubeconfig names while it answers, else the controlPlaneEndpoint,
else the first control plane that answers. Which one, and why, goes to stderr; the state dir is not changed.
It fails when none answers (--no-probe prints the state dir's kubeconfig as it is). docs/ha.md has the ways
to a stable endpoint.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			inv, err := playbooks.Load(&g.opts)
			if err != nil {
				return err
			}
			if noProbe {
				b, err := os.ReadFile(tasks.AdminKubeconfigPath(g.opts.StateDir))
				if err != nil {
					return fmt.Errorf("read admin kubeconfig: %w (run `kubeforge up` first)", err)
				}
				_, err = stdout.Write(b)
				return err
			}
			b, choice, err := tasks.LiveAdminKubeconfig(cmd.Context(), inv, g.opts.StateDir, g.probeAPI)
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%w (run `kubeforge up` first)", err)
			}
			if err != nil {
				return fmt.Errorf("%w\nIf this workstation cannot reach port 6443 of the control planes, tunnel to one "+
					"(ssh -L 6443:<its address>:6443 <host>) and name server https://127.0.0.1:6443 with tls-server-name <its address>, "+
					"or set cluster.controlPlaneEndpoint (docs/ha.md). --no-probe prints the kubeconfig as it is", err)
			}
			if choice.Moved {
				fmt.Fprintf(stderr, "kubeconfig: server %s, not %s: %s (the state dir's copy is unchanged; the next up or scale moves it)\n", choice.APIServer, choice.Was, choice.Reason)
			} else {
				fmt.Fprintf(stderr, "kubeconfig: server %s: %s\n", choice.APIServer, choice.Reason)
			}
			_, err = stdout.Write(b)
			return err
		},
	}
	cmd.Flags().BoolVar(&noProbe, "no-probe", false, "print the state dir's admin kubeconfig as it is, without asking any API server")
	return cmd
}
