package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// serveMain is `fleetsim serve`.
func serveMain(args []string) (int, error) {
	fs := flag.NewFlagSet("fleetsim serve", flag.ContinueOnError)
	n := fs.Int("n", 100, "number of endpoints")
	cps := fs.Int("control-planes", 3, "how many of them are control planes (the first ones)")
	base := fs.String("base", "127.1.0.1", "address of the first endpoint (127.0.0.0/8 is all on lo)")
	port := fs.Int("port", 2222, "port of every endpoint (0: a free port each)")
	dir := fs.String("dir", "", "where to write id_ed25519, known_hosts, inventory.yaml (default: a temp dir)")
	key := fs.String("key", "", "client private key to accept (default: DIR/id_ed25519, made if absent)")
	user := fs.String("user", "root", "SSH user (root, or a sudo user)")
	recPath := fs.String("recording", defaultRecording(), "recording to answer from")
	artifacts := fs.String("artifacts", "", "artifacts directory for the inventory (default: a stub in DIR/artifacts)")
	keep := fs.Bool("keep-uploads", false, "keep SFTP uploads in memory (default: count and discard them)")
	latency := fs.Bool("latency", false, "answer each command after the time it took on the recorded host")
	refuse := fs.String("refuse", "", "comma-separated endpoint numbers (1-based) that refuse every connection")
	statsPath := fs.String("stats", "", "write the JSON summary here (default: stdout)")
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	rec, err := loadRecording(*recPath)
	if err != nil {
		return 1, err
	}
	first, err := netip.ParseAddr(*base)
	if err != nil {
		return 2, fmt.Errorf("-base: %w", err)
	}
	refused, err := parseEndpoints(*refuse)
	if err != nil {
		return 2, err
	}
	if *dir == "" {
		if *dir, err = os.MkdirTemp("", "fleetsim-"); err != nil {
			return 1, err
		}
	}
	if *dir, err = filepath.Abs(*dir); err != nil {
		return 1, err
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return 1, err
	}
	if *key == "" {
		*key = filepath.Join(*dir, "id_ed25519")
	}
	// Each endpoint holds a listener and a connection; the process running kubeforge beside it as many.
	if err := raiseNoFile(uint64(4**n + 256)); err != nil {
		return 1, err
	}
	signer, err := clientKey(*key)
	if err != nil {
		return 1, err
	}
	f, err := NewFleet(Options{N: *n, ControlPlanes: *cps, Base: first, Port: *port, User: *user, ClientKey: signer.PublicKey(),
		Recording: rec, KeepUploads: *keep, Latency: *latency, Refuse: refused})
	if err != nil {
		return 1, err
	}
	defer f.Close()
	if err := f.writeFiles(*dir, *key, *artifacts); err != nil {
		return 1, err
	}
	f.Serve()
	fmt.Fprintf(os.Stderr, "fleetsim: SIMULATED fleet of %d endpoints (%s ... %s) from %s; inventory %s\n", *n,
		f.Endpoints[0].IP, f.Endpoints[*n-1].IP, *recPath, filepath.Join(*dir, "inventory.yaml"))

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGUSR1)
	done := make(chan int, 1)
	if cmdArgs := fs.Args(); len(cmdArgs) > 0 {
		cmd := exec.Command(cmdArgs[0], cmdArgs[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.Env = append(os.Environ(), "FLEETSIM_DIR="+*dir)
		if err := cmd.Start(); err != nil {
			return 1, fmt.Errorf("start %s: %w", cmdArgs[0], err)
		}
		go func() {
			err := cmd.Wait()
			var ee *exec.ExitError
			switch {
			case err == nil:
				done <- 0
			case errors.As(err, &ee):
				done <- ee.ExitCode()
			default:
				done <- 1
			}
		}()
	}
	code := 0
wait:
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGUSR1 {
				if err := writeSummary(f.Summary(), *statsPath); err != nil {
					fmt.Fprintln(os.Stderr, "fleetsim:", err)
				}
				continue
			}
			break wait
		case code = <-done:
			break wait
		}
	}
	f.Close()
	return code, writeSummary(f.Summary(), *statsPath)
}

// writeFiles writes the key's .pub, known_hosts, the inventory and (without artifacts) the stub artifacts.
func (f *Fleet) writeFiles(dir, key, artifacts string) error {
	f.dir = dir
	if artifacts == "" {
		artifacts = filepath.Join(dir, "artifacts")
		if err := writeStubArtifacts(artifacts, f.opts.Recording); err != nil {
			return err
		}
	}
	kh := filepath.Join(dir, "known_hosts")
	if err := f.WriteKnownHosts(kh); err != nil {
		return err
	}
	return f.WriteInventory(filepath.Join(dir, "inventory.yaml"), key, kh, artifacts)
}

func writeSummary(s Summary, path string) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	var w io.Writer = os.Stdout
	if path != "" {
		file, err := os.Create(path)
		if err != nil {
			return fmt.Errorf("write summary: %w", err)
		}
		defer file.Close()
		w = file
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// parseEndpoints reads "3,17" (1-based) into 0-based indexes.
func parseEndpoints(s string) (map[int]bool, error) {
	out := map[int]bool{}
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		i, err := strconv.Atoi(f)
		if err != nil || i < 1 {
			return nil, fmt.Errorf("endpoint %q: want a number from 1", f)
		}
		out[i-1] = true
	}
	return out, nil
}

// defaultRecording is testdata/recording.json next to this source (go run, go test), else in the
// working directory.
func defaultRecording() string {
	p := filepath.Join("test", "fleetsim", "testdata", "recording.json")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return filepath.Join("testdata", "recording.json")
}

// raiseNoFile raises the soft RLIMIT_NOFILE to at least want (Go raises it to the hard limit at start
// already; this says so clearly when the hard limit is too low).
func raiseNoFile(want uint64) error {
	var l unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &l); err != nil {
		return fmt.Errorf("read RLIMIT_NOFILE: %w", err)
	}
	if l.Cur >= want {
		return nil
	}
	if l.Max < want {
		return fmt.Errorf("RLIMIT_NOFILE hard limit %d is below the %d file descriptors needed (ulimit -Hn)", l.Max, want)
	}
	l.Cur = want
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &l); err != nil {
		return fmt.Errorf("raise RLIMIT_NOFILE to %d: %w", want, err)
	}
	return nil
}

func sinceS(t time.Time) float64 { return time.Since(t).Seconds() }

// cpuSeconds is this process's user+system CPU time so far.
func cpuSeconds() float64 {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
