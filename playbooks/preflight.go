package playbooks

import (
	"context"
	"time"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/tasks"
)

// Steps every playbook starts with.
func stepConnect() Step {
	return Step{Name: "connect", Help: "open one SSH connection per host and check root or passwordless sudo",
		Hosts: inventory.SelectAll, Run: tasks.Connect, Always: true, ReadOnly: true, Timeout: 2 * time.Minute}
}

func stepFacts() Step {
	return Step{Name: "facts", Help: "gather OS, kernel, cgroups, swap, ports, runtime and kubelet facts",
		Hosts: inventory.SelectAll, Run: tasks.GatherFacts, Always: true, ReadOnly: true, Timeout: 2 * time.Minute}
}

func stepPreflightHost() Step {
	return Step{Name: "preflight/host", Help: "per-host checks, reachability tested from each host",
		Hosts: inventory.SelectAll, Run: tasks.PreflightHost, Timeout: 2 * time.Minute, ReadOnly: true}
}

func stepPreflightCluster() Step {
	return Step{Name: "preflight/cluster", Help: "unique names, IDs and MACs, clock skew; stop on any failure",
		Local: tasks.PreflightCluster, ReadOnly: true}
}

// The steps that observe the cluster and plan, before any change.
func stepSeed() Step {
	return Step{Name: "cluster/endpoint", Help: "the control plane of the API endpoint, from the server the hosts' kubelets use",
		Local: tasks.ChooseSeed, Always: true, ReadOnly: true}
}

func stepProbe() Step {
	return Step{Name: "cluster/probe", Help: "ask each control plane's etcd for the member list and its API server for /readyz",
		Hosts: inventory.SelectControlPlanes, Run: tasks.ProbeControlPlane, Always: true, ReadOnly: true, Timeout: 3 * time.Minute}
}

func stepObserve() Step {
	return Step{Name: "cluster/observe", Help: "etcd membership, Nodes, Leases and the pod network; decide who initialises, joins, or is reconciled, and the pod network",
		Local: func(ctx context.Context, env *tasks.Env) error {
			if err := tasks.ObserveCluster(ctx, env); err != nil {
				return err
			}
			if err := tasks.DecideRoles(ctx, env); err != nil {
				return err
			}
			if err := tasks.PlanNetwork(ctx, env); err != nil {
				return err
			}
			return tasks.PlanEncryption(ctx, env)
		}, Always: true, ReadOnly: true}
}

func stepPlan() Step {
	return Step{Name: "plan", Help: "per host: files that differ (and why), images to import, restarts",
		Hosts: inventory.SelectAll, Run: tasks.PlanHost, Always: true, ReadOnly: true}
}

// Preflight is the read-only playbook behind `kubeforge preflight`.
func Preflight(*inventory.Inventory) Playbook {
	return Playbook{Name: "preflight", Steps: []Step{stepConnect(), stepFacts(), stepPreflightHost(), stepPreflightCluster()}}
}
