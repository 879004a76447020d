//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeforge/kubeforge/ssh"
	"github.com/kubeforge/kubeforge/tasks"
	"github.com/kubeforge/kubeforge/test/harnesslib"
)

// kubeforgeBin is the binary under test, built by `make build`
// (KUBEFORGE_BIN names another, so a long matrix can run beside rebuilds).
func kubeforgeBin(t testing.TB) string {
	t.Helper()
	p := os.Getenv("KUBEFORGE_BIN")
	if p == "" {
		p = filepath.Join(RepoRoot(t), "bin", "kubeforge")
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s not built (run `make build`): %v", p, err)
	}
	return p
}

// kubeforge runs the real CLI and returns its exit code and combined output.
func kubeforge(ctx context.Context, t testing.TB, args ...string) (int, string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, kubeforgeBin(t), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	t.Logf("kubeforge %s (%s):\n%s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond), out.String())
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		t.Fatalf("run kubeforge: %v", err)
	}
	return 0, out.String()
}

// mustUp runs `kubeforge up` and fails the test unless it succeeds.
func mustUp(ctx context.Context, t testing.TB, c *harnesslib.Cluster, state string, extra ...string) string {
	t.Helper()
	code, out := kubeforge(ctx, t, append([]string{"up", "-i", c.Inventory, "--state-dir", state}, extra...)...)
	if code != 0 {
		t.Fatalf("kubeforge up exited %d", code)
	}
	return out
}

// clientFor loads the admin kubeconfig kubeforge wrote. The harness network is
// reachable from this machine, so the test talks to the API directly.
func clientFor(t testing.TB, state string) *kubernetes.Clientset {
	t.Helper()
	kc, err := kubernetes.NewForConfig(restConfig(t, state))
	if err != nil {
		t.Fatal(err)
	}
	return kc
}

func kubectl(ctx context.Context, t testing.TB, state string, args ...string) string {
	t.Helper()
	bin := filepath.Join(ArtifactsDir(t), "bin", "kubectl")
	cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig", filepath.Join(state, "admin.conf")}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func startCluster(ctx context.Context, t *testing.T, prefix, subnet string, nodes, cps int, opts ...func(*harnesslib.Options)) (*harnesslib.Cluster, string) {
	t.Helper()
	return startClusterAs(ctx, t, prefix, subnet, nodes, cps, "root", opts...)
}

// startClusterAs starts fresh harness hosts whose inventory logs in as user.
func startClusterAs(ctx context.Context, t *testing.T, prefix, subnet string, nodes, cps int, user string, opts ...func(*harnesslib.Options)) (*harnesslib.Cluster, string) {
	t.Helper()
	// Start from new hosts: remove what an earlier, interrupted run of this test left.
	if err := harnesslib.DownInstance(ctx, t.TempDir(), prefix); err != nil {
		t.Fatalf("remove an earlier harness %s: %v", prefix, err)
	}
	o := harnesslib.Options{Nodes: nodes, ControlPlanes: cps, NamePrefix: prefix, Subnet: subnet, Artifacts: ArtifactsDir(t), User: user}
	for _, f := range opts {
		f(&o)
	}
	c := StartHarness(ctx, t, o)
	return c, filepath.Join(c.Dir, "state")
}

// nodeState is what must not change on a converged node: checksums of every
// file kubeforge manages and the kubelet's start time.
func nodeState(ctx context.Context, t testing.TB, c *harnesslib.Cluster, n harnesslib.Node) string {
	t.Helper()
	return MustSSH(ctx, t, c, n, "root", `find /etc/kubernetes /var/lib/kubelet/config.yaml /var/lib/kubelet/kubeadm-flags.env /usr/lib/systemd/system/kubelet.service* /etc/cni/net.d /etc/kubeforge /etc/containerd /etc/systemd/system/containerd.service /usr/local/bin /usr/local/sbin /opt/cni/bin -type f 2>/dev/null | sort | xargs sha256sum; systemctl show kubelet -p ExecMainStartTimestamp -p NRestarts; systemctl show containerd -p ExecMainStartTimestamp`)
}

func waitPodsRunning(ctx context.Context, t testing.TB, kc kubernetes.Interface, ns, selector string, n int) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, time.Second, 4*time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := kc.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, nil
		}
		running := 0
		for _, p := range l.Items {
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		pods = l.Items
		return running >= n, nil
	})
	if err != nil {
		var states []string
		for _, p := range pods {
			states = append(states, fmt.Sprintf("%s on %s: %s %s %s %v", p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.Reason, p.Status.Message, p.Status.Conditions))
		}
		t.Fatalf("pods %s in %s not running: %v\n%s", selector, ns, err, strings.Join(states, "\n"))
	}
	return pods
}

