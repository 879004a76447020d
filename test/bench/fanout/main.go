// Command fanout is kubeforge's side of the fan-out benchmark (issue 7): through kubeforge's own runner,
// tasks and ssh package it does, on every host of an inventory, exactly what test/bench/ansible/fanout.yml
// makes Ansible do:
//
//  1. connect (host keys checked against the inventory's known_hosts; root or passwordless sudo checked),
//  2. gather facts (tasks.GatherFacts: OS, kernel, memory, swap, listening ports and more, one command),
//  3. upload a large binary and two small files (ssh.Client.Upload: one remote sha256 check for the three,
//     skipped when already there; atomic SFTP streaming otherwise),
//  4. run one command.
//
// It prints one JSON line (wall time, per-step wall times, per-host step times, files changed) and can
// write a CPU profile. It exits non-zero when any host fails or when -expect-changed does not match.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/peer"
	"github.com/kubeforge/kubeforge/playbooks"
	"github.com/kubeforge/kubeforge/ssh"
	"github.com/kubeforge/kubeforge/tasks"
)

// Report is the JSON line fanout prints.
type Report struct {
	Hosts       int                           `json:"hosts"`
	Concurrency int                           `json:"concurrency"`
	WallS       float64                       `json:"wall_s"`
	HashS       float64                       `json:"hash_s"` // hashing the local files once
	Steps       map[string]float64            `json:"steps"`  // step wall time, seconds
	HostSteps   map[string]map[string]float64 `json:"host_steps"`
	Changed     int                           `json:"changed"` // files written, all hosts
	Facts       map[string]string             `json:"facts"`   // one host's facts, to show they were read
	Fanout      int                           `json:"fanout"`
	Uploaded    int64                         `json:"uploaded_bytes"` // file bytes sent from here (kubeforge's count)
	Fetched     int64                         `json:"fetched_bytes"`  // file bytes hosts fetched from peers
	Fallbacks   int                           `json:"fallbacks"`
}

// recorder keeps step and per-host durations from the runner's events.
type recorder struct {
	mu    sync.Mutex
	steps map[string]float64
	hosts map[string]map[string]float64
}

func (r *recorder) Event(e playbooks.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch e.Type {
	case playbooks.EventStepEnd:
		r.steps[e.Step] = e.Duration.Seconds()
	case playbooks.EventHostEnd:
		if r.hosts[e.Step] == nil {
			r.hosts[e.Step] = map[string]float64{}
		}
		r.hosts[e.Step][e.Host] = e.Duration.Seconds()
	}
}

func main() {
	invPath := flag.String("i", "", "inventory file")
	srcDir := flag.String("src", "", "local directory with payload.bin, small1.conf, small2.conf")
	dest := flag.String("dest", "/opt/bench", "remote directory")
	conc := flag.Int("concurrency", 0, "hosts at once (0: the number of hosts)")
	command := flag.String("command", "uname -a", "the one command run on every host")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile here")
	expect := flag.Int("expect-changed", -1, "fail unless exactly this many files were written (-1: no check)")
	stateDir := flag.String("state-dir", "", "state dir (known_hosts it writes, logs); default: a temp dir")
	verbose := flag.Bool("v", false, "log at debug level to stderr")
	fanout := flag.Int("fanout", tasks.DefaultFanout, "hosts a peer feeds at once (0: every host from here), as kubeforge up --fanout")
	peerBinary := flag.String("peer-binary", "", "kubeforge-peer for this machine's architecture, as kubeforge embeds it (default: the hosts that serve run this program)")
	if len(os.Args) > 1 && os.Args[1] == "peer-serve" {
		// The hosts that serve their peers run this binary, as they run kubeforge's.
		if err := peer.Run(context.Background(), os.Stdin, os.Stdout, slog.New(slog.NewTextHandler(os.Stderr, nil))); err != nil {
			fmt.Fprintln(os.Stderr, "peer-serve:", err)
			os.Exit(1)
		}
		return
	}
	flag.Parse()
	if err := run(*invPath, *srcDir, *dest, *conc, *command, *cpuProfile, *expect, *stateDir, *verbose, *fanout, *peerBinary); err != nil {
		fmt.Fprintln(os.Stderr, "fanout:", err)
		os.Exit(1)
	}
}

