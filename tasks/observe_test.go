package tasks

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kubeforge/kubeforge/internal/nodefile"
	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/manifests"
	"github.com/kubeforge/kubeforge/pki"
)

// observedEnv is an Env for an inventory of control planes cps and workers ws
// (in that file order), every host connected with default facts.
func observedEnv(t *testing.T, order []string, cps map[string]bool) *Env {
	t.Helper()
	inv := &inventory.Inventory{Cluster: inventory.Cluster{Name: "c"}}
	for i, n := range order {
		h := &inventory.Host{Name: n, Address: "10.0.0." + string(rune('1'+i))}
		if cps[n] {
			h.Roles = []inventory.Role{inventory.RoleControlPlane}
		} else {
			h.Roles = []inventory.Role{inventory.RoleWorker}
		}
		inv.Hosts = append(inv.Hosts, h)
	}
	env := NewEnv(inv, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	for _, h := range env.Hosts(inv.Hosts) {
		h.Facts = &Facts{Listening: map[int]bool{}}
	}
	return env
}

func (e *Env) hostNamed(n string) *Host { return e.Host(e.Inv.Host(n)) }

func member(env *Env, host string, id uint64, learner, started bool) EtcdMember {
	h := env.Inv.Host(host)
	m := EtcdMember{ID: id, PeerURL: manifests.EtcdPeerURL(h), Learner: learner, Host: host}
	if started {
		m.Name = host
	}
	return m
}

func TestDecideRolesFromObservedState(t *testing.T) {
	cps := map[string]bool{"cp1": true, "cp2": true, "cp3": true}
	for _, tc := range []struct {
		name    string
		order   []string
		data    []string // control planes holding etcd data
		marker  string   // a control plane with a restore under way
		via     string   // the control plane whose etcd answered (default: the first with data)
		members func(env *Env) []EtcdMember
		wantErr string
		init    string
		joins   string
		etcd    string // action:host,...
	}{
		{name: "new cluster: the first control plane of the file initialises",
			order: []string{"cp1", "cp2", "cp3", "w1"}, init: "cp1", joins: "cp2,cp3"},
		{name: "a new control plane listed first joins the cluster that exists (case 1)",
			order: []string{"cp3", "cp1", "cp2", "w1"}, data: []string{"cp1", "cp2"},
			members: func(env *Env) []EtcdMember {
				return []EtcdMember{member(env, "cp1", 1, false, true), member(env, "cp2", 2, false, true)}
			}, joins: "cp3"},
		{name: "reordering a converged cluster changes no role",
			order: []string{"cp2", "w1", "cp3", "cp1"}, data: []string{"cp1", "cp2", "cp3"},
			members: func(env *Env) []EtcdMember {
				return []EtcdMember{member(env, "cp1", 1, false, true), member(env, "cp2", 2, false, true), member(env, "cp3", 3, false, true)}
			}},
		{name: "data but no etcd answering: refused, never a second cluster",
			order: []string{"cp1", "cp2", "cp3"}, data: []string{"cp2"}, wantErr: "cp2 hold(s) etcd data"},
		{name: "an interrupted join left a learner with data: promoted (case 3)",
			order: []string{"cp1", "cp2", "cp3"}, data: []string{"cp1", "cp2"},
			members: func(env *Env) []EtcdMember {
				return []EtcdMember{member(env, "cp1", 1, false, true), member(env, "cp2", 2, true, true)}
			}, joins: "cp3", etcd: "promote:cp2"},
		{name: "an interrupted join left a learner without data: the join reuses it",
			order: []string{"cp1", "cp2", "cp3"}, data: []string{"cp1"},
			members: func(env *Env) []EtcdMember {
				return []EtcdMember{member(env, "cp1", 1, false, true), member(env, "cp2", 2, true, false)}
			}, joins: "cp2,cp3"},
		{name: "a reset control plane's voting member is removed and it rejoins (case 5)",
			order: []string{"cp1", "cp2", "cp3"}, data: []string{"cp2", "cp3"},
			members: func(env *Env) []EtcdMember {
				return []EtcdMember{member(env, "cp1", 1, false, true), member(env, "cp2", 2, false, true), member(env, "cp3", 3, false, true)}
			}, joins: "cp1", etcd: "remove:cp1"},
		{name: "etcd answers but no host shows its data (a data dir not looked in): refused, no voter removed",
			order: []string{"cp1", "cp2", "cp3"}, via: "cp1",
			members: func(env *Env) []EtcdMember {
				return []EtcdMember{member(env, "cp1", 1, false, true), member(env, "cp2", 2, false, true), member(env, "cp3", 3, false, true)}
			}, wantErr: "the one that just answered"},
		{name: "two of three voters without data: refused, no majority would stay",
			order: []string{"cp1", "cp2", "cp3"}, data: []string{"cp1"},
			members: func(env *Env) []EtcdMember {
				return []EtcdMember{member(env, "cp1", 1, false, true), member(env, "cp2", 2, false, true), member(env, "cp3", 3, false, true)}
			}, wantErr: "would remove 2 of the 3 voting etcd members"},
		{name: "data on a host that is no member: refused",
			order: []string{"cp1", "cp2", "cp3"}, data: []string{"cp1", "cp2"},
			members: func(env *Env) []EtcdMember { return []EtcdMember{member(env, "cp1", 1, false, true)} },
			wantErr: "cp2 holds etcd data but is no member"},
		{name: "an unstarted learner of no inventory host is removed before joins",
			order: []string{"cp1", "cp2"}, data: []string{"cp1"},
			members: func(env *Env) []EtcdMember {
				return []EtcdMember{member(env, "cp1", 1, false, true), {ID: 9, PeerURL: "https://10.9.9.9:2380", Learner: true}}
			}, joins: "cp2", etcd: "remove:"},
		{name: "a restore under way (its marker on a host): refused until restore finishes it",
			order: []string{"cp1", "cp2", "cp3"}, data: []string{"cp1", "cp2", "cp3"}, marker: "cp2",
			members: func(env *Env) []EtcdMember {
				return []EtcdMember{member(env, "cp1", 1, false, true), member(env, "cp2", 2, false, true), member(env, "cp3", 3, false, true)}
			}, wantErr: "a restore is under way on cp2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := observedEnv(t, tc.order, cps)
			for _, n := range tc.data {
				env.hostNamed(n).Facts.EtcdData = true
			}
			if tc.marker != "" {
				env.hostNamed(tc.marker).Facts.RestoreMarker = `{"archive":"ab12","token":"kubeforge-restore-1","phase":"placed","time":"2026-12-01T10:00:00Z"}`
			}
			env.Cluster = &ClusterFacts{Joined: map[string]bool{}, Credential: map[string]bool{}, Nodes: map[string]bool{}}
			if tc.members != nil {
				via := tc.via
				if via == "" {
					via = tc.data[0]
				}
				env.Cluster.Etcd = &EtcdFacts{ClusterID: 0xabc, Via: via, Members: tc.members(env)}
			}
			err := DecideRoles(context.Background(), env)
			if tc.wantErr != "" {
				var ref *ErrRefused
				if err == nil || !errors.As(err, &ref) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v; want a refusal containing %q", err, tc.wantErr)
				}
				if env.Plan != nil {
					t.Fatal("a refused decision left a plan")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			p := env.Plan
			if p.Init != tc.init {
				t.Errorf("init = %q; want %q", p.Init, tc.init)
			}
			if got := strings.Join(p.JoinCP, ","); got != tc.joins {
				t.Errorf("joins = %q; want %q", got, tc.joins)
			}
			var acts []string
			for _, a := range p.Etcd {
				acts = append(acts, a.Action+":"+a.Host)
			}
			if got := strings.Join(acts, ","); got != tc.etcd {
				t.Errorf("etcd actions = %q; want %q", got, tc.etcd)
			}
			// Never a new etcd cluster beside members that hold data.
			for _, cp := range env.Hosts(env.Inv.ControlPlanes()) {
				if prm := env.etcdParamsFor(cp); prm.InitialClusterState == "new" && cp.Name != p.Init && cp.Facts.EtcdData == false {
					t.Errorf("%s would start a new etcd cluster", cp.Name)
				}
			}
		})
	}
}

func TestInitialSeedFollowsTheKubeletsNotTheFile(t *testing.T) {
	env := observedEnv(t, []string{"cp2", "cp1", "w1"}, map[string]bool{"cp1": true, "cp2": true})
	url := pki.LocalServerURL(env.Inv.Host("cp1"))
	for _, n := range []string{"cp1", "cp2", "w1"} {
		env.hostNamed(n).Facts.KubeletServer = url
	}
	if err := ChooseSeed(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	if got := env.Seed().Name; got != "cp1" {
		t.Fatalf("endpoint control plane = %s; want cp1 (where the kubelets point), not the file's first", got)
	}
	if got := env.serverURL(); got != url {
		t.Fatalf("server = %s; want %s", got, url)
	}
}

func TestJoinedNeedsOwnCredentialAndFreshLease(t *testing.T) {
	now := time.Now()
	name := "w1"
	lease := func(age time.Duration, holder string) *coordinationv1.Lease {
		d := int32(40)
		return &coordinationv1.Lease{Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &d,
			RenewTime: &metav1.MicroTime{Time: now.Add(-age)}}}
	}
	for _, tc := range []struct {
		name     string
		identity string
		lease    *coordinationv1.Lease
		want     bool
	}{
		{"joined", "system:node:w1", lease(5*time.Second, name), true},
		{"a Node object kubeforge made, no kubelet (case 2)", "", nil, false},
		{"a credential but no lease", "system:node:w1", nil, false},
		{"a stale lease", "system:node:w1", lease(10*time.Minute, name), false},
		{"another node's credential", "system:node:w2", lease(time.Second, name), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &Host{Host: &inventory.Host{Name: name}, Facts: &Facts{KubeletIdentity: tc.identity}}
			if got := kubeletJoined(h, tc.lease, now); got != tc.want {
				t.Fatalf("joined = %v; want %v", got, tc.want)
			}
		})
	}
}

