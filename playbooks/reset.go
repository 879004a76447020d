package playbooks

import (
	"time"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/tasks"
)

// Reset is the playbook behind `kubeforge reset`: every chosen host is torn
// down in parallel; an unreachable host is reported and the others still reset.
// Control planes whose etcd members no staying control plane can remove are
// not reset without --force: nothing is.
func Reset(hosts inventory.Selector) func(*inventory.Inventory) Playbook {
	return func(*inventory.Inventory) Playbook {
		connect := stepConnect()
		connect.Hosts = hosts
		return Playbook{Name: "reset", BestEffort: true, AllHosts: true, Steps: []Step{connect,
			{Name: "reset/plan", Help: "read what the reset removes on each host (services, containers, mounts, files, rules)",
				Hosts: hosts, Run: tasks.PlanReset, ReadOnly: true},
			{Name: "etcd/plan", Help: "read, through a control plane that stays, the etcd members of the control planes being reset",
				Local: tasks.PlanLeaveEtcd(hosts), ReadOnly: true},
			{Name: "etcd/check", Help: "refuse to wipe control planes that hold etcd data when no staying member answered to remove their members (--force wipes anyway)",
				Local: tasks.CheckLeaveEtcd(hosts), ReadOnly: true, Gate: true},
			{Name: "etcd/leave", Help: "remove those etcd members, before their data is wiped",
				Local: tasks.LeaveEtcd},
			{Name: "reset", Help: "stop kubelet; remove pods, mounts, files, interfaces, iptables rules (and artifacts); verify",
				Hosts: hosts, Run: tasks.ResetHost},
		}}
	}
}

// Remove is the playbook behind `kubeforge scale --remove`: hosts that stay
// are connected; those leaving are drained, deleted and reset one at a time.
func Remove(*inventory.Inventory) Playbook {
	staying := func(s Step) Step {
		s.When = tasks.NotRemoved
		return s
	}
	return Playbook{Name: "scale --remove", AllHosts: true, Steps: []Step{
		tolerant(staying(stepConnect())), staying(stepFacts()), stepCerts(), stepRemovalPlan(), staying(stepAPIProxy()),
		{Name: "remove", Help: "cordon, drain (PDBs respected), remove the etcd member, delete the Node, reset the host",
			Local: tasks.RemoveNodes, Timeout: 30 * time.Minute},
	}}
}

// Scale is the playbook behind `kubeforge scale`: it adds the inventory's
// hosts that have not joined (whatever their place in the file), running only
// their steps, then removes the hosts marked `remove: true`. Existing nodes are
// read (facts, uniqueness checks) and get routes to the new nodes' pod CIDRs;
// existing control planes and the cluster's objects are converged (a second
// control plane changes how every node reaches the API: docs/ha.md), and the
// joined workers' API proxies follow the control planes.
func Scale(*inventory.Inventory) Playbook {
	newOnly := func(s Step) Step {
		s.When = tasks.NotJoined
		return s
	}
	plan := stepPlan()
	plan.When = tasks.NotJoined
	return Playbook{Name: "scale", Steps: []Step{
		tolerant(stepConnect()), stepFacts(), stepSeed(), stepCerts(), stepProbe(), stepObserve(),
		{Name: "scale/check", Help: "refuse when there is no cluster to add hosts to", Local: tasks.RequireCluster, Always: true, ReadOnly: true},
		newOnly(stepPreflightHost()), stepPreflightCluster(), plan, stepRemovalPlan(),
		stepRender(), newOnly(stepPrepare()), newOnly(stepRuntime()), newOnly(stepArtifacts()), newOnly(stepImport()),
		stepEtcd(), stepCIDRs(), stepNetwork(), stepJoinCP(), stepBootstrap(), stepToken(), newOnly(stepJoinWorkers()), stepAPIProxy(), stepKubeProxyRestart(),
		stepRegistered(), stepMark(), stepNetworkLate(), stepReady(), stepForgetBootstrap(), stepTokenCleanup(),
		{Name: "remove", Help: "hosts marked remove: true: cordon, drain (PDBs respected), remove the etcd member, delete the Node, reset",
			Local: tasks.RemoveNodes, Timeout: 30 * time.Minute},
	}}
}

