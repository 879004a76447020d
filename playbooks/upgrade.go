package playbooks

import (
	"time"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/tasks"
)

// Upgrade is the playbook behind `kubeforge upgrade`: it observes what every
// node runs, plans from that (docs/upgrade.md), takes an etcd snapshot, then
// upgrades the control planes one at a time, the cluster's objects, and the
// workers in batches. Every node's state is read from the host and the
// cluster, so a re-run after a stop or a crash goes on from where it is.
func Upgrade(*inventory.Inventory) Playbook {
	long := 6 * time.Hour // bounded by the waits inside, per node
	return Playbook{Name: "upgrade", Steps: []Step{
		stepConnect(), stepFacts(), stepSeed(), stepCerts(),
		{Name: "upgrade/wait", Help: "wait until each control plane's API server answers at the version of its manifest (an upgrade stopped inside one leaves it restarting)",
			Local: tasks.WaitForAPIServer, Always: true, ReadOnly: true, Timeout: 4 * time.Minute},
		stepProbe(), stepObserve(), stepPlan(),
		{Name: "upgrade/plan", Help: "versions running on every node; refuse a jump of two minors, a downgrade, an unhealthy node or etcd, missing artifacts",
			Local: tasks.PlanUpgrade, Always: true, ReadOnly: true},
		{Name: "upgrade/space", Help: "refuse a node whose disk the new binaries and images would fill past the kubelet's image garbage collection threshold",
			Hosts: inventory.SelectAll, When: tasks.Upgrading, Run: tasks.CheckUpgradeSpace, ReadOnly: true},
		stepRender(),
		{Name: "upgrade/snapshot", Help: "etcd snapshot from a voting member to the workstation, verified (a restore archive)",
			Local: tasks.UpgradeSnapshot, Timeout: 30 * time.Minute},
		{Name: "upgrade/stage", Help: "the new binaries to a staging directory and the new images' tarballs: one host from here, the others from hosts holding verified copies (--fanout each); nothing running changes",
			Hosts: inventory.SelectAll, When: tasks.Upgrading, Run: tasks.StagePush.Run, Timeout: 30 * time.Minute,
			Batches: tasks.StagePush.Batches, BeforeBatch: tasks.StartPeerServers, After: tasks.StopPeerServers},
		{Name: "upgrade/import", Help: "import the new images containerd lacks (kubeadm's pre-pull)",
			Hosts: inventory.SelectAll, When: tasks.Upgrading, Run: tasks.ImportUpgradeImages, Timeout: 30 * time.Minute},
		{Name: "upgrade/control-planes", Help: "one at a time: cordon, drain, the static pods' inputs, stop the kubelet, the new binaries, kubelet files and manifests, start the kubelet (each static pod restarts once), wait for etcd and the API server, wait Ready, uncordon",
			Hosts: inventory.SelectControlPlanes, When: tasks.Upgrading, Serial: true, Run: tasks.UpgradeNode, Timeout: long},
		{Name: "upgrade/cluster", Help: "kubeadm-config and kubelet-config ConfigMaps, kube-proxy and CoreDNS at the new version; wait for their rollouts",
			Local: tasks.UpgradeAddonsIfNeeded},
		{Name: "upgrade/workers", Help: "in batches of --max-unavailable: cordon the batch, drain (PDBs respected), kubelet, wait Ready, uncordon",
			Hosts: inventory.SelectWorkers, When: tasks.Upgrading, Run: tasks.UpgradeNode, Timeout: long,
			Batches: tasks.UpgradeBatches, BeforeBatch: tasks.CordonBatch},
		{Name: "upgrade/verify", Help: "every node Ready on the new kubelet, the new static pods everywhere, etcd's members all voters",
			Local: tasks.VerifyUpgrade},
	}}
}