func TestInitialClusterComesFromTheMemberList(t *testing.T) {
	env := observedEnv(t, []string{"cp3", "cp1", "cp2"}, map[string]bool{"cp1": true, "cp2": true, "cp3": true})
	self := env.hostNamed("cp3")
	members := []EtcdMember{member(env, "cp1", 1, false, true), member(env, "cp2", 2, false, true), {ID: 7, PeerURL: manifests.EtcdPeerURL(self.Host), Learner: true}}
	got := initialCluster(members, 7, self)
	want := "cp1=" + manifests.EtcdPeerURL(env.Inv.Host("cp1")) + ",cp2=" + manifests.EtcdPeerURL(env.Inv.Host("cp2")) + ",cp3=" + manifests.EtcdPeerURL(self.Host)
	if got != want {
		t.Fatalf("initial cluster = %s\nwant %s (the file lists cp3 first: order must not matter)", got, want)
	}
}

func TestKubeletRestartIsJudgedFromTheHost(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    Facts
		want bool
	}{
		{"running on the inputs it started with", Facts{KubeletActive: true, KubeletInputs: "a", KubeletStarted: "a"}, false},
		{"an earlier run wrote inputs and died before the restart (case 8)", Facts{KubeletActive: true, KubeletInputs: "b", KubeletStarted: "a"}, true},
		{"not running", Facts{KubeletInputs: "a", KubeletStarted: "a"}, true},
		{"never started by kubeforge", Facts{KubeletActive: true, KubeletInputs: "a"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := kubeletRestartReason(&tc.f) != ""; got != tc.want {
				t.Fatalf("restart = %v; want %v", got, tc.want)
			}
		})
	}
}

