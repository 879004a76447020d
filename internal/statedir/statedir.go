// Package statedir guards kubeforge's state directory: an exclusive advisory
// lock held for the whole of a run that writes it, and a marker file that says
// the directory is kubeforge's.
package statedir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kubeforge/kubeforge/internal/atomicfile"
)

// Names of kubeforge's own files in the state dir.
const (
	LockName   = ".lock"
	MarkerName = ".kubeforge-state"
)

// BusyError is a state dir locked by another running kubeforge.
type BusyError struct {
	Dir     string
	PID     int       // 0 when the holder has not written it yet
	Started time.Time // zero when unknown
}

func (e *BusyError) Error() string {
	who := "pid unknown"
	if e.PID > 0 {
		who = "pid " + strconv.Itoa(e.PID)
	}
	if !e.Started.IsZero() {
		who += ", started " + e.Started.Format(time.RFC3339)
	}
	return fmt.Sprintf("state dir %s is in use by another kubeforge run (%s); wait for it to finish or stop it, then run this command again", e.Dir, who)
}

// Lock is a held state dir lock.
type Lock struct {
	f *os.File
}

// Acquire takes the exclusive lock on dir/.lock without waiting, and records
// this process's pid and start time in it. dir must exist. The lock is an
// flock(2): the kernel drops it when the process exits, so a lock file left by
// a crashed run does not block. A lock held by a live process gives a
// *BusyError.
func Acquire(dir string) (*Lock, error) {
	path := filepath.Join(dir, LockName)
	// No O_TRUNC: the holder's pid and time must survive until we hold the lock.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock state dir: %w", err)
	}
	if err := flock(f); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			busy := &BusyError{Dir: dir}
			if b, rerr := os.ReadFile(path); rerr == nil {
				busy.PID, busy.Started = parseHolder(b)
			}
			f.Close()
			return nil, busy
		}
		f.Close()
		return nil, fmt.Errorf("lock state dir %s: %w", dir, err)
	}
	info := fmt.Sprintf("pid %d\nstarted %s\n", os.Getpid(), time.Now().Format(time.RFC3339))
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(info), 0)
	}
	if err != nil {
		f.Close() // closing drops the lock
		return nil, fmt.Errorf("lock state dir: write %s: %w", path, err)
	}
	return &Lock{f: f}, nil
}

func flock(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// Release drops the lock. The lock file stays: removing it would let two
// runs lock two different files of the same name.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	if err != nil {
		return fmt.Errorf("unlock state dir: %w", err)
	}
	return nil
}

// parseHolder reads what Acquire wrote: "pid N" and "started T" lines.
func parseHolder(b []byte) (pid int, started time.Time) {
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch k {
		case "pid":
			pid, _ = strconv.Atoi(v)
		case "started":
			started, _ = time.Parse(time.RFC3339, v)
		}
	}
	return pid, started
}

// WriteMarker records in dir that it is a kubeforge state dir, for the
// cluster named; it leaves an existing marker as it is.
func WriteMarker(dir, cluster string) error {
	path := filepath.Join(dir, MarkerName)
	if _, err := os.Stat(path); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("check state dir marker: %w", err)
	}
	text := fmt.Sprintf("This directory is the kubeforge state of cluster %q: its PKI, kubeconfigs and logs.\n", cluster)
	return atomicfile.Write(path, []byte(text), 0o600)
}