// stepAPIProxy follows the control-plane set on the workers that joined
// before: the node-local proxy's upstreams, or the move to or from it.
func stepAPIProxy() Step {
	return Step{Name: "apiproxy", Help: "on joined workers: the node-local API proxy's upstreams follow the control planes; kubelets moved to or from it",
		Hosts: inventory.SelectWorkers, Run: tasks.ConvergeAPIProxy}
}

// stepRemovalPlan reads what removing the leaving hosts does: their pods to
// evict, Nodes, etcd members, what their reset removes.
func stepRemovalPlan() Step {
	return Step{Name: "remove/plan", Help: "read what removing the leaving hosts does: pods to evict, Node, etcd member, reset",
		Local: tasks.PlanRemoval, ReadOnly: true}
}

// Backup is the playbook behind `kubeforge backup`: it reads the control
// planes only and writes an archive on the workstation (etcd snapshot, PKI,
// inventory, manifest of sha256 sums and sizes, its MAC under the backup key).
func Backup(o tasks.BackupOptions) func(*inventory.Inventory) Playbook {
	return func(*inventory.Inventory) Playbook {
		cps := func(s Step) Step {
			s.Hosts = inventory.SelectControlPlanes
			return s
		}
		return Playbook{Name: "backup", Steps: []Step{
			cps(stepConnect()), cps(stepFacts()),
			{Name: "certs/load", Help: "load the cluster PKI from the state dir (a backup makes none)", Local: tasks.LoadPKI, Always: true},
			stepProbe(),
			{Name: "backup", Help: "snapshot etcd from a voting member, verify it, write it with the PKI and inventory to one archive, authenticated by the backup key",
				Local: tasks.TakeBackup(o), Timeout: 30 * time.Minute},
		}}
	}
}

// Restore is the playbook behind `kubeforge restore`: the archive is checked
// before any host is contacted; the control planes are read and the restore
// planned, all without writing to the state dir or a host; then the state
// dir gets the PKI, the control planes' pods are held, etcd's data made from
// the snapshot and placed, the control planes started and the result
// verified. Workers are not touched: their kubelets reconnect.
func Restore(o tasks.RestoreOptions) func(*inventory.Inventory) Playbook {
	return func(*inventory.Inventory) Playbook {
		cps := func(s Step) Step {
			s.Hosts = inventory.SelectControlPlanes
			return s
		}
		return Playbook{Name: "restore", Steps: []Step{
			{Name: "restore/verify", Help: "check the archive: its MAC under the backup key, every entry's size and sha256, the snapshot's checksum, the CA against the state dir's",
				Local: tasks.VerifyArchive(o), Always: true, ReadOnly: true},
			cps(stepConnect()), cps(stepFacts()),
			{Name: "restore/certs", Help: "the state dir's PKI, or the archive's when it has none, with what is missing made, in memory",
				Local: tasks.RestoreCerts, Always: true, ReadOnly: true},
			stepProbe(),
			{Name: "restore/plan", Help: "the Kubernetes minor running against the archive's; a restore under way; old data to keep, pods to stop",
				Local: tasks.PlanRestore(o), Always: true, ReadOnly: true},
			{Name: "restore/save", Help: "every check passed: write the PKI and admin.conf to the state dir, extract the snapshot",
				Local: tasks.SaveRestoreState, Always: true},
			cps(stepPrepare()), cps(stepRuntime()), cps(stepArtifacts()), cps(stepImport()),
			{Name: "restore/stop", Help: "hold the control-plane static pods aside and wait until etcd and the API server are down",
				Hosts: inventory.SelectControlPlanes, Run: tasks.StopForRestore, Timeout: 5 * time.Minute},
			{Name: "restore/etcd", Help: "make each member's etcd data from the snapshot (new cluster ID, the inventory's members); keep the old data aside",
				Hosts: inventory.SelectControlPlanes, Run: tasks.PlaceEtcdData, Timeout: 30 * time.Minute},
			{Name: "restore/start", Help: "push the control-plane files and static pods, start kubelet, wait for each API server",
				Hosts: inventory.SelectControlPlanes, Run: tasks.StartRestored},
			{Name: "restore/check", Help: "etcd: one cluster, the inventory's members, all voters; wait for the kubelets to renew their Leases",
				Local: tasks.CheckRestored},
		}}
	}
}
