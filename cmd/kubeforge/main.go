// Command kubeforge installs and converges Kubernetes clusters over SSH from one
// workstation. This package is the command line only: flags, prompts, printing
// and exit codes; the work is in packages playbooks and tasks.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
)

// gracefulStop, when a command sets it, is what the first Ctrl-C (or SIGTERM)
// does: ask the run to stop at its next safe point. The second one cancels.
var gracefulStop atomic.Pointer[func()]

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		first := true
		for range sigs {
			if f := gracefulStop.Load(); f != nil && first {
				first = false
				(*f)()
				fmt.Fprintln(os.Stderr, "\nstopping at the next safe point (the node under way finishes); press Ctrl-C again to stop now")
				continue
			}
			cancel()
			return
		}
	}()
	code := execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	cancel()
	os.Exit(code)
}
