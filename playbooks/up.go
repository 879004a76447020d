package playbooks

import (
	"slices"
	"time"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/tasks"
)

// tolerant lets a run go on while a control plane is down (cannot be
// reached): it is reported and left out (docs/ha.md).
func tolerant(s Step) Step {
	s.Tolerate = tasks.ControlPlaneDown
	return s
}

// The steps of up, in order; scale reuses them.
func stepCerts() Step {
	return Step{Name: "certs", Help: "load or generate the cluster PKI in the state dir; write admin.conf",
		Local: tasks.EnsureCerts, Always: true, ReadOnly: true}
}

func stepRender() Step {
	return Step{Name: "render", Help: "render every host's files under <state dir>/nodes/<host>/",
		Local: tasks.RenderTrees}
}

func stepPrepare() Step {
	return Step{Name: "node/prepare", Help: "kernel settings Kubernetes needs (ip_forward, bridge netfilter)",
		Hosts: inventory.SelectAll, Run: tasks.PrepareNode}
}

func stepRuntime() Step {
	return Step{Name: "runtime/install", Help: "where no usable runtime is (or kubeforge's is): containerd, runc and CNI plugins from the artifacts, its config and unit; wait for the CRI; then the hosts files of cluster.registries",
		Hosts: inventory.SelectAll, Run: tasks.InstallRuntime, Timeout: 10 * time.Minute}
}

func stepArtifacts() Step {
	return Step{Name: "artifacts/push", Help: "kubelet, kubectl, CNI plugins and image tarballs: one host from here, the others in batches from hosts that hold verified copies (--fanout each)",
		Hosts: inventory.SelectAll, Run: tasks.ArtifactPush.Run, Timeout: 30 * time.Minute,
		Batches: tasks.ArtifactPush.Batches, BeforeBatch: tasks.StartPeerServers, After: tasks.StopPeerServers}
}

func stepImport() Step {
	return Step{Name: "artifacts/import", Help: "import the images containerd lacks from the pushed tarballs",
		Hosts: inventory.SelectAll, Run: tasks.ImportArtifactImages, Timeout: 30 * time.Minute}
}

func stepInit() Step {
	return Step{Name: "control-plane/init", Help: "only when no control plane holds etcd data: push PKI, kubeconfigs, static pods and kubelet files; start kubelet; wait for the API server",
		Hosts: inventory.SelectControlPlanes, When: tasks.Initialises, Run: tasks.InitControlPlane}
}

func stepBootstrap() Step {
	return Step{Name: "cluster/bootstrap", Help: "kubeadm ConfigMaps, cluster-info, bootstrap RBAC, kube-proxy, CoreDNS; the pod network's objects (flannel and kube-router, or cni.manifest)",
		Local: tasks.Bootstrap}
}

func stepEtcd() Step {
	return Step{Name: "etcd/reconcile", Help: "remove the members of control planes that lost their data; promote learners that have data",
		Local: tasks.ReconcileEtcd}
}

func stepJoinCP() Step {
	return Step{Name: "control-plane/join", Help: "one at a time: etcd learner (from etcd's member list), CA material and leaves, static pods, kubelet; promote",
		Hosts: inventory.SelectControlPlanes, When: tasks.NotInitialising, Serial: true, Run: tasks.JoinControlPlane}
}

// The steps that carry encryption at rest to a new key on a running cluster,
// each phase on every control plane before the next (tasks/encryption.go).
// up runs them after the control planes converge (it may have begun a
// rotation: encryption turned on for a running cluster); rotate-key after
// adding the key.
func stepsKeyRotation() []Step {
	roll := func(name, help string) Step {
		return tolerant(Step{Name: name, Help: help, Hosts: inventory.SelectControlPlanes, When: tasks.RotationUnderway, Serial: true,
			Run: tasks.RollControlPlane})
	}
	return []Step{
		roll("encryption/add", "one control plane at a time: the configuration that holds the new key (it reads with it); wait for the API server"),
		{Name: "encryption/promote", Help: "once every API server runs with the new key: make it the key that writes", Local: tasks.PromoteKey},
		roll("encryption/use", "one control plane at a time: the configuration whose first key is the new one; wait for the API server"),
		{Name: "encryption/rewrite", Help: "rewrite every encrypted object that etcd shows not written with the first key; check etcd again", Local: tasks.RewriteObjects},
		{Name: "encryption/drop", Help: "once every API server writes with the new key and etcd shows every object under it: drop the old keys", Local: tasks.DropOldKeys},
		roll("encryption/finish", "one control plane at a time: the configuration without the old keys; wait for the API server"),
		{Name: "encryption/done", Help: "check every API server runs with the final keys; end the rotation", Local: tasks.FinishRotation},
	}
}

func stepToken() Step {
	return Step{Name: "join/token", Help: "mint a short-lived bootstrap token and sign cluster-info, only if a worker must join",
		Local: tasks.EnsureJoinToken}
}

func stepJoinWorkers() Step {
	return Step{Name: "workers/join", Help: "push CA cert, bootstrap kubeconfig and kubelet files; start kubelet (TLS bootstrap)",
		Hosts: inventory.SelectWorkers, Run: tasks.JoinWorker}
}

