package playbooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubeforge/kubeforge/internal/statedir"
	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/tasks"
)

// writeInventory writes a valid two-host inventory (unroutable TEST-NET
// addresses) in a new directory and returns its path.
func writeInventory(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cluster.yaml")
	doc := `apiVersion: kubeforge.io/v1alpha1
kind: Cluster
cluster:
  name: locktest
hosts:
  - name: cp1
    address: 192.0.2.1
    roles: [control-plane]
  - name: w1
    address: 192.0.2.2
    roles: [worker]
`
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func testOptions(t *testing.T) *Options {
	t.Helper()
	return &Options{Inventory: writeInventory(t), StateDir: filepath.Join(t.TempDir(), "state"), Stdout: io.Discard, Stderr: io.Discard}
}

// localPlaybook is one local step that records that it ran and whether the
// state dir was locked while it did.
func localPlaybook(ran, lockedDuring *bool) func(*inventory.Inventory) Playbook {
	return func(*inventory.Inventory) Playbook {
		return Playbook{Name: "p", Steps: []Step{{Name: "s", Local: func(_ context.Context, env *tasks.Env) error {
			*ran = true
			l, err := statedir.Acquire(env.StateDir)
			var busy *statedir.BusyError
			*lockedDuring = errors.As(err, &busy)
			l.Release()
			return nil
		}}}}
	}
}

// TestCommandsThatWriteTheStateDirFailWhileAnotherRunHoldsIt: with the lock
// held, every writer fails at once with a *statedir.BusyError and changes
// nothing; a dry run, which only reads, still works.
func TestCommandsThatWriteTheStateDirFailWhileAnotherRunHoldsIt(t *testing.T) {
	tests := []struct {
		name     string
		run      func(opts *Options) error
		wantBusy bool
	}{
		{name: "run", wantBusy: true, run: func(opts *Options) error {
			var ran, locked bool
			_, err := Run(context.Background(), opts, localPlaybook(&ran, &locked))
			if ran {
				t.Error("the playbook ran without the lock")
			}
			return err
		}},
		{name: "dry run", wantBusy: false, run: func(opts *Options) error {
			var ran, locked bool
			opts.DryRun = true
			_, err := Run(context.Background(), opts, localPlaybook(&ran, &locked))
			return err
		}},
		{name: "certs renew", wantBusy: true, run: func(opts *Options) error {
			_, _, err := RenewCerts(opts, []string{"all"})
			return err
		}},
		{name: "certs check-expiration", wantBusy: true, run: func(opts *Options) error {
			_, err := LoadPKI(opts)
			return err
		}},
		{name: "reset --purge", wantBusy: true, run: func(opts *Options) error {
			inv, err := Load(opts)
			if err != nil {
				return err
			}
			return PurgeStateDir(opts, inv)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := testOptions(t)
			// A state dir with a PKI, as `certs generate` leaves it.
			var ran, locked bool
			if _, err := Run(context.Background(), opts, localPlaybook(&ran, &locked)); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(opts.StateDir, "pki"), 0o700); err != nil {
				t.Fatal(err)
			}
			held, err := statedir.Acquire(opts.StateDir)
			if err != nil {
				t.Fatal(err)
			}
			defer held.Release()
			err = tt.run(opts)
			var busy *statedir.BusyError
			if got := errors.As(err, &busy); got != tt.wantBusy {
				t.Fatalf("error %v; want busy %v", err, tt.wantBusy)
			}
			if !tt.wantBusy && err != nil {
				t.Fatalf("error %v", err)
			}
			if _, err := os.Stat(opts.StateDir); err != nil {
				t.Errorf("the state dir is gone: %v", err)
			}
		})
	}
}

// TestRunHoldsTheLockUntilItEnds: during a run the state dir is locked (and
// marked as kubeforge's), a stale lock file does not block, and after the run
// the next one gets the lock.
func TestRunHoldsTheLockUntilItEnds(t *testing.T) {
	opts := testOptions(t)
	if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	stale := "pid 999999\nstarted 2020-01-02T03:04:05Z\n"
	if err := os.WriteFile(filepath.Join(opts.StateDir, statedir.LockName), []byte(stale), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		var ran, locked bool
		if _, err := Run(context.Background(), opts, localPlaybook(&ran, &locked)); err != nil {
			t.Fatalf("run %d: %v", i+1, err)
		}
		if !ran || !locked {
			t.Errorf("run %d: ran %v, state dir locked during the run %v; want both", i+1, ran, locked)
		}
	}
	if _, err := os.Stat(filepath.Join(opts.StateDir, statedir.MarkerName)); err != nil {
		t.Errorf("no marker: %v", err)
	}
}

