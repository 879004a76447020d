package tasks

import (
	"context"
	"testing"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/ssh"
)

// TestCheckLeaveEtcdLetsSafeResetsThrough: no refusal when a staying member
// answered (the members are removed first), when every control plane is
// reset (nothing stays), or when only workers are; these never ask a host.
func TestCheckLeaveEtcdLetsSafeResetsThrough(t *testing.T) {
	only := func(names ...string) inventory.Selector {
		return inventory.Selector{Name: "chosen", Match: func(_ *inventory.Inventory, h *inventory.Host) bool {
			for _, n := range names {
				if h.Name == n {
					return true
				}
			}
			return false
		}}
	}
	for _, tt := range []struct {
		name     string
		chosen   inventory.Selector
		answered bool
	}{
		{name: "a staying member answered", chosen: only("cp1"), answered: true},
		{name: "every host", chosen: inventory.SelectAll},
		{name: "every control plane", chosen: only("cp1", "cp2", "cp3")},
		{name: "a worker", chosen: only("w1")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := observedEnv(t, []string{"cp1", "cp2", "cp3", "w1"}, map[string]bool{"cp1": true, "cp2": true, "cp3": true})
			if tt.answered {
				env.etcdVia = env.hostNamed("cp2")
			}
			for _, n := range []string{"cp1", "cp2", "cp3"} {
				env.hostNamed(n).Client = &ssh.Client{} // not connected: asking a host for its data would fail the test
			}
			if err := CheckLeaveEtcd(tt.chosen)(context.Background(), env); err != nil {
				t.Errorf("CheckLeaveEtcd: %v", err)
			}
		})
	}
}
