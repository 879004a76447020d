package playbooks

import (
	"fmt"

	"github.com/kubeforge/kubeforge/internal/statedir"
	"github.com/kubeforge/kubeforge/inventory"
)

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