func TestStaticPodsRestartWhenTheirCertificatesChange(t *testing.T) {
	inv := &inventory.Inventory{Cluster: inventory.Cluster{Name: "c", KubernetesVersion: "v1.37.2"},
		Hosts: []*inventory.Host{{Name: "cp1", Address: "10.0.0.1", Roles: []inventory.Role{inventory.RoleControlPlane}}}}
	inv.SetDefaults()
	pods, err := manifests.StaticPods(inv, inv.Hosts[0], manifests.ControlPlaneParams{Etcd: EtcdParamsFor(inv, inv.Hosts[0])})
	if err != nil {
		t.Fatal(err)
	}
	annot := func(files []nodefile.File) map[string]string {
		stamped, err := manifests.StampInputs(pods, files)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, f := range stamped {
			for _, l := range strings.Split(string(f.Data), "\n") {
				if strings.Contains(l, manifests.InputsAnnotation) {
					out[f.Path] = l
				}
			}
		}
		return out
	}
	base := []nodefile.File{{Path: "/etc/kubernetes/pki/apiserver.crt", Data: []byte("a")}, {Path: "/etc/kubernetes/pki/etcd/server.crt", Data: []byte("e")},
		{Path: "/etc/kubernetes/scheduler.conf", Data: []byte("s")}, {Path: "/var/lib/kubelet/config.yaml", Data: []byte("k")}}
	before := annot(base)
	renewed := append([]nodefile.File{{Path: "/etc/kubernetes/pki/apiserver.crt", Data: []byte("a2")}}, base[1:]...)
	after := annot(renewed)
	api := "/etc/kubernetes/manifests/kube-apiserver.yaml"
	sched := "/etc/kubernetes/manifests/kube-scheduler.yaml"
	if before[api] == "" || before[api] == after[api] {
		t.Errorf("kube-apiserver's inputs annotation did not change with its certificate: %q -> %q", before[api], after[api])
	}
	if before[sched] != after[sched] {
		t.Errorf("kube-scheduler restarts for a certificate it does not read")
	}
	kubelet := append(append([]nodefile.File(nil), base[:3]...), nodefile.File{Path: "/var/lib/kubelet/config.yaml", Data: []byte("k2")})
	if got := annot(kubelet); got[api] != before[api] {
		t.Errorf("a kubelet file changed the API server's inputs")
	}
}

