package playbooks

import (
	"context"
	"encoding/json"
	"fmt"
	"golang.org/x/term"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/kubeforge/kubeforge/internal/atomicfile"
	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/tasks"
)

// Options is what the command line hands to Run.
type Options struct {
	Inventory   string
	StateDir    string // default <inventory dir>/<cluster name>.kubeforge
	Concurrency int
	Verbose     bool
	Output      string // text or json
	DryRun      bool
	Offline     bool // with DryRun: contact no host, print the steps x hosts outline
	Skip, Only  []string
	Timeout     time.Duration // the whole run
	Tasks       tasks.Options
	Stdout      io.Writer
	Stderr      io.Writer
	// Via, when set, makes this run one hop of a chained upgrade: the
	// inventory's version and artifacts are replaced by the intermediate
	// build's, and the upgrade moves the control planes only.
	Via *Build
	// OnEnv, if set, is called with the run's environment before the first
	// step (the upgrade command hooks its graceful stop to it).
	OnEnv func(*tasks.Env)
	// AskPassword reads a secret from the user (the terminal); nil: prompts fail.
	AskPassword func(prompt string) (string, error)
}

// Build is a Kubernetes build on the workstation: its version and the
// artifacts directory that holds it.
type Build struct{ Version, Artifacts string }

// ReadBuild reads an artifacts directory's VERSION file.
func ReadBuild(dir string) (Build, error) {
	b, err := os.ReadFile(filepath.Join(dir, "VERSION"))
	if err != nil {
		return Build{}, fmt.Errorf("read the build's version: %w (an artifacts directory holds a VERSION file)", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Build{}, err
	}
	return Build{Version: strings.TrimSpace(string(b)), Artifacts: abs}, nil
}

// RunResult is what a run leaves for the command line to print.
type RunResult struct {
	Env     *tasks.Env
	Summary *Summary
	Err     error // what Run returned
}

// Load reads and validates the inventory named in opts and resolves the state dir.
func Load(opts *Options) (*inventory.Inventory, error) {
	if opts.Inventory == "" {
		return nil, fmt.Errorf("no inventory: pass -i FILE (see examples/cluster.yaml)")
	}
	inv, err := inventory.Load(opts.Inventory)
	if err != nil {
		return nil, err
	}
	if v := opts.Via; v != nil {
		inv.Cluster.KubernetesVersion, inv.Cluster.Artifacts = v.Version, v.Artifacts
		if err := inv.Validate(); err != nil {
			return nil, fmt.Errorf("the intermediate build %s: %w", v.Artifacts, err)
		}
		opts.Tasks.UpgradeHop = true
	}
	if opts.StateDir == "" {
		opts.StateDir = inv.StateDir()
	}
	return inv, nil
}

// Run loads the inventory, builds the playbook with build, and runs it. With
// DryRun it prints the plan and touches no host.
func Run(ctx context.Context, opts *Options, build func(*inventory.Inventory) Playbook) (*RunResult, error) {
	if opts.Stdout == nil {
		opts.Stdout = os.Stdout
	}
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	inv, err := Load(opts)
	if err != nil {
		return nil, err
	}
	for _, w := range inv.Warnings {
		fmt.Fprintln(opts.Stderr, w)
	}
	pb, err := build(inv).Filter(opts.Skip, opts.Only)
	if err != nil {
		return nil, err
	}
	if opts.DryRun && (opts.Offline || !pb.Observed()) {
		fmt.Fprint(opts.Stdout, pb.Plan(inv))
		fmt.Fprintln(opts.Stdout, "Dry run: no host was contacted and nothing was changed.")
		return nil, nil
	}
	if opts.DryRun {
		// Connect, read and plan; stop before the first step that changes anything.
		pb = pb.readOnly()
		opts.Tasks.DryRun = true
	}
	if err := askPasswords(inv, opts); err != nil {
		return nil, err
	}
	if err := prepareStateDir(opts.StateDir); err != nil {
		return nil, err
	}
	lock, err := lockStateDir(opts.StateDir, inv)
	if err != nil {
		return nil, err
	}
	defer lock.Release()
	if err := os.MkdirAll(filepath.Join(opts.StateDir, "logs"), 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	logs := newHostLogs(filepath.Join(opts.StateDir, "logs"), opts.Verbose, opts.Stderr)
	defer logs.Close()
	opts.Tasks.Concurrency = opts.Concurrency // the bound of the fan-outs inside a step too
	env := tasks.NewEnv(inv, opts.StateDir, logs.main, opts.Tasks)
	env.Logs = logs.host
	defer env.Close()
	if !pb.AllHosts {
		env.Inv = inv.Active()
		env.Leaving = env.Hosts(inv.Leaving())
	}

	if opts.OnEnv != nil {
		opts.OnEnv(env)
	}
	sum := &Summary{}
	var sink EventSink = &TextSink{W: opts.Stdout, Verbose: opts.Verbose}
	if f, ok := opts.Stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) && !opts.Verbose {
		sink = &TTYSink{TextSink: TextSink{W: opts.Stdout}}
	}
	if opts.Output == "json" {
		sink = &JSONSink{W: opts.Stdout}
	}
	r := &Runner{Concurrency: opts.Concurrency, Events: Multi{sink, sum, logSink{logs.main}}}
	if opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.Timeout)
		defer cancel()
	}
	err = r.Run(ctx, env, pb)
	// What was planned and what was done, for people and for the plan-accuracy tests.
	if env.Plan != nil {
		if b, jerr := json.MarshalIndent(env.Plan, "", "  "); jerr == nil {
			_ = atomicfile.Write(filepath.Join(opts.StateDir, "logs", "plan.json"), b, 0o600)
		}
	}
	if !opts.DryRun {
		if b, jerr := json.MarshalIndent(env.Changes(), "", "  "); jerr == nil {
			_ = atomicfile.Write(filepath.Join(opts.StateDir, "logs", "changes.json"), b, 0o600)
		}
	}
	return &RunResult{Env: env, Summary: sum, Err: err}, err
}