// TestUpOneControlPlaneTwoWorkers is the main job: a 1+2 cluster from nothing,
// checked as a user would, then a second up that must change nothing.
func TestUpOneControlPlaneTwoWorkers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	// node4 is not in the inventory: it joins with plain `kubeadm join` at the end (a host with Debian's
	// containerd, kubeforge's kubelet binaries and nothing else).
	all, state := startCluster(ctx, t, "kfup", "172.31.248.0/24", 4, 1, func(o *harnesslib.Options) {
		o.NodeImages = map[string]string{"node4": harnesslib.ContainerdImage}
	})
	cl := *all
	cl.Nodes = all.Nodes[:3]
	cl.Inventory = subsetInventory(t, all, "node1", "node2", "node3")
	c := &cl

	// An unprivileged local user on the control plane and on a worker watches every file the first up writes.
	stopCP, stopW := watchKeys(ctx, t, c, c.Nodes[0], "the first up"), watchKeys(ctx, t, c, c.Nodes[1], "the first up")
	start := time.Now()
	out := mustUp(ctx, t, c, state, "--accept-new-host-keys=false")
	t.Logf("first up: %s", time.Since(start).Round(time.Millisecond))
	stopCP()
	stopW()
	if !strings.Contains(out, "The cluster is up") {
		t.Errorf("up did not say how to use the cluster:\n%s", out)
	}

	kc := clientFor(t, state)
	nodes, err := kc.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != 3 {
		t.Fatalf("%d nodes; want 3", len(nodes.Items))
	}
	for _, n := range nodes.Items {
		ready := false
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				ready = true
			}
		}
		if !ready {
			t.Errorf("node %s not Ready", n.Name)
		}
		_, isCP := n.Labels["node-role.kubernetes.io/control-plane"]
		if isCP != (n.Name == "node1") {
			t.Errorf("node %s control-plane label %v", n.Name, isCP)
		}
	}
	// The real kubectl agrees.
	if got := kubectl(ctx, t, state, "get", "nodes", "--no-headers"); strings.Count(got, " Ready ") != 3 {
		t.Errorf("kubectl get nodes:\n%s", got)
	}

	t.Run("artifacts went host to host; nothing is left serving", func(t *testing.T) {
		checkPeerDistribution(ctx, t, c, state, out, "node1", "node2", "node3")
	})

	t.Run("files and modes on the hosts are kubeadm's", func(t *testing.T) {
		cp, _ := c.Node("node1")
		w, _ := c.Node("node2")
		modes := MustSSH(ctx, t, c, cp, "root", "stat -c '%a %n' /etc/kubernetes/pki/*.key /etc/kubernetes/pki/etcd/*.key /etc/kubernetes/admin.conf /etc/kubernetes/pki/ca.crt /etc/kubernetes/manifests/*.yaml")
		for _, l := range strings.Split(strings.TrimSpace(modes), "\n") {
			mode, path, _ := strings.Cut(l, " ")
			want := "600"
			if strings.HasSuffix(path, ".crt") {
				want = "644"
			}
			if mode != want {
				t.Errorf("%s has mode %s; want %s", path, mode, want)
			}
		}
		keys := MustSSH(ctx, t, c, w, "root", "find /etc/kubernetes -name '*.key' | wc -l; ls /etc/kubernetes/pki")
		if strings.TrimSpace(strings.SplitN(keys, "\n", 2)[0]) != "0" || !strings.Contains(keys, "ca.crt") {
			t.Errorf("worker has key material or lacks ca.crt:\n%s", keys)
		}
		// Its kubelet got its client certificate through the CSR API.
		MustSSH(ctx, t, c, w, "root", "test -s /var/lib/kubelet/pki/kubelet-client-current.pem")
	})

	t.Run("kubeadm and kubeforge read the same PKI", func(t *testing.T) {
		cp, _ := c.Node("node1")
		// kubeadm itself, on the control plane, reads kubeforge's layout.
		out := MustSSH(ctx, t, c, cp, "root", "kubeadm certs check-expiration 2>&1")
		for _, want := range []string{"apiserver ", "apiserver-etcd-client", "front-proxy-client", "etcd-server", "admin.conf", "super-admin.conf", "CERTIFICATE AUTHORITY"} {
			if !strings.Contains(out, want) {
				t.Errorf("kubeadm certs check-expiration lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, "MISSING") || strings.Contains(out, "invalid") {
			t.Errorf("kubeadm finds missing or invalid certificates:\n%s", out)
		}
		cm := kubectl(ctx, t, state, "-n", "kube-system", "get", "cm", "kubeadm-config", "-o", "jsonpath={.data.ClusterConfiguration}")
		if !strings.Contains(cm, "kubeadm.k8s.io/v1beta4") {
			t.Errorf("kubeadm-config ConfigMap: %s", cm)
		}
		code, table := kubeforge(ctx, t, "certs", "check-expiration", "--hosts", "-i", c.Inventory, "--state-dir", state)
		if code != 0 || !strings.Contains(table, "node1") || !strings.Contains(table, "apiserver-kubelet-client") || !strings.Contains(table, "node2") {
			t.Errorf("certs check-expiration --hosts: exit %d", code)
		}
	})

	t.Run("the runtime is the bundle's", func(t *testing.T) {
		for _, n := range c.Nodes {
			checkBundleRuntime(ctx, t, c, n)
		}
	})

	t.Run("pods run on every worker, DNS and a ClusterIP service work across nodes", func(t *testing.T) {
		checkPodsDNSAndService(ctx, t, kc, state, "node2", "node3")
	})

	t.Run("second up changes nothing", func(t *testing.T) {
		before := map[string]string{}
		for _, n := range c.Nodes {
			before[n.Name] = nodeState(ctx, t, c, n)
		}
		start := time.Now()
		out := mustUp(ctx, t, c, state)
		t.Logf("second up: %s", time.Since(start).Round(time.Millisecond))
		if !strings.Contains(out, "No changes: every host already matched the inventory.") {
			t.Errorf("second up reported changes:\n%s", out)
		}
		for _, n := range c.Nodes {
			if after := nodeState(ctx, t, c, n); after != before[n.Name] {
				t.Errorf("%s changed:\nbefore %s\nafter  %s", n.Name, before[n.Name], after)
			}
		}
	})

	t.Run("kube-proxy restarts when the cluster says its pods started with another ConfigMap", func(t *testing.T) {
		checkKubeProxyRestartRule(ctx, t, c, kc, state)
	})

	t.Run("the facts read the kubelet's version from its record while the binary is the one recorded", func(t *testing.T) {
		checkKubeletVersionRecord(ctx, t, c, state, c.Nodes[1])
	})

	t.Run("a host joined with plain kubeadm join starts (the kubelet-config ConfigMap fits cgroup v1)", func(t *testing.T) {
		kubeadmJoin(ctx, t, all, state, "node4")
	})
}

// checkKubeletVersionRecord: after up, n holds the record of its kubelet's
// --version keyed by the binary's size, ctime and inode. The facts take the
// version from it while the key matches (a forged version shows), and ask the
// binary when it does not (a forged key). The record is put back after.
func checkKubeletVersionRecord(ctx context.Context, t *testing.T, c *harnesslib.Cluster, state string, n harnesslib.Node) {
	t.Helper()
	const rec = "/var/lib/kubeforge/kubelet.version"
	got := MustSSH(ctx, t, c, n, "root", "cat "+rec+"; stat -c '%s %.9Z %i' /usr/bin/kubelet; /usr/bin/kubelet --version")
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if len(lines) != 4 || lines[0] != lines[2] || lines[1] != lines[3] || !strings.HasPrefix(lines[1], "Kubernetes v") {
		t.Fatalf("%s: %s is not the binary's key and version:\n%s", n.Name, rec, got)
	}
	defer MustSSH(ctx, t, c, n, "root", "printf '%s\\n%s\\n' "+ssh.Quote(lines[0])+" "+ssh.Quote(lines[1])+" > "+rec)
	factsSay := func(key, version string) string {
		t.Helper()
		MustSSH(ctx, t, c, n, "root", "printf '%s\\n%s\\n' "+ssh.Quote(key)+" "+ssh.Quote(version)+" > "+rec)
		log := filepath.Join(state, "logs", n.Name+".log")
		before, _ := os.ReadFile(log)
		if code, out := kubeforge(ctx, t, "preflight", "-i", c.Inventory, "--state-dir", state); code != 0 {
			t.Fatalf("preflight exited %d:\n%s", code, out)
		}
		after, err := os.ReadFile(log)
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`msg=facts .* kubelet=(\S+)`).FindAllStringSubmatch(string(after[len(before):]), -1)
		if len(m) == 0 {
			t.Fatalf("%s's log of the preflight has no facts record", n.Name)
		}
		return m[len(m)-1][1]
	}
	if v := factsSay(lines[0], "Kubernetes v1.99.0-recorded"); v != "v1.99.0-recorded" {
		t.Errorf("with the record's key matching the binary, the facts say kubelet %s; want the recorded v1.99.0-recorded", v)
	}
	if v, want := factsSay("1 2.000000000 3", "Kubernetes v1.99.0-recorded"), strings.TrimPrefix(lines[1], "Kubernetes "); v != want {
		t.Errorf("with a record of another binary, the facts say kubelet %s; want the binary's own %s", v, want)
	}
}

