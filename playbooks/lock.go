package playbooks

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/kubeforge/kubeforge/internal/statedir"
	"github.com/kubeforge/kubeforge/inventory"
)

// StateDirError is a directory kubeforge refuses to use as its state dir:
// nothing was changed in it.
type StateDirError struct {
	Dir    string
	Reason string
}

func (e *StateDirError) Error() string {
	return fmt.Sprintf("refusing to use %s as the state dir: %s", e.Dir, e.Reason)
}

// isStateDir reports whether dir (with st its Stat) is marked as
// kubeforge's: its marker or its lock file, or (a state dir older than both)
// its cluster CA, each a regular file of this user, in a directory of this
// user that is not sticky. A file another user planted (a `.lock` in /tmp)
// makes no directory a state dir.
func isStateDir(dir string, st fs.FileInfo) bool {
	if st.Mode()&fs.ModeSticky != 0 || !ownedByMe(st) {
		return false
	}
	for _, f := range []string{statedir.MarkerName, statedir.LockName, filepath.Join("pki", "ca.crt")} {
		if fst, err := os.Lstat(filepath.Join(dir, f)); err == nil && fst.Mode().IsRegular() && ownedByMe(fst) {
			return true
		}
	}
	return false
}

// ownedByMe reports whether st belongs to the user kubeforge runs as.
func ownedByMe(st fs.FileInfo) bool {
	sys, ok := st.Sys().(*syscall.Stat_t)
	return ok && int(sys.Uid) == os.Getuid()
}

// prepareStateDir makes dir ready for a run that writes it, private (0700):
//
//   - a directory that does not exist is created;
//   - a kubeforge state dir is made 0700 if it is not;
//   - an empty directory of this user that is already private (0700, no
//     sticky or set-id bit) is used as it is;
//   - any other directory is refused, and left as it is: its mode is the
//     owner's (`--state-dir /tmp` must not take /tmp's sticky bit and make it
//     private), and kubeforge keeps keys only where it keeps nothing else
//     (`reset --purge` removes a state dir only when it holds kubeforge's files
//     alone).
func prepareStateDir(dir string) error {
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create state dir: %w", err)
		}
		return secureStateDir(dir)
	}
	if err != nil {
		return fmt.Errorf("check state dir: %w", err)
	}
	refuse := func(format string, args ...any) error {
		return &StateDirError{Dir: dir, Reason: fmt.Sprintf(format, args...)}
	}
	if !st.IsDir() {
		return refuse("it is not a directory")
	}
	if isStateDir(dir, st) {
		if st.Mode().Perm() != 0o700 || st.Mode()&(fs.ModeSticky|fs.ModeSetuid|fs.ModeSetgid) != 0 {
			return secureStateDir(dir)
		}
		return nil
	}
	empty, err := isEmptyDir(dir)
	if err != nil {
		return fmt.Errorf("check state dir: %w", err)
	}
	if !empty {
		return refuse("it already holds files and is not a kubeforge state dir (it has no %s); name a new directory, which kubeforge creates", statedir.MarkerName)
	}
	private := st.Mode().Perm()&0o077 == 0 && st.Mode()&(fs.ModeSticky|fs.ModeSetuid|fs.ModeSetgid) == 0
	if !ownedByMe(st) || !private {
		return refuse("it is not a kubeforge state dir and is not private to you (mode %v); the state dir holds the cluster's keys. "+
			"Name a new directory (kubeforge creates it 0700), or `chmod 700` this one if it is yours", st.Mode())
	}
	return nil
}

func secureStateDir(dir string) error {
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("secure state dir: %w", err)
	}
	return nil
}

func isEmptyDir(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	_, err = f.Readdirnames(1)
	if errors.Is(err, io.EOF) {
		return true, nil
	}
	return false, err
}

// lockStateDir takes the state dir's lock for a run that writes it (a second
// run at once fails with a *statedir.BusyError) and marks the directory as
// kubeforge's. The caller releases the lock when the run ends.
func lockStateDir(dir string, inv *inventory.Inventory) (*statedir.Lock, error) {
	lock, err := statedir.Acquire(dir)
	if err != nil {
		return nil, err
	}
	if err := statedir.WriteMarker(dir, inv.Cluster.Name); err != nil {
		lock.Release()
		return nil, fmt.Errorf("mark state dir: %w", err)
	}
	return lock, nil
}

// withStateDirLock runs fn holding the lock of dir, which must exist, for
// commands that write the state dir outside Run.
func withStateDirLock(dir string, inv *inventory.Inventory, fn func() error) error {
	lock, err := lockStateDir(dir, inv)
	if err != nil {
		return err
	}
	defer lock.Release()
	return fn()
}
