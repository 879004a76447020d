package tasks

import (
	"context"
	"fmt"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/manifests"
	"github.com/kubeforge/kubeforge/pki"
)

// ClusterFacts is the cluster as observed before any change: etcd's own
// member list, which API servers answer, and which kubelets really joined.
type ClusterFacts struct {
	// Etcd is the membership a live member reported; nil when none answered.
	Etcd *EtcdFacts
	// APIUp lists the control planes whose API server answered /readyz.
	APIUp []string
	// Nodes are the Node objects that exist (which says nothing about a kubelet).
	Nodes map[string]bool
	// PodCIDRs are the Nodes' pod CIDRs.
	PodCIDRs map[string]string
	// KubeletVersions are the versions the Nodes' kubelets report.
	KubeletVersions map[string]string
	// Joined are the hosts whose kubelet joined: /etc/kubernetes/kubelet.conf
	// holds a valid credential for its own node and the node's Lease is fresh.
	Joined map[string]bool
	// Credential are the hosts whose kubelet holds a valid credential for its
	// own node: they need no bootstrap token, fresh Lease or not.
	Credential map[string]bool
	// Network is the pod network the cluster is seen to run: "flannel"
	// (its DaemonSet exists), "bridge" (a host has the bridge's routes
	// script), "" (neither: a new cluster, or one with its own network).
	Network string
	// NetworkSeen says where Network was seen.
	NetworkSeen string
}

// EtcdFacts is etcd's membership, as a live member reports it.
type EtcdFacts struct {
	ClusterID uint64
	Via       string // the control plane whose member answered
	Members   []EtcdMember
}

// EtcdMember is one etcd member.
type EtcdMember struct {
	ID      uint64
	Name    string // empty until the member has started
	PeerURL string
	Learner bool
	Host    string // the inventory control plane with this peer URL; "" for none
}

// member returns the member whose peer URL is h's, or nil.
func (f *EtcdFacts) member(h *Host) *EtcdMember {
	if f == nil {
		return nil
	}
	peer := manifests.EtcdPeerURL(h.Host)
	for i := range f.Members {
		if f.Members[i].PeerURL == peer {
			return &f.Members[i]
		}
	}
	return nil
}

// isProxyServer reports whether server is the node-local API proxy's URL.
func isProxyServer(server string) bool {
	return strings.HasPrefix(server, "https://"+inventory.APIProxyHost+":")
}

// etcdProbe is what one control plane's etcd and API server said.
type etcdProbe struct {
	etcd  *EtcdFacts
	err   error
	apiUp bool
}

// ChooseSeed picks the control plane whose address is the cluster's API
// endpoint (when no controlPlaneEndpoint is set) from what the hosts say: the
// server most kubelets are configured with. A host's position in the file
// decides only for a cluster no kubelet belongs to yet.
func ChooseSeed(_ context.Context, env *Env) error {
	if env.Inv.Cluster.ControlPlaneEndpoint != "" {
		return nil
	}
	votes := map[string]int{}
	for _, h := range env.Hosts(env.Inv.Hosts) {
		// A worker behind the node-local proxy names 127.0.0.1: no vote.
		if h.Facts != nil && h.Facts.KubeletServer != "" && !isProxyServer(h.Facts.KubeletServer) {
			votes[h.Facts.KubeletServer]++
		}
	}
	best, n := "", 0
	for s, v := range votes {
		if v > n || (v == n && s < best) {
			best, n = s, v
		}
	}
	if best == "" {
		return nil
	}
	for _, cp := range env.Inv.ControlPlanes() {
		if pki.LocalServerURL(cp) == best {
			if env.setSeed(cp.Name) {
				env.Log.Info("API endpoint observed on the hosts", "server", best, "control-plane", cp.Name)
			}
			return nil
		}
	}
	env.warn(fmt.Sprintf("the kubelets use the API server %s, which is no control plane of the inventory; "+
		"nodes keep using it until their kubeconfigs are rewritten; set cluster.controlPlaneEndpoint to choose one", best))
	return nil
}

