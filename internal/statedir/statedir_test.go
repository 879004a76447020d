package statedir

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMain lets the test binary act as another kubeforge holding the lock:
// with STATEDIR_HOLD=dir it takes the lock, says so, and waits to be killed.
func TestMain(m *testing.M) {
	if dir := os.Getenv("STATEDIR_HOLD"); dir != "" {
		if _, err := Acquire(dir); err != nil {
			os.Stdout.WriteString("error: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Stdout.WriteString("locked\n")
		select {}
	}
	os.Exit(m.Run())
}

func TestAcquire(t *testing.T) {
	tests := []struct {
		name     string
		prepare  func(t *testing.T, dir string) // what is there before Acquire
		wantBusy bool
		wantPID  int
	}{
		{name: "fresh dir", prepare: func(*testing.T, string) {}},
		{name: "stale lock file of a crashed run does not block", prepare: func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, LockName), "pid 999999\nstarted 2020-01-02T03:04:05Z\n")
		}},
		{name: "released lock does not block", prepare: func(t *testing.T, dir string) {
			l, err := Acquire(dir)
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Release(); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "held lock fails at once naming the holder", wantBusy: true, wantPID: os.Getpid(),
			prepare: func(t *testing.T, dir string) {
				l, err := Acquire(dir)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l.Release() })
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.prepare(t, dir)
			l, err := Acquire(dir)
			var busy *BusyError
			if tt.wantBusy {
				if !errors.As(err, &busy) {
					t.Fatalf("Acquire: %v; want a *BusyError", err)
				}
				if busy.PID != tt.wantPID || busy.Started.IsZero() || busy.Dir != dir {
					t.Errorf("busy %+v; want pid %d, a start time and dir %s", busy, tt.wantPID, dir)
				}
				for _, want := range []string{"state dir " + dir + " is in use by another kubeforge run", "pid ", "started ", "wait for it"} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q lacks %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Acquire: %v", err)
			}
			defer l.Release()
			b, _ := os.ReadFile(filepath.Join(dir, LockName))
			if pid, started := parseHolder(b); pid != os.Getpid() || started.IsZero() {
				t.Errorf("lock file %q does not name this process", b)
			}
		})
	}
}

// TestLockOfAnotherProcessBlocksUntilItDies: a live holder in another process
// blocks; once it is killed (no Release, as in a crash) the lock is free.
func TestLockOfAnotherProcessBlocksUntilItDies(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "STATEDIR_HOLD="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "locked\n" {
		t.Fatalf("holder said %q", line)
	}
	_, err = Acquire(dir)
	var busy *BusyError
	if !errors.As(err, &busy) || busy.PID != cmd.Process.Pid {
		t.Fatalf("Acquire with a live holder: %v; want busy with pid %d", err, cmd.Process.Pid)
	}
	cmd.Process.Kill()
	cmd.Wait()
	l, err := Acquire(dir)
	if err != nil {
		t.Fatalf("Acquire after the holder died: %v", err)
	}
	l.Release()
}

func TestWriteMarkerKeepsAnExistingOne(t *testing.T) {
	dir := t.TempDir()
	if err := WriteMarker(dir, "one"); err != nil {
		t.Fatal(err)
	}
	if err := WriteMarker(dir, "two"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, MarkerName))
	if err != nil || !strings.Contains(string(b), `"one"`) {
		t.Errorf("marker %q, %v; want the first cluster's", b, err)
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}
