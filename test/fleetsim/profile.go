package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/kubeforge/kubeforge/playbooks"
	"github.com/kubeforge/kubeforge/tasks"
)

// profileMain is `fleetsim profile -i INVENTORY`: kubeforge's preflight playbook run in this process,
// as cmd/kubeforge runs it (playbooks.Run with playbooks.Preflight, the command line's default
// concurrency), with a CPU profile and heap profiles, because kubeforge has no profiling hook of its
// own. Run it against `fleetsim serve` in another process, so that the profiles hold kubeforge only.
func profileMain(args []string) error {
	fs := flag.NewFlagSet("fleetsim profile", flag.ContinueOnError)
	inv := fs.String("i", "", "inventory (from fleetsim serve)")
	conc := fs.Int("concurrency", 20, "kubeforge's --concurrency")
	cpu := fs.String("cpuprofile", "", "write a CPU profile here")
	heap := fs.String("heapprofile", "", "write a heap profile here, at the peak of the heap in use")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *inv == "" {
		return fmt.Errorf("profile needs -i INVENTORY")
	}
	if *cpu != "" {
		f, err := os.Create(*cpu)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	opts := &playbooks.Options{Inventory: *inv, Concurrency: *conc, Output: "json", Stdout: io.Discard, Stderr: os.Stderr,
		Tasks: tasks.Options{IgnorePreflight: map[string]bool{}}}
	start := time.Now()
	if *heap != "" {
		defer sampleHeap(*heap)()
	}
	_, err := playbooks.Run(context.Background(), opts, playbooks.Preflight)
	fmt.Fprintf(os.Stderr, "fleetsim profile: preflight in-process: %s, err %v\n", time.Since(start).Round(time.Millisecond), err)
	return err
}

// sampleHeap writes a heap profile to path whenever the heap in use grows 10% past its last peak
// (checked every 50 ms), so that path ends up holding the profile near the peak.
func sampleHeap(path string) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		var peak uint64
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			if m.HeapInuse <= peak*11/10 {
				continue
			}
			peak = m.HeapInuse
			if f, err := os.Create(path); err == nil {
				pprof.Lookup("heap").WriteTo(f, 0)
				f.Close()
				fmt.Fprintf(os.Stderr, "fleetsim profile: heap in use %d MB, %d goroutines\n", peak>>20, runtime.NumGoroutine())
			}
		}
	}()
	return func() { close(done); <-finished }
}