// ProbeControlPlane asks h's own etcd for the member list and h's own API
// server for /readyz, reading only. A member that holds data and whose
// kubelet runs is given up to a minute to answer (it may be starting),
// unless a restore holds its manifest aside.
func ProbeControlPlane(ctx context.Context, env *Env, h *Host) error {
	p := &etcdProbe{}
	defer func() {
		env.mu.Lock()
		if env.probes == nil {
			env.probes = map[string]*etcdProbe{}
		}
		env.probes[h.Name] = p
		env.mu.Unlock()
	}()
	f := h.Facts
	if f == nil || h.Client == nil {
		p.err = fmt.Errorf("not connected")
		return nil
	}
	if !f.EtcdData && !f.Listening[manifests.EtcdClientPort] {
		p.err = fmt.Errorf("no etcd data and nothing listening on %d", manifests.EtcdClientPort)
	} else {
		patience := 3 * time.Second
		if f.EtcdData && f.KubeletActive && !f.HeldPods {
			patience = time.Minute
		}
		p.etcd, p.err = etcdMembers(ctx, env, h, patience)
	}
	if f.StaticPods || f.Listening[pki.APIServerPort] {
		p.apiUp = apiAnswers(ctx, env, h)
	}
	return nil
}

// etcdMembers lists the members through h's own etcd, retrying for patience.
func etcdMembers(ctx context.Context, env *Env, h *Host, patience time.Duration) (*EtcdFacts, error) {
	cli, err := etcdClient(ctx, env, h)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	var out *EtcdFacts
	var last error
	err = wait.PollUntilContextTimeout(ctx, time.Second, patience, true, func(ctx context.Context) (bool, error) {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		resp, err := cli.MemberList(cctx)
		if err != nil {
			last = err
			return false, nil
		}
		out = &EtcdFacts{ClusterID: resp.Header.ClusterId, Via: h.Name}
		for _, m := range resp.Members {
			em := EtcdMember{ID: m.ID, Name: m.Name, Learner: m.IsLearner}
			if len(m.PeerURLs) > 0 {
				em.PeerURL = m.PeerURLs[0]
			}
			for _, cp := range env.Inv.ControlPlanes() {
				if manifests.EtcdPeerURL(cp) == em.PeerURL {
					em.Host = cp.Name
				}
			}
			out.Members = append(out.Members, em)
		}
		return true, nil
	})
	if err != nil {
		if last == nil {
			last = err
		}
		return nil, fmt.Errorf("etcd on %s did not answer: %w", h.Name, last)
	}
	return out, nil
}

// apiAnswers reports whether h's API server answers /readyz within a few seconds.
func apiAnswers(ctx context.Context, env *Env, h *Host) bool {
	admin, err := env.PKI.AdminKubeconfig(env.Inv.Cluster.Name, env.serverURL())
	if err != nil {
		return false
	}
	cfg, err := apiConfig(admin, h)
	return err == nil && readyz(ctx, cfg) == nil
}