func run(invPath, srcDir, dest string, conc int, command, cpuProfile string, expect int, stateDir string, verbose bool, fanout int, peerBinary string) error {
	if invPath == "" || srcDir == "" {
		return fmt.Errorf("usage: fanout -i INVENTORY -src DIR [-dest DIR] [-concurrency N] [-cpuprofile FILE]")
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return fmt.Errorf("create cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("start cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	start := time.Now()
	inv, err := inventory.Load(invPath)
	if err != nil {
		return err
	}
	if stateDir == "" {
		d, err := os.MkdirTemp("", "kubeforge-bench-")
		if err != nil {
			return fmt.Errorf("create state dir: %w", err)
		}
		defer os.RemoveAll(d)
		stateDir = d
	}
	if conc <= 0 {
		conc = len(inv.Hosts)
	}
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	// The local files are hashed once per run, whatever the number of hosts, as kubeforge's artifacts task does.
	hstart := time.Now()
	var files []ssh.File
	for _, f := range []struct {
		name string
		mode os.FileMode
	}{{"payload.bin", 0o755}, {"small1.conf", 0o644}, {"small2.conf", 0o600}} {
		src := filepath.Join(srcDir, f.name)
		sum, err := hashFile(src)
		if err != nil {
			return err
		}
		files = append(files, ssh.File{Path: dest + "/" + f.name, Mode: f.mode, Source: src, SHA256: sum})
	}
	hashS := time.Since(hstart).Seconds()

	opts := tasks.Options{Fanout: fanout}
	if peerBinary != "" {
		b, err := os.ReadFile(peerBinary)
		if err != nil {
			return err
		}
		opts.PeerServer = func(goarch string) ([]byte, bool) { return b, goarch == runtime.GOARCH }
	}
	env := tasks.NewEnv(inv, stateDir, log, opts)
	defer env.Close()
	// The upload is kubeforge's artifacts step: host to host where it can.
	push := tasks.PeerPush{Files: func(*tasks.Env, *tasks.Host) ([]ssh.File, error) { return files, nil }}
	runCommand := func(ctx context.Context, env *tasks.Env, h *tasks.Host) error {
		_, err := h.Client.Run(ctx, command)
		return err
	}
	pb := playbooks.Playbook{Name: "bench-fanout", Steps: []playbooks.Step{
		{Name: "connect", Hosts: inventory.SelectAll, Run: tasks.Connect},
		{Name: "facts", Hosts: inventory.SelectAll, Run: tasks.GatherFacts},
		{Name: "upload", Hosts: inventory.SelectAll, Run: push.Run, Batches: push.Batches,
			BeforeBatch: tasks.StartPeerServers, After: tasks.StopPeerServers},
		{Name: "command", Hosts: inventory.SelectAll, Run: runCommand},
	}}
	rec := &recorder{steps: map[string]float64{}, hosts: map[string]map[string]float64{}}
	r := &playbooks.Runner{Concurrency: conc, StepTimeout: 10 * time.Minute, Events: rec}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	if err := r.Run(ctx, env, pb); err != nil {
		return err
	}
	changed := 0
	for _, h := range env.Hosts(inv.Hosts) {
		for _, c := range h.Changes() {
			if c.Kind == tasks.ChangeFile && strings.HasPrefix(c.What, dest+"/") {
				changed++
			}
		}
	}
	dist := env.Distribution()
	rep := Report{
		Hosts: len(inv.Hosts), Concurrency: conc, WallS: time.Since(start).Seconds(), HashS: hashS,
		Steps: rec.steps, HostSteps: rec.hosts, Changed: changed, Facts: someFacts(env, inv),
		Fanout: fanout, Uploaded: dist.UploadedBytes, Fetched: dist.FetchedBytes, Fallbacks: dist.Fallbacks,
	}
	line, err := json.Marshal(rep)
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	fmt.Println(string(line))
	if expect >= 0 && changed != expect {
		return fmt.Errorf("%d files written, expected %d", changed, expect)
	}
	return nil
}

// someFacts shows the first host's facts that the Ansible playbook also gathers.
func someFacts(env *tasks.Env, inv *inventory.Inventory) map[string]string {
	if len(inv.Hosts) == 0 {
		return nil
	}
	f := env.Host(inv.Hosts[0]).Facts
	if f == nil {
		return nil
	}
	var ports []int
	for p := range f.Listening {
		ports = append(ports, p)
	}
	sort.Ints(ports)
	return map[string]string{
		"os": f.OSName, "kernel": f.Kernel, "memory_mb": fmt.Sprint(f.MemoryMB),
		"swap": fmt.Sprint(f.SwapOn), "listening": fmt.Sprint(ports),
	}
}

func hashFile(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", fmt.Errorf("hash %s: %w", p, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