// checkPodsDNSAndService runs a server pod on serverNode behind a ClusterIP Service, and a client pod on clientNode
// that resolves the Service's name and kubernetes.default through CoreDNS and calls both.
func checkPodsDNSAndService(ctx context.Context, t *testing.T, kc *kubernetes.Clientset, state, serverNode, clientNode string) {
	t.Helper()
	images := map[string]string{}
	for _, l := range strings.Fields(kubectl(ctx, t, state, "get", "pods", "-n", "kube-system", "-o", "jsonpath={.items[*].spec.containers[*].image}")) {
		images[strings.SplitN(strings.TrimPrefix(l, "registry.k8s.io/"), ":", 2)[0]] = l
	}
	etcdImage := images["etcd"]
	toolImage := images["kube-apiserver"]
	if etcdImage == "" || toolImage == "" {
		t.Fatalf("control-plane images not found: %v", images)
	}
	// A server (etcd's plain HTTP /health) pinned to serverNode, behind a ClusterIP Service.
	server := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			NodeName: serverNode,
			Containers: []corev1.Container{{Name: "web", Image: etcdImage, ImagePullPolicy: corev1.PullIfNotPresent,
				Command: []string{"etcd", "--data-dir=/tmp/etcd", "--listen-client-urls=http://0.0.0.0:2379",
					"--advertise-client-urls=http://127.0.0.1:2379", "--listen-peer-urls=http://127.0.0.1:2380"}}},
		},
	}
	if _, err := kc.CoreV1().Pods("default").Create(ctx, server, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstrFromInt(2379)}}},
	}
	if _, err := kc.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPodsRunning(ctx, t, kc, "default", "app=web", 1)
	waitPodsRunning(ctx, t, kc, "kube-system", "k8s-app=kube-dns", 1)

	// A client on clientNode: resolves both names through CoreDNS and calls the Service.
	script := []string{"kubectl", "--server=http://web.default.svc.cluster.local", "get", "--raw", "/health"}
	client := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "client"},
		Spec: corev1.PodSpec{
			NodeName:      clientNode,
			RestartPolicy: corev1.RestartPolicyOnFailure,
			Containers: []corev1.Container{
				{Name: "svc", Image: toolImage, ImagePullPolicy: corev1.PullIfNotPresent, Command: script},
				// In-cluster config (service account token and CA), with the API server
				// named by its Service DNS name: resolved by CoreDNS, verified by TLS.
				{Name: "apiserver", Image: toolImage, ImagePullPolicy: corev1.PullIfNotPresent,
					Env:     []corev1.EnvVar{{Name: "KUBERNETES_SERVICE_HOST", Value: "kubernetes.default.svc.cluster.local"}},
					Command: []string{"kubectl", "get", "--raw", "/healthz"}},
			},
		},
	}
	if _, err := kc.CoreV1().Pods("default").Create(ctx, client, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := kc.CoreV1().Pods("default").Get(ctx, "client", metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodSucceeded, nil
	})
	svcLog := kubectl(ctx, t, state, "logs", "client", "-c", "svc")
	apiLog := kubectl(ctx, t, state, "logs", "client", "-c", "apiserver")
	if err != nil {
		t.Fatalf("client pod did not succeed: %v\nsvc: %s\napiserver: %s\n%s", err, svcLog, apiLog, kubectl(ctx, t, state, "describe", "pod", "client"))
	}
	if !strings.Contains(svcLog, `"health":"true"`) || strings.TrimSpace(apiLog) != "ok" {
		t.Errorf("service answer %q, kubernetes.default answer %q", svcLog, apiLog)
	}
}