// ObserveCluster merges what the control planes reported into env.Cluster,
// refusing when two members report different clusters, and reads the
// cluster's Nodes and Leases through an API server that answers.
func ObserveCluster(ctx context.Context, env *Env) error {
	cf := &ClusterFacts{Nodes: map[string]bool{}, Joined: map[string]bool{}, Credential: map[string]bool{}, PodCIDRs: map[string]string{},
		KubeletVersions: map[string]string{}}
	for _, h := range env.Hosts(env.Inv.Hosts) {
		cf.Credential[h.Name] = h.Facts != nil && h.Facts.KubeletIdentity == "system:node:"+h.Name
	}
	env.mu.Lock()
	probes := env.probes
	env.mu.Unlock()
	for _, h := range env.Hosts(env.Inv.ControlPlanes()) {
		p := probes[h.Name]
		if p == nil {
			continue
		}
		if p.apiUp {
			cf.APIUp = append(cf.APIUp, h.Name)
		}
		if p.etcd == nil {
			continue
		}
		if cf.Etcd == nil {
			cf.Etcd = p.etcd
		} else if cf.Etcd.ClusterID != p.etcd.ClusterID {
			return fmt.Errorf("split brain: etcd on %s is cluster %x but etcd on %s is cluster %x; "+
				"keep the one with the data you want and reset the others' hosts (kubeforge reset --hosts ...), then run up again",
				cf.Etcd.Via, cf.Etcd.ClusterID, p.etcd.Via, p.etcd.ClusterID)
		}
	}
	var routed []string
	for _, h := range env.Hosts(env.Inv.Hosts) {
		if h.Facts != nil && h.Facts.PodRoutes {
			routed = append(routed, h.Name)
		}
	}
	if len(routed) > 0 {
		cf.Network, cf.NetworkSeen = inventory.CNIBridge, routesPath+" on "+strings.Join(routed, ", ")
	}
	env.Cluster = cf
	if len(cf.APIUp) == 0 {
		if cf.Etcd != nil {
			env.warn("no API server answered /readyz: Nodes, Leases and pod CIDRs were not read, so the plan may change once one answers")
		}
		return nil
	}
	if err := ConnectAPI(ctx, env); err != nil {
		return err
	}
	kc := env.Kube
	nodes, err := kc.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if apierrors.IsForbidden(err) {
		// A run stopped between the first API server and cluster/bootstrap:
		// admin.conf's group has no binding yet. Read as super-admin.
		if kc, err = superAdminClient(env); err == nil {
			nodes, err = kc.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		}
	}
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	for _, n := range nodes.Items {
		cf.Nodes[n.Name] = true
		cf.KubeletVersions[n.Name] = n.Status.NodeInfo.KubeletVersion
		if n.Spec.PodCIDR != "" {
			cf.PodCIDRs[n.Name] = n.Spec.PodCIDR
		}
	}
	switch _, err := kc.AppsV1().DaemonSets(metav1.NamespaceSystem).Get(ctx, manifests.FlannelDaemonSet, metav1.GetOptions{}); {
	case err == nil:
		cf.Network, cf.NetworkSeen = inventory.CNIFlannel, "DaemonSet kube-system/"+manifests.FlannelDaemonSet
	case !apierrors.IsNotFound(err):
		return fmt.Errorf("read the pod network's DaemonSet: %w", err)
	}
	leases, err := kc.CoordinationV1().Leases("kube-node-lease").List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list node leases: %w", err)
	}
	byName := map[string]*coordinationv1.Lease{}
	for i := range leases.Items {
		byName[leases.Items[i].Name] = &leases.Items[i]
	}
	for _, h := range env.Hosts(env.Inv.Hosts) {
		cf.Joined[h.Name] = kubeletJoined(h, byName[h.Name], time.Now())
		if cf.Credential[h.Name] && !cf.Joined[h.Name] {
			env.warn(fmt.Sprintf("%s: its kubelet holds its credential but the node's Lease is not fresh: the kubelet may be down or cut off", h.Name))
		}
	}
	return nil
}

// superAdminClient is a super-admin (system:masters) client through the
// control plane the workstation talks to.
func superAdminClient(env *Env) (kubernetes.Interface, error) {
	h, err := env.apiHost()
	if err != nil {
		return nil, err
	}
	super, err := env.PKI.SuperAdminKubeconfig(env.Inv.Cluster.Name, env.serverURL())
	if err != nil {
		return nil, fmt.Errorf("make super-admin kubeconfig: %w", err)
	}
	return hostClient(super, h, 30*time.Second)
}

// kubeletJoined: the host's kubelet.conf holds a credential for its own node
// and that node's Lease was renewed recently (as the host's clock tells it).
func kubeletJoined(h *Host, l *coordinationv1.Lease, now time.Time) bool {
	if h.Facts == nil || h.Facts.KubeletIdentity != "system:node:"+h.Name || l == nil || l.Spec.RenewTime == nil {
		return false
	}
	if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != h.Name {
		return false
	}
	dur := 40 * time.Second
	if l.Spec.LeaseDurationSeconds != nil {
		dur = time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
	}
	age := now.Add(h.Facts.ClockOffset).Sub(l.Spec.RenewTime.Time)
	return age < 2*dur
}

// warn records a warning for the plan and the log.
// Warnings are what this run found worth saying that did not stop it.
func (e *Env) Warnings() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.warnings...)
}

func (e *Env) warn(msg string) {
	e.mu.Lock()
	e.warnings = append(e.warnings, msg)
	e.mu.Unlock()
	e.Log.Warn(msg)
}
