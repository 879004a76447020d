package playbooks

import (
	"time"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/tasks"
)

// Steps every playbook starts with.
func stepConnect() Step {
	return Step{Name: "connect", Help: "open one SSH connection per host and check root or passwordless sudo",
		Hosts: inventory.SelectAll, Run: tasks.Connect, Always: true, Timeout: 2 * time.Minute}
}

func stepFacts() Step {
	return Step{Name: "facts", Help: "gather OS, kernel, cgroups, swap, ports, runtime and kubelet facts",
		Hosts: inventory.SelectAll, Run: tasks.GatherFacts, Always: true, Timeout: 2 * time.Minute}
}

func stepPreflightHost() Step {
	return Step{Name: "preflight/host", Help: "per-host checks, reachability tested from each host",
		Hosts: inventory.SelectAll, Run: tasks.PreflightHost, Timeout: 2 * time.Minute}
}

func stepPreflightCluster() Step {
	return Step{Name: "preflight/cluster", Help: "unique names, IDs and MACs, clock skew; stop on any failure",
		Local: tasks.PreflightCluster}
}

// Preflight is the read-only playbook behind `kubeforge preflight`.
func Preflight(*inventory.Inventory) Playbook {
	return Playbook{Name: "preflight", Steps: []Step{stepConnect(), stepFacts(), stepPreflightHost(), stepPreflightCluster()}}
}