func TestRemoveMarkedHostsAreNotPartOfTheCluster(t *testing.T) {
	inv := &inventory.Inventory{Hosts: []*inventory.Host{
		{Name: "cp1", Roles: []inventory.Role{inventory.RoleControlPlane}, Remove: true},
		{Name: "cp2", Roles: []inventory.Role{inventory.RoleControlPlane}},
		{Name: "w1", Roles: []inventory.Role{inventory.RoleWorker}},
	}}
	if got := inv.FirstControlPlane().Name; got != "cp2" {
		t.Errorf("the cluster would be initialised on %s, marked remove: true (case 9)", got)
	}
	a := inv.Active()
	if len(a.Hosts) != 2 || a.Host("cp1") != nil {
		t.Errorf("active inventory has %d hosts, cp1: %v", len(a.Hosts), a.Host("cp1") != nil)
	}
	if l := inv.Leaving(); len(l) != 1 || l[0].Name != "cp1" {
		t.Errorf("leaving = %v", l)
	}
}

func TestTwoEtcdClustersAreSplitBrain(t *testing.T) {
	env := observedEnv(t, []string{"cp1", "cp2"}, map[string]bool{"cp1": true, "cp2": true})
	env.probes = map[string]*etcdProbe{
		"cp1": {etcd: &EtcdFacts{ClusterID: 1, Via: "cp1"}},
		"cp2": {etcd: &EtcdFacts{ClusterID: 2, Via: "cp2"}},
	}
	err := ObserveCluster(context.Background(), env)
	if err == nil || !strings.Contains(err.Error(), "split brain") {
		t.Fatalf("err = %v; want split brain", err)
	}
}

