// Command kubeforge-peer is the artifact server the artifacts step runs on
// the hosts that feed their peers (`kubeforge-peer peer-serve`): the peer
// package alone, a few MB, so that it costs nothing to send. `make build`
// embeds it in kubeforge for linux/amd64 and linux/arm64; a kubeforge built
// without it sends itself instead (docs/artifacts.md).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/kubeforge/kubeforge/peer"
)

func main() {
	if len(os.Args) != 2 || os.Args[1] != "peer-serve" {
		fmt.Fprintln(os.Stderr, "usage: kubeforge-peer peer-serve  (configuration on stdin; see docs/artifacts.md)")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := peer.Run(ctx, os.Stdin, os.Stdout, slog.New(slog.NewTextHandler(os.Stderr, nil))); err != nil {
		fmt.Fprintln(os.Stderr, "peer-serve:", err)
		os.Exit(1)
	}
}