func stepKubeProxyRestart() Step {
	return Step{Name: "kube-proxy/restart", Help: "restart kube-proxy's pods when its ConfigMap differs from the one they started with (the digest recorded on its DaemonSet)",
		Local: tasks.RestartKubeProxy}
}

func stepRegistered() Step {
	return Step{Name: "nodes/registered", Help: "wait until every host is a Node with a pod CIDR", Local: tasks.WaitNodesRegistered}
}

func stepMark() Step {
	return Step{Name: "nodes/mark", Help: "control-plane label and taint; inventory labels and taints", Local: tasks.MarkNodes}
}

func stepCIDRs() Step {
	return Step{Name: "network/cidrs", Help: "give each host its pod CIDR (kept if it has one) before its kubelet starts",
		Local: tasks.PlanPodCIDRs}
}

func stepNetwork() Step {
	return Step{Name: "network/configure", Help: "each node's CNI config for its pod CIDR (flannel: the overlay's MTU; bridge: and routes between nodes' pod CIDRs)",
		Hosts: inventory.SelectAll, Run: tasks.PodNetwork}
}

func stepNetworkLate() Step {
	return Step{Name: "network/complete", Help: "the same, for nodes whose pod CIDR the controller manager allocated late",
		Hosts: inventory.SelectAll, Run: tasks.PodNetwork}
}

func stepReady() Step {
	return Step{Name: "nodes/ready", Help: "wait until every node is Ready", Local: tasks.WaitNodesReady}
}

func stepTokenCleanup() Step {
	return Step{Name: "join/cleanup", Help: "delete the bootstrap token this run minted", Local: tasks.DeleteJoinToken}
}

func stepForgetBootstrap() Step {
	return Step{Name: "join/forget", Help: "delete bootstrap-kubelet.conf from the workers that joined, as kubeadm does",
		Hosts: inventory.SelectWorkers, When: tasks.JoinsNode, Run: tasks.ForgetBootstrapKubeconfig}
}

// Up is the playbook behind `kubeforge up`: from hosts with an OS (and a
// container runtime, or the artifacts' one to install) to a converged cluster. It observes the hosts and the
// cluster, plans, and executes the plan; every step is idempotent.
func Up(*inventory.Inventory) Playbook {
	return Playbook{Name: "up", Steps: slices.Concat([]Step{
		tolerant(stepConnect()), stepFacts(), stepSeed(), stepPreflightHost(), stepPreflightCluster(),
		stepCerts(), stepProbe(), stepObserve(), stepPlan(),
		stepRender(), stepPrepare(), stepRuntime(), stepArtifacts(), stepImport(),
		stepInit(), stepBootstrap(), stepEtcd(), stepCIDRs(), stepNetwork(), stepJoinCP(),
	}, stepsKeyRotation(), []Step{
		stepToken(), stepJoinWorkers(),
		stepKubeProxyRestart(), stepRegistered(), stepMark(), stepNetworkLate(), stepReady(), stepForgetBootstrap(), stepTokenCleanup(),
	})}
}

// Certs is the playbook behind `kubeforge certs generate`: local only.
func Certs(*inventory.Inventory) Playbook {
	return Playbook{Name: "certs generate", Steps: []Step{stepCerts()}}
}

// Render is the playbook behind `kubeforge render`: it reads facts (cgroup
// version, hostname) and the cluster's etcd membership from the hosts, then
// writes every node's tree locally.
func Render(*inventory.Inventory) Playbook {
	return Playbook{Name: "render", Steps: []Step{stepConnect(), stepFacts(), stepSeed(), stepCerts(), stepProbe(), stepObserve(), stepRender()}}
}

// RenderOffline is `kubeforge render --offline`: no host is contacted; hosts
// are assumed on cgroup v2 (on a v1 host `up` adds failCgroupV1: false) and
// the etcd flags follow the file's order, as for a new cluster.
func RenderOffline(*inventory.Inventory) Playbook {
	return Playbook{Name: "render", Steps: []Step{stepCerts(), stepRender()}}
}

// CheckNodeCerts is the playbook behind `kubeforge certs check-expiration --hosts`.
func CheckNodeCerts(*inventory.Inventory) Playbook {
	return Playbook{Name: "certs check-expiration", Steps: []Step{tolerant(stepConnect()),
		{Name: "certs/read", Help: "read every certificate kubeforge put on the host", Hosts: inventory.SelectAll, Run: tasks.ReadNodeCerts}}}
}

// RotateKey is the playbook behind `kubeforge secrets rotate-key`: a new
// encryption key, carried to every control plane and every encrypted object
// in phases; a run stopped anywhere resumes where it stopped.
func RotateKey(*inventory.Inventory) Playbook {
	return Playbook{Name: "secrets rotate-key", Steps: slices.Concat([]Step{
		tolerant(stepConnect()), stepFacts(), stepSeed(), stepCerts(), stepProbe(), stepObserve(),
		{Name: "encryption/plan", Help: "what the rotation does: the phases, the objects to rewrite", Local: tasks.PlanKeyRotation, Always: true, ReadOnly: true},
		{Name: "encryption/key", Help: "a new key of cluster.encryption.provider in the state dir, added last (or resume the rotation under way)", Local: tasks.BeginKeyRotation},
	}, stepsKeyRotation())}
}
