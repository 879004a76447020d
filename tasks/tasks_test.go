package tasks

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeforge/kubeforge/internal/nodefile"
	"github.com/kubeforge/kubeforge/inventory"
)

type pkiFile = nodefile.File

func TestParseFactsReadsEveryField(t *testing.T) {
	mid := time.Unix(1000, 0)
	out := strings.Join([]string{
		"os\tdebian", "osversion\t12", "osname\tDebian GNU/Linux 12 (bookworm)",
		"arch\tx86_64", "kernel\t6.1.0-18-amd64", "hostname\tnode1",
		"machineid\tabc", "productuuid\t", "mac\teth0 02:42:ac:1f:fa:0b", "mac\tlo 00:00:00:00:00:00",
		"ip\t172.31.250.11/24", "cgroupfs\ttmpfs", "swaps\t0", "memkb\t2048000", "cpus\t2",
		"ipforward\t1", "listen\t19AB", "listen\t0016", "crisocket\tyes", "criready\tok",
		"runtime\tcontainerd 1.6.20", "kubelet\tKubernetes v1.37.2", "kubeletactive\tactive",
		"kubeletconf\tyes", "staticpods\t", "uid\t0", "clock\t1002.5",
		"registrydir\t/etc/containerd/certs.d", "registryfile\t/a/hosts.toml", "registryfile\t/b/hosts.toml",
		"registrymirrors\tyes", "ipmtu\t172.31.250.11 9000", "ipmtu\t127.0.0.1 65536", "podroutes\tyes", "vxlan\tyes",
	}, "\n")
	f, err := parseFacts(out, mid)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"os", f.OS, "debian"}, {"arch", f.Arch, "x86_64"}, {"kernel", f.Kernel, "6.1.0-18-amd64"},
		{"macs", strings.Join(f.MACs, ","), "02:42:ac:1f:fa:0b"}, {"ips", strings.Join(f.IPs, ","), "172.31.250.11/24"},
		{"cgroupv2", f.CgroupV2, false}, {"swap", f.SwapOn, false}, {"memory", f.MemoryMB, 2000}, {"cpus", f.CPUs, 2},
		{"ipforward", f.IPForward, true}, {"6571 listening", f.Listening[6571], true}, {"22 listening", f.Listening[22], true},
		{"cri", f.CRISocket && f.CRIReady, true}, {"kubelet", f.KubeletVersion, "v1.37.2"}, {"active", f.KubeletActive, true},
		{"kubeletconf", f.KubeletConf, true}, {"staticpods", f.StaticPods, false}, {"clock", f.ClockOffset, 2500 * time.Millisecond},
		{"registrydir", f.RegistryConfigPath, "/etc/containerd/certs.d"}, {"registryfiles", strings.Join(f.RegistryFiles, " "), "/a/hosts.toml /b/hosts.toml"},
		{"registrymirrors", f.RegistryMirrors, true}, {"link MTU", f.LinkMTU["172.31.250.11"], 9000},
		{"loopback MTU", f.LinkMTU["127.0.0.1"], 65536}, {"pod routes", f.PodRoutes, true}, {"vxlan", f.VXLAN, true},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v; want %v", c.name, c.got, c.want)
		}
	}
}

func TestParseFactsRejectsGarbage(t *testing.T) {
	if _, err := parseFacts("sh: 1: syntax error", time.Now()); err == nil {
		t.Fatal("no error for output without facts")
	}
}

func TestKernelAtLeast(t *testing.T) {
	for _, tc := range []struct {
		v    string
		want bool
	}{{"6.1.0-18-amd64", true}, {"4.19.0", true}, {"4.18.0-553.el8", false}, {"3.10.0-1160", false}, {"5.4", true}, {"garbage", false}} {
		if got := kernelAtLeast(tc.v, 4, 19); got != tc.want {
			t.Errorf("kernelAtLeast(%q) = %v", tc.v, got)
		}
	}
}

func TestEtcdParamsGrowWithInventoryOrder(t *testing.T) {
	inv := &inventory.Inventory{Hosts: []*inventory.Host{
		{Name: "a", Address: "10.0.0.1", Roles: []inventory.Role{inventory.RoleControlPlane}},
		{Name: "w", Address: "10.0.0.9", Roles: []inventory.Role{inventory.RoleWorker}},
		{Name: "b", Address: "10.0.0.2", InternalAddress: "192.168.0.2", Roles: []inventory.Role{inventory.RoleControlPlane}},
	}}
	first := EtcdParamsFor(inv, inv.Hosts[0])
	if first.InitialCluster != "a=https://10.0.0.1:2380" || first.InitialClusterState != "new" {
		t.Errorf("first member: %+v", first)
	}
	second := EtcdParamsFor(inv, inv.Hosts[2])
	if second.InitialCluster != "a=https://10.0.0.1:2380,b=https://192.168.0.2:2380" || second.InitialClusterState != "existing" {
		t.Errorf("joining member: %+v", second)
	}
}

func TestNodePatchAddsOnlyWhatIsMissing(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"a": "1"}},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: "x", Effect: corev1.TaintEffectNoSchedule}}}}
	if _, changed := nodePatch(node, map[string]string{"a": "1"}, []corev1.Taint{{Key: "x", Effect: corev1.TaintEffectNoSchedule}}); changed {
		t.Error("patch for a node that already matches")
	}
	patch, changed := nodePatch(node, map[string]string{"a": "1", "b": ""}, []corev1.Taint{{Key: "y", Effect: corev1.TaintEffectNoExecute}})
	if !changed {
		t.Fatal("no patch")
	}
	var got struct {
		Metadata struct{ Labels map[string]string }
		Spec     struct{ Taints []corev1.Taint }
	}
	if err := json.Unmarshal(patch, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Metadata.Labels) != 1 || got.Metadata.Labels["b"] != "" || len(got.Spec.Taints) != 2 {
		t.Errorf("patch %s", patch)
	}
}

