package main

import (
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubeforge/kubeforge/apiproxy"
)

// newAPIProxyCmd is the node-local API proxy that kubeforge installs on the
// workers of a cluster with several control planes and no
// controlPlaneEndpoint (the kubeforge-apiproxy unit runs it); see docs/ha.md.
func newAPIProxyCmd() *cobra.Command {
	var cfg apiproxy.Config
	cmd := &cobra.Command{
		Use:    "apiproxy",
		Short:  "Run the node-local API server proxy (started on the nodes by the kubeforge-apiproxy unit)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
			return apiproxy.New(cfg).Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:6443", "address to listen on")
	f.StringVar(&cfg.Upstreams, "upstreams", "/etc/kubeforge/apiproxy-upstreams", "file listing the API servers, one host:port per line")
	f.StringVar(&cfg.CAFile, "ca", "/etc/kubernetes/pki/ca.crt", "the cluster CA, to verify the API servers' health checks")
	f.DurationVar(&cfg.Interval, "interval", 2*time.Second, "time between health checks")
	f.DurationVar(&cfg.Timeout, "timeout", 2*time.Second, "timeout of a health check and of a dial")
	return cmd
}