// checkBundleRuntime checks that n runs the artifacts' runtime, as kubeforge installed it.
func checkBundleRuntime(ctx context.Context, t *testing.T, c *harnesslib.Cluster, n harnesslib.Node) {
	t.Helper()
	out := MustSSH(ctx, t, c, n, "root", "containerd --version; runc --version | head -1; systemctl is-active containerd; head -1 /var/lib/kubeforge/runtime; ls /opt/cni/bin | wc -l")
	for _, want := range []string{"containerd/v2 v2.4.2", "runc version 1.5.2", "\nactive\n", "containerd v2.4.2, runc v1.5.2, CNI plugins v1.9.1"} {
		if !strings.Contains(out, want) {
			t.Errorf("%s: runtime lacks %q:\n%s", n.Name, want, out)
		}
	}
}

// kubeadmJoin joins the harness host name (with a runtime, not in the inventory) to the cluster with kubeadm's
// own join, as a user would add a node by hand: kubeforge's kubelet and kubeadm binaries and kubelet unit, the
// artifacts' images, a token from `kubeadm token create` on the control plane. kubeadm configures the kubelet
// from the cluster's kubelet-config ConfigMap only, so on this cgroup v1 host the kubelet starts only if the
// ConfigMap carries failCgroupV1: false. The host has no pod network config, so its Node stays NotReady.
func kubeadmJoin(ctx context.Context, t *testing.T, c *harnesslib.Cluster, state, name string) {
	t.Helper()
	n, _ := c.Node(name)
	cp, _ := c.Node("node1")
	art := ArtifactsDir(t)
	for _, b := range []string{"kubelet", "kubeadm"} {
		if err := Upload(ctx, c, n, filepath.Join(art, "bin", b), "/usr/bin/"+b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"/usr/lib/systemd/system/kubelet.service", "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf"} {
		if err := WriteFile(ctx, c, n, f, []byte(MustSSH(ctx, t, c, cp, "root", "cat "+f)+"\n")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ImportImages(ctx, c, n, art); err != nil {
		t.Fatal(err)
	}
	join := MustSSH(ctx, t, c, cp, "root", "kubeadm token create --ttl 10m --print-join-command --kubeconfig /etc/kubernetes/admin.conf")
	if !strings.HasPrefix(join, "kubeadm join ") {
		t.Fatalf("kubeadm token create printed %q", join)
	}
	// The harness hosts miss what kubeadm's system checks expect of a VM (kernel config, modules): they are
	// about the host, not the cluster's config, so they are ignored.
	out, err := c.SSH(ctx, n, "root", "systemctl daemon-reload && systemctl enable -q kubelet && "+join+" --ignore-preflight-errors=all 2>&1", nil)
	if err != nil {
		t.Fatalf("kubeadm join on %s: %v\n%s\nkubelet: %s", name, err, out,
			MustSSH(ctx, t, c, n, "root", "journalctl -u kubelet -n 20 --no-pager -o cat 2>&1 | tail -20; true"))
	}
	cfg := MustSSH(ctx, t, c, n, "root", "grep -E 'failCgroupV1|cgroupDriver' /var/lib/kubelet/config.yaml; systemctl is-active kubelet")
	if !strings.Contains(cfg, "failCgroupV1: false") || !strings.HasSuffix(cfg, "active") {
		t.Errorf("%s's kubelet after kubeadm join:\n%s", name, cfg)
	}
	kc := clientFor(t, state)
	err = wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := kc.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Errorf("no Node %s after kubeadm join: %v", name, err)
	}
}

// checkPeerDistribution checks, after a first `up` of a seed and its
// workers, that the seed got the artifacts from the workstation and served
// them, that the workers fetched them from it (verified, nothing uploaded
// to them but their own files), and that no peer server process or
// listener is left on any host.
func checkPeerDistribution(ctx context.Context, t *testing.T, c *harnesslib.Cluster, state, out, seed string, fetchers ...string) {
	t.Helper()
	if !strings.Contains(out, "fetched from peers, 0 fallbacks") {
		t.Errorf("up's summary does not report a peer distribution without fallbacks:\n%s", out)
	}
	read := func(host string) string {
		b, err := os.ReadFile(filepath.Join(state, "logs", host+".log"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if l := read(seed); !strings.Contains(l, "serving artifacts to peers") || !strings.Contains(l, "stopped serving artifacts") {
		t.Errorf("%s's log does not show it serving and stopping", seed)
	}
	for _, h := range fetchers {
		l := read(h)
		if !strings.Contains(l, "fetched from a peer") || !strings.Contains(l, "path=/usr/bin/kubelet") {
			t.Errorf("%s's log does not show kubelet fetched from a peer", h)
		}
		if strings.Contains(l, `msg=uploaded path=/usr/bin/kubelet`) {
			t.Errorf("%s got kubelet from the workstation too", h)
		}
	}
	for _, n := range c.Nodes {
		got := MustSSH(ctx, t, c, n, "root", "ss -Hltnp | grep -c kubeforge || true; pgrep -fc '[p]eer-serve' || true; ls -a /usr/bin /var/lib/kubeforge/artifacts/images | grep -c kubeforge- || true")
		if f := strings.Fields(got); len(f) != 3 || f[0] != "0" || f[1] != "0" || f[2] != "0" {
			t.Errorf("%s after up: listening sockets of kubeforge, peer-serve processes, temp files: %q; want 0 0 0\n%s", n.Name, got,
				MustSSH(ctx, t, c, n, "root", "ss -Hltnp; ps -eo pid,args | grep -v ']$'"))
		}
	}
}

// checkKubeProxyRestartRule: up records on kube-proxy's DaemonSet the digest
// of the ConfigMap its pods started with (a new cluster's without restarting
// them). A DaemonSet recording another digest is what a run killed between
// applying a new ConfigMap and restarting kube-proxy leaves: the next up
// restarts kube-proxy's pods, records the digest, and the one after changes
// nothing.
func checkKubeProxyRestartRule(ctx context.Context, t *testing.T, c *harnesslib.Cluster, kc kubernetes.Interface, state string) {
	t.Helper()
	const key = "kubeforge.io/kube-proxy-config"
	dss := kc.AppsV1().DaemonSets("kube-system")
	ds, err := dss.Get(ctx, "kube-proxy", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	recorded := ds.Annotations[key]
	if len(recorded) != 64 {
		t.Fatalf("kube-proxy's DaemonSet records %q as its pods' ConfigMap; want a sha256", recorded)
	}
	if at := ds.Spec.Template.Annotations["kubectl.kubernetes.io/restartedAt"]; at != "" {
		t.Errorf("kube-proxy was restarted (%s) on a new cluster whose pods started with its ConfigMap", at)
	}
	pods := func() map[string]bool {
		l, err := kc.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=kube-proxy"})
		if err != nil {
			t.Fatal(err)
		}
		uids := map[string]bool{}
		for _, p := range l.Items {
			uids[string(p.UID)] = true
		}
		return uids
	}
	before := pods()
	patch := `{"metadata":{"annotations":{"` + key + `":"the digest of a ConfigMap applied by a run killed before the restart"}}}`
	if _, err := dss.Patch(ctx, "kube-proxy", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	mustUp(ctx, t, c, state)
	restarted := false
	for _, chs := range lastChanges(t, state) {
		for _, ch := range chs {
			restarted = restarted || ch.Kind == tasks.ChangeRestart && strings.HasPrefix(ch.What, "kube-proxy (")
		}
	}
	if !restarted {
		t.Errorf("up did not restart kube-proxy, whose DaemonSet said its pods started with another ConfigMap: %v", lastChanges(t, state))
	}
	if ds, err = dss.Get(ctx, "kube-proxy", metav1.GetOptions{}); err != nil || ds.Annotations[key] != recorded {
		t.Errorf("after the restart the DaemonSet records %q (%v); want the ConfigMap's %s", ds.Annotations[key], err, recorded)
	}
	if err := wait.PollUntilContextTimeout(ctx, 2*time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		d, err := dss.Get(ctx, "kube-proxy", metav1.GetOptions{})
		if err != nil || d.Status.ObservedGeneration != d.Generation || d.Status.UpdatedNumberScheduled != d.Status.DesiredNumberScheduled ||
			d.Status.NumberAvailable != d.Status.DesiredNumberScheduled {
			return false, nil
		}
		for uid := range pods() {
			if before[uid] {
				return false, nil
			}
		}
		return true, nil
	}); err != nil {
		t.Errorf("kube-proxy's pods were not all replaced and available within 3m: %v", err)
	}
	if out := mustUp(ctx, t, c, state); !strings.Contains(out, "No changes") {
		t.Errorf("the up after kube-proxy's restart reported changes:\n%s", out)
	}
}