// logSink writes runner events into the run log.
type logSink struct{ log *slog.Logger }

func (l logSink) Event(e Event) {
	attrs := []any{"type", e.Type, "step", e.Step, "host", e.Host, "result", e.Result, "duration", e.Duration}
	if e.Err != nil {
		attrs = append(attrs, "err", e.Err)
	}
	l.log.Info("event", attrs...)
}

// hostLogs opens one log file per host under the state dir, plus run.log.
type hostLogs struct {
	dir     string
	verbose bool
	stderr  io.Writer
	main    *slog.Logger

	mu    sync.Mutex
	files []*os.File
	hosts map[string]*slog.Logger
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]`)

func newHostLogs(dir string, verbose bool, stderr io.Writer) *hostLogs {
	l := &hostLogs{dir: dir, verbose: verbose, stderr: stderr, hosts: map[string]*slog.Logger{}}
	l.main = l.open("run")
	return l
}

func (l *hostLogs) open(name string) *slog.Logger {
	var hs []slog.Handler
	f, err := os.OpenFile(filepath.Join(l.dir, unsafeName.ReplaceAllString(name, "_")+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err == nil {
		l.files = append(l.files, f)
		hs = append(hs, slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if l.verbose {
		hs = append(hs, slog.NewTextHandler(l.stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewMultiHandler(hs...))
}

func (l *hostLogs) host(name string) *slog.Logger {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lg, ok := l.hosts[name]; ok {
		return lg
	}
	lg := l.open(name).With("host", name)
	l.hosts[name] = lg
	return lg
}

func (l *hostLogs) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, f := range l.files {
		f.Close()
	}
}

// askPasswords asks once for each password the inventory wants prompted.
func askPasswords(inv *inventory.Inventory, opts *Options) error {
	prompts := tasks.PasswordPrompts(inv)
	if len(prompts) == 0 {
		return nil
	}
	if opts.AskPassword == nil {
		return fmt.Errorf("the inventory asks for an SSH password prompt, but there is no terminal; use passwordEnv")
	}
	if opts.Tasks.Passwords == nil {
		opts.Tasks.Passwords = map[string]string{}
	}
	for _, k := range prompts {
		if _, ok := opts.Tasks.Passwords[k]; ok {
			continue
		}
		pw, err := opts.AskPassword("SSH password for " + strings.TrimPrefix(k, "prompt:") + ": ")
		if err != nil {
			return fmt.Errorf("read password: %w", err)
		}
		opts.Tasks.Passwords[k] = pw
	}
	return nil
}
