package playbooks

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/kubeforge/kubeforge/internal/statedir"
	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/tasks"
)

// PurgeError is a `reset --purge` that kubeforge refuses: nothing was reset
// and nothing removed.
type PurgeError struct {
	Dir    string
	Reason string
}

func (e *PurgeError) Error() string {
	return fmt.Sprintf("refusing to purge the state dir %s: %s", e.Dir, e.Reason)
}

// isStateEntry reports whether kubeforge writes name at the top of a state
// dir (or is the temporary file of such a write).
func isStateEntry(name string) bool {
	switch name {
	case statedir.LockName, statedir.MarkerName, "logs", "pki", "nodes", "cache", "known_hosts", "admin.conf",
		"restore": // a restore's work dir (its archive's unpacked entries)
		return true
	}
	return strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-")
}

// CheckPurge says whether `reset --purge` may remove the state dir opts
// names once the reset of hosts (nil: every host) has run. Call it before the
// reset, so that a refused purge changes nothing. It refuses:
//
//   - with --hosts: the other hosts still run on the CA in the state dir;
//   - a directory that is not recognisably a kubeforge state dir (no
//     .kubeforge-state marker, no pki/ca.crt), or that holds files kubeforge
//     did not write;
//   - /, the home directory, the working directory, the inventory's
//     directory, or a directory that holds any of them.
//
// A state dir that does not exist yet is fine: the reset creates it.
func CheckPurge(opts *Options, inv *inventory.Inventory, hosts []string) error {
	if len(hosts) > 0 {
		return &PurgeError{Dir: opts.StateDir, Reason: "--purge removes the cluster's PKI, but --hosts resets only " +
			strings.Join(hosts, ", ") + " and the other hosts still use that CA; drop --purge, or reset every host"}
	}
	return checkStateDir(opts.StateDir, inv)
}

// PurgeStateDir removes the state dir that opts names, holding its lock,
// after checking it as CheckPurge does: before taking the lock (so that a
// refused directory gets no lock file) and again under it (another run may
// have written it in between: a backup). A missing state dir is no error.
func PurgeStateDir(opts *Options, inv *inventory.Inventory) error {
	return purgeStateDir(opts.StateDir, inv, statedir.Acquire)
}

// purgeStateDir is PurgeStateDir with lock taking the state dir's lock.
func purgeStateDir(dir string, inv *inventory.Inventory, lock func(dir string) (*statedir.Lock, error)) error {
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := checkStateDir(dir, inv); err != nil {
		return err
	}
	l, err := lock(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // removed meanwhile
	}
	if err != nil {
		return err
	}
	defer l.Release()
	if err := checkStateDir(dir, inv); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("purge state dir: %w", err)
	}
	return nil
}

func checkStateDir(dir string, inv *inventory.Inventory) error {
	refuse := func(format string, args ...any) error {
		return &PurgeError{Dir: dir, Reason: fmt.Sprintf(format, args...)}
	}
	st, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check state dir: %w", err)
	}
	if st.Mode()&fs.ModeSymlink != 0 {
		return refuse("it is a symbolic link; name the directory itself")
	}
	if !st.IsDir() {
		return refuse("it is not a directory")
	}
	real, err := resolve(dir)
	if err != nil {
		return fmt.Errorf("check state dir: %w", err)
	}
	guarded := []struct{ what, path string }{{"the root directory", "/"}}
	if home, err := os.UserHomeDir(); err == nil {
		guarded = append(guarded, struct{ what, path string }{"your home directory", home})
	}
	if wd, err := os.Getwd(); err == nil {
		guarded = append(guarded, struct{ what, path string }{"the working directory", wd})
	}
	if inv != nil && inv.Path != "" {
		guarded = append(guarded, struct{ what, path string }{"the inventory's directory", filepath.Dir(inv.Path)})
	}
	for _, g := range guarded {
		p, err := resolve(g.path)
		if err != nil {
			continue // a guarded directory that cannot be resolved cannot be inside dir
		}
		if within(p, real) {
			if p == real {
				return refuse("it is %s", g.what)
			}
			return refuse("it holds %s (%s)", g.what, p)
		}
	}
	st, err = os.Stat(dir)
	if err != nil {
		return fmt.Errorf("check state dir: %w", err)
	}
	if !isStateDir(dir, st) {
		return refuse("it does not look like a kubeforge state dir (it has none of %s, %s, pki/ca.crt); remove it yourself if you are sure", statedir.MarkerName, statedir.LockName)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("check state dir: %w", err)
	}
	var foreign []string
	for _, e := range entries {
		if e.Name() == "backups" {
			return refuse("it holds backups (%s, the pre-upgrade snapshots among them): --purge never deletes a backup; move them out first", filepath.Join(dir, "backups"))
		}
		if e.Name() == tasks.BackupKeyFile {
			return refuse("it holds the backup key (%s) that authenticates this cluster's backups: --purge never deletes it; "+
				"keep it (a copy apart from the backups: docs/security.md) and move it out first", filepath.Join(dir, tasks.BackupKeyFile))
		}
		if !isStateEntry(e.Name()) {
			foreign = append(foreign, e.Name())
		}
	}
	if len(foreign) > 0 {
		sort.Strings(foreign)
		more := ""
		if len(foreign) > 5 {
			more = fmt.Sprintf(" and %d more", len(foreign)-5)
		}
		return refuse("it holds files kubeforge did not write (%s%s); move them out, or remove the directory yourself", strings.Join(first(foreign, 5), ", "), more)
	}
	return nil
}

// resolve makes path absolute and follows its symbolic links.
func resolve(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(abs)
}

// within reports whether path is dir or inside it (both resolved).
func within(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}
