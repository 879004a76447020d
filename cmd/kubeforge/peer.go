package main

import (
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/kubeforge/kubeforge/peer"
)

// newPeerServeCmd is the artifact server the artifacts step runs, over SSH,
// on hosts that hold verified copies, for the duration of the step: its
// configuration (one-time secret, address, files by digest) comes on stdin
// and it exits when stdin closes; see docs/artifacts.md.
func newPeerServeCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "peer-serve",
		Short:  "Serve verified artifacts to other hosts for one run (started over SSH by the artifacts step)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return peer.Run(cmd.Context(), os.Stdin, os.Stdout, slog.New(slog.NewTextHandler(os.Stderr, nil)))
		},
	}
}