func TestBusyRunSaysWhoHoldsTheStateDir(t *testing.T) {
	opts := testOptions(t)
	if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	held, err := statedir.Acquire(opts.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	var stdout bytes.Buffer
	opts.Stdout = &stdout
	var ran, locked bool
	_, err = Run(context.Background(), opts, localPlaybook(&ran, &locked))
	want := "state dir " + opts.StateDir + " is in use by another kubeforge run (pid "
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v; want %q", err, want)
	}
	if stdout.Len() > 0 {
		t.Errorf("a busy run printed progress: %q", stdout.String())
	}
}

// TestRunChmodsOnlyItsOwnStateDir: a run makes private (0700) a state dir
// it creates or one that is kubeforge's; any other directory keeps its mode
// (a sticky /tmp-like one too) and is refused unless it is empty and already
// private to this user.
func TestRunChmodsOnlyItsOwnStateDir(t *testing.T) {
	tests := []struct {
		name     string
		prepare  func(t *testing.T, dir string) // nil: the dir does not exist
		wantErr  string                         // "" runs
		wantMode os.FileMode
	}{
		{name: "a new directory", wantMode: 0o700},
		{name: "a kubeforge state dir", wantMode: 0o700, prepare: func(t *testing.T, dir string) {
			mkdirMode(t, dir, 0o755)
			mustWrite(t, filepath.Join(dir, statedir.MarkerName), "")
		}},
		{name: "an older state dir with a PKI and no marker", wantMode: 0o700, prepare: func(t *testing.T, dir string) {
			mkdirMode(t, dir, 0o750)
			mustMkdir(t, filepath.Join(dir, "pki"))
			mustWrite(t, filepath.Join(dir, "pki", "ca.crt"), "")
		}},
		{name: "an empty private directory", wantMode: 0o700, prepare: func(t *testing.T, dir string) { mkdirMode(t, dir, 0o700) }},
		{name: "a shared sticky directory", wantMode: 0o777 | os.ModeSticky, wantErr: "it already holds files and is not a kubeforge state dir",
			prepare: func(t *testing.T, dir string) {
				mkdirMode(t, dir, 0o777|os.ModeSticky)
				mustWrite(t, filepath.Join(dir, "someone-elses.sock"), "")
			}},
		{name: "a shared sticky directory with a lock file planted in it", wantMode: 0o777 | os.ModeSticky, wantErr: "it already holds files and is not a kubeforge state dir",
			prepare: func(t *testing.T, dir string) {
				mkdirMode(t, dir, 0o777|os.ModeSticky)
				mustWrite(t, filepath.Join(dir, statedir.LockName), "")
			}},
		{name: "an empty sticky directory", wantMode: 0o777 | os.ModeSticky, wantErr: "is not private to you (mode dtrwxrwxrwx)",
			prepare: func(t *testing.T, dir string) { mkdirMode(t, dir, 0o777|os.ModeSticky) }},
		{name: "an empty directory others can read", wantMode: 0o755, wantErr: "`chmod 700` this one if it is yours",
			prepare: func(t *testing.T, dir string) { mkdirMode(t, dir, 0o755) }},
		{name: "a private directory holding other files", wantMode: 0o700, wantErr: "name a new directory, which kubeforge creates",
			prepare: func(t *testing.T, dir string) {
				mkdirMode(t, dir, 0o700)
				mustWrite(t, filepath.Join(dir, "id_ed25519"), "")
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := testOptions(t)
			if tt.prepare != nil {
				tt.prepare(t, opts.StateDir)
			}
			before := tree(t, opts.StateDir)
			var ran, locked bool
			_, err := Run(context.Background(), opts, localPlaybook(&ran, &locked))
			st, serr := os.Stat(opts.StateDir)
			if serr != nil {
				t.Fatal(serr)
			}
			if got := st.Mode() & (os.ModePerm | os.ModeSticky); got != tt.wantMode {
				t.Errorf("mode %v; want %v", got, tt.wantMode)
			}
			if tt.wantErr == "" {
				if err != nil || !ran {
					t.Fatalf("run: %v (ran %v); want it to run", err, ran)
				}
				return
			}
			var sd *StateDirError
			if !errors.As(err, &sd) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("run: %v; want a *StateDirError with %q", err, tt.wantErr)
			}
			if ran {
				t.Error("the playbook ran")
			}
			if after := tree(t, opts.StateDir); after != before {
				t.Errorf("the directory changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// mkdirMode makes dir with exactly mode (the umask aside).
func mkdirMode(t *testing.T, dir string, mode os.FileMode) {
	t.Helper()
	mustMkdir(t, dir)
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
}

// tree lists the entries under dir ("" when dir is missing).
func tree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil {
			fmt.Fprintf(&b, "%s:%d ", p, info.Size())
		}
		return nil
	})
	return b.String()
}