func TestImageTagsFromDockerSave(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	manifest := `[{"Config":"c.json","RepoTags":["registry.k8s.io/pause:3.10.2"],"Layers":[]}]`
	tw.WriteHeader(&tar.Header{Name: "manifest.json", Mode: 0o644, Size: int64(len(manifest))})
	tw.Write([]byte(manifest))
	tw.Close()
	p := filepath.Join(t.TempDir(), "pause.tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	tags, err := imageTags(p)
	if err != nil || strings.Join(tags, ",") != "registry.k8s.io/pause:3.10.2" {
		t.Fatalf("tags %v, err %v", tags, err)
	}
	empty := filepath.Join(t.TempDir(), "empty.tar")
	os.WriteFile(empty, make([]byte, 1024), 0o644)
	if _, err := imageTags(empty); err == nil {
		t.Error("no error for a tarball without image names")
	}
}

func TestWriteLocalTreeIsAtomicAndKeepsModes(t *testing.T) {
	root := t.TempDir()
	files := []struct {
		path string
		mode os.FileMode
	}{{"/etc/kubernetes/pki/ca.key", 0o600}, {"/etc/kubernetes/pki/ca.crt", 0o644}}
	var in []pkiFile
	for _, f := range files {
		in = append(in, pkiFile{Path: f.path, Mode: f.mode, Data: []byte(f.path)})
	}
	if err := writeLocalTree(root, in); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		st, err := os.Stat(filepath.Join(root, f.path))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != f.mode {
			t.Errorf("%s mode %v; want %v", f.path, st.Mode().Perm(), f.mode)
		}
	}
	left, _ := filepath.Glob(filepath.Join(root, "etc/kubernetes/pki/.*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestArtifactDigestCacheFollowsTheFile(t *testing.T) {
	state := t.TempDir()
	p := filepath.Join(t.TempDir(), "kubelet")
	if err := os.WriteFile(p, []byte("one"), 0o755); err != nil {
		t.Fatal(err)
	}
	env := &Env{StateDir: state}
	time.Sleep(racyWindow + 100*time.Millisecond) // a file younger than that is never cached
	a, err := env.hashArtifact(p, false)
	if err != nil {
		t.Fatal(err)
	}
	cached, _ := filepath.Glob(filepath.Join(state, "cache", "sums", "*"))
	if len(cached) != 1 {
		t.Fatalf("cache entries %v; want 1", cached)
	}
	b, err := env.hashArtifact(p, false)
	if err != nil || b.sha256 != a.sha256 {
		t.Fatalf("cached digest %v, err %v", b, err)
	}
	// Same size, new content: the ctime moves, the cache must not answer.
	if err := os.WriteFile(p, []byte("two"), 0o755); err != nil {
		t.Fatal(err)
	}
	c, err := env.hashArtifact(p, false)
	if err != nil {
		t.Fatal(err)
	}
	if c.sha256 == a.sha256 {
		t.Error("the cache hid a change of content")
	}
}

func TestReadManifestDecodesEveryDocument(t *testing.T) {
	p := filepath.Join(t.TempDir(), "cni.yaml")
	doc := "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a, namespace: kube-system}\n---\n# only a comment\n---\n" +
		"apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: b, namespace: kube-system}\n" +
		"- apiVersion: apps/v1\n  kind: DaemonSet\n  metadata: {name: c, namespace: kube-system}\n"
	if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	objs, err := readManifest(p)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, o := range objs {
		kinds = append(kinds, o.GetObjectKind().GroupVersionKind().Kind)
	}
	if strings.Join(kinds, ",") != "ServiceAccount,ConfigMap,DaemonSet" {
		t.Errorf("kinds %v", kinds)
	}
	os.WriteFile(p, []byte("metadata: {name: x}\n"), 0o644)
	if _, err := readManifest(p); err == nil || !strings.Contains(err.Error(), "document 1: no apiVersion or kind") {
		t.Errorf("err = %v", err)
	}
}

func TestNodeReadyWaitsForTheLifecycleTaintsToGo(t *testing.T) {
	ready := corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue}
	for _, tc := range []struct {
		name  string
		node  corev1.Node
		ready bool
	}{
		{"ready", corev1.Node{Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{ready}}}, true},
		{"no condition yet", corev1.Node{}, false},
		{"ready but still tainted unreachable", corev1.Node{
			Spec:   corev1.NodeSpec{Taints: []corev1.Taint{{Key: corev1.TaintNodeUnreachable, Effect: corev1.TaintEffectNoExecute}}},
			Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{ready}}}, false},
		{"control-plane taint is fine", corev1.Node{
			Spec:   corev1.NodeSpec{Taints: []corev1.Taint{{Key: "node-role.kubernetes.io/control-plane", Effect: corev1.TaintEffectNoSchedule}}},
			Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{ready}}}, true},
	} {
		if got := NodeReady(&tc.node); got != tc.ready {
			t.Errorf("%s: NodeReady = %v", tc.name, got)
		}
	}
}