func TestScaleRefusesWithoutACluster(t *testing.T) {
	env := observedEnv(t, []string{"cp1", "w1"}, map[string]bool{"cp1": true})
	if err := DecideRoles(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	var ref *ErrRefused
	if err := RequireCluster(context.Background(), env); !errors.As(err, &ref) {
		t.Fatalf("err = %v; want a refusal", err)
	}
}

func TestClusterInfoIsPublishedWithoutAToken(t *testing.T) {
	env := observedEnv(t, []string{"cp1"}, map[string]bool{"cp1": true})
	env.Inv.SetDefaults()
	b, err := pki.Load(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.Ensure(env.Inv, env.Seed(), b, pki.Options{KeyType: "ecdsa", Now: time.Now}); err != nil {
		t.Fatal(err)
	}
	env.PKI = b
	kc := fake.NewClientset()
	h := env.hostNamed("cp1")
	// Case 12: a cluster of control planes only gets cluster-info at bootstrap, so `kubeadm join` works on it.
	if err := publishClusterInfo(context.Background(), env, h, kc, nil); err != nil {
		t.Fatal(err)
	}
	cm, err := kc.CoreV1().ConfigMaps(metav1.NamespacePublic).Get(context.Background(), "cluster-info", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("no cluster-info without a token: %v", err)
	}
	if !strings.Contains(cm.Data["kubeconfig"], "certificate-authority-data") {
		t.Errorf("cluster-info kubeconfig lacks the CA: %q", cm.Data["kubeconfig"])
	}
	// A token adds its signature; deleting the token removes it and the Secret.
	tok, err := pki.NewBootstrapToken()
	if err != nil {
		t.Fatal(err)
	}
	sec := pki.BootstrapTokenSecret(tok, time.Hour, time.Now(), "test")
	if _, err := kc.CoreV1().Secrets(sec.Namespace).Create(context.Background(), sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := publishClusterInfo(context.Background(), env, h, kc, &tok); err != nil {
		t.Fatal(err)
	}
	cm, _ = kc.CoreV1().ConfigMaps(metav1.NamespacePublic).Get(context.Background(), "cluster-info", metav1.GetOptions{})
	if cm.Data["jws-kubeconfig-"+tok.ID] == "" {
		t.Fatal("no JWS signature for the token")
	}
	env.Kube, env.Token = kc, &tok
	if err := DeleteJoinToken(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.CoreV1().Secrets(sec.Namespace).Get(context.Background(), sec.Name, metav1.GetOptions{}); err == nil {
		t.Error("the bootstrap token Secret is still there after join/cleanup")
	}
}

func TestEarlyNodeCarriesItsTaintsAndLabels(t *testing.T) {
	env := observedEnv(t, []string{"cp1", "w1"}, map[string]bool{"cp1": true})
	w := env.hostNamed("w1")
	w.Taints = []inventory.Taint{{Key: "dedicated", Value: "db", Effect: "NoSchedule"}}
	w.Labels = map[string]string{"tier": "db"}
	env.Kube = fake.NewClientset()
	// The kubelet adopts a Node that exists and then ignores --register-with-taints (case 2): the Node
	// kubeforge makes for the pod CIDR must carry the taints itself.
	if _, err := env.setPodCIDR(context.Background(), w, false, "10.244.1.0/24"); err != nil {
		t.Fatal(err)
	}
	n, err := env.Kube.CoreV1().Nodes().Get(context.Background(), "w1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(n.Spec.Taints) != 1 || n.Spec.Taints[0].Key != "dedicated" || n.Labels["tier"] != "db" {
		t.Fatalf("early Node: taints %v, labels %v", n.Spec.Taints, n.Labels)
	}
	// And a Node object is no sign of a joined kubelet: w1 still joins.
	env.Cluster = &ClusterFacts{Nodes: map[string]bool{"w1": true}, Joined: map[string]bool{}, Credential: map[string]bool{}}
	if err := DecideRoles(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	if strings.Join(env.Plan.JoinNodes, ",") != "w1" {
		t.Fatalf("join nodes = %v; want w1 (its Node exists, its kubelet never joined)", env.Plan.JoinNodes)
	}
}

// The removal plan lists the pods the drain evicts (not DaemonSet or mirror
// pods), and a plan with a teardown is not empty.
func TestRemovalPlanListsThePodsTheDrainEvicts(t *testing.T) {
	env := observedEnv(t, []string{"cp1", "w1"}, map[string]bool{"cp1": true})
	yes := true
	owned := func(kind string) []metav1.OwnerReference {
		return []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: "x", Controller: &yes}}
	}
	pod := func(name string, owners []metav1.OwnerReference, annotations map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, OwnerReferences: owners, Annotations: annotations},
			Spec: corev1.PodSpec{NodeName: "w1"}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	}
	env.Kube = fake.NewClientset(
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w1"}},
		&appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "x"}},
		pod("web", owned("ReplicaSet"), nil),
		pod("agent", owned("DaemonSet"), nil),
		pod("static", nil, map[string]string{corev1.MirrorPodAnnotationKey: "x"}),
	) // (the fake ignores field selectors: pods of other nodes are the e2e test's to check)
	td := env.teardown("w1")
	if !env.Plan.Empty() {
		t.Fatalf("a teardown entry with nothing in it makes the plan non-empty")
	}
	if err := env.planNode(context.Background(), env.hostNamed("w1"), td); err != nil {
		t.Fatal(err)
	}
	if td.Node == "" || strings.Join(td.Evict, ",") != "default/web" {
		t.Errorf("removal plan of w1: node %q, evict %v; want the Node deleted and only default/web evicted", td.Node, td.Evict)
	}
	if env.Plan.Empty() {
		t.Error("a plan that deletes a Node is empty")
	}
	var b strings.Builder
	env.Plan.WritePlan(&b)
	if !strings.Contains(b.String(), "evict   default/web") {
		t.Errorf("the printed plan does not name the evicted pod:\n%s", b.String())
	}
	// A host without a Node: nothing to drain.
	td = env.teardown("cp1")
	env.Kube = fake.NewClientset()
	if err := env.planNode(context.Background(), env.hostNamed("cp1"), td); err != nil || td.Node != "" {
		t.Errorf("removal plan of a host without a Node: node %q, err %v", td.Node, err)
	}
}

