// Command kubeforge installs and converges Kubernetes clusters over SSH from one
// workstation. This package is the command line only: flags, prompts, printing
// and exit codes; the work is in packages playbooks and tasks.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(execute(ctx, os.Args[1:], os.Stdout, os.Stderr))
}