// A host marked `remove: true` is left out of the run's inventory; removing it
// finds it among the leaving hosts (it panicked, issue 26 item 1).
func TestRemovingAHostMarkedRemoveTrue(t *testing.T) {
	env := observedEnv(t, []string{"cp1", "w1"}, map[string]bool{"cp1": true})
	full := env.Inv
	full.Host("w1").Remove = true
	env.Inv, env.Leaving = full.Active(), env.Hosts(full.Leaving())
	env.Kube = fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w1"}})
	env.Opts.Force = true
	if got := env.removalTargets(); len(got) != 1 || got[0].Name != "w1" {
		t.Fatalf("removal targets = %v; want w1", got)
	}
	td := env.teardown("w1")
	td.Node, td.Unreachable = "w1", "connection refused" // through the API only: no host to reset here
	if err := env.removeNode(context.Background(), td); err != nil {
		t.Fatalf("remove w1: %v", err)
	}
	if _, err := env.Kube.CoreV1().Nodes().Get(context.Background(), "w1", metav1.GetOptions{}); err == nil {
		t.Error("the Node of w1 is still there")
	}
	if err := env.removeNode(context.Background(), env.teardown("nobody")); err == nil || !strings.Contains(err.Error(), "nobody") {
		t.Errorf("removing a host that is nowhere: %v; want an error naming it", err)
	}
}

// Just before a removal the plan's belief is checked again: the member must
// not answer, and the voters left that answer must be a majority of those left.
func TestEtcdRemovalKeepsQuorum(t *testing.T) {
	for _, tc := range []struct {
		name    string
		voters  []memberLife
		wantErr string
	}{
		{"a dead voter of three, two live", []memberLife{{1, "a", true}, {2, "b", true}, {3, "c", false}}, ""},
		{"the voter answers", []memberLife{{1, "a", true}, {2, "b", true}, {3, "c", true}}, "its client port answers"},
		{"one live voter of the two left", []memberLife{{1, "a", true}, {2, "b", false}, {3, "c", false}}, "no majority"},
		{"two live of the four left", []memberLife{{1, "a", true}, {2, "b", true}, {3, "c", false}, {4, "d", false}, {5, "e", false}}, "no majority"},
		{"a learner or a member already gone", []memberLife{{1, "a", true}, {2, "b", false}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := uint64(3)
			if tc.name == "a learner or a member already gone" {
				id = 9
			}
			err := quorumAfterRemoval(tc.voters, id)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("err = %v; want %q", err, tc.wantErr)
			}
		})
	}
}
