//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeforge/kubeforge/test/harnesslib"
)

// proxyView is what a worker shows of the node-local API proxy: its
// kubelet's server, the proxy unit's state, the upstreams it is given.
func proxyView(ctx context.Context, t *testing.T, c *harnesslib.Cluster, n harnesslib.Node) (server, active string, upstreams []string) {
	t.Helper()
	out := MustSSH(ctx, t, c, n, "root", `awk '$1=="server:" {print "server", $2}' /etc/kubernetes/kubelet.conf; echo "active $(systemctl is-active kubeforge-apiproxy)"; grep -v '^#' /etc/kubeforge/apiproxy-upstreams 2>/dev/null | sed 's/^/upstream /'`)
	for _, line := range strings.Split(out, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch k {
		case "server":
			server = v
		case "active":
			active = v
		case "upstream":
			upstreams = append(upstreams, v)
		}
	}
	sort.Strings(upstreams)
	return server, active, upstreams
}

func checkProxies(ctx context.Context, t *testing.T, c *harnesslib.Cluster, workers []harnesslib.Node, cps ...harnesslib.Node) {
	t.Helper()
	var want []string
	for _, cp := range cps {
		want = append(want, cp.Address+":6443")
	}
	sort.Strings(want)
	for _, w := range workers {
		server, active, ups := proxyView(ctx, t, c, w)
		if server != "https://127.0.0.1:6443" || active != "active" || strings.Join(ups, ",") != strings.Join(want, ",") {
			t.Errorf("%s: kubelet server %q, proxy %q, upstreams %v; want the proxy active forwarding to %v", w.Name, server, active, ups, want)
		}
	}
}

// serviceAnswers connects n times from node to the kubernetes Service's
// cluster IP (kube-proxy's rules to the live API servers).
func serviceAnswers(ctx context.Context, c *harnesslib.Cluster, node harnesslib.Node, n int) error {
	for i := range n {
		if _, err := c.SSH(ctx, node, "root", "timeout 3 bash -c 'exec 3<>/dev/tcp/10.96.0.1/443'", nil); err != nil {
			return fmt.Errorf("connect %d of %d to the kubernetes Service from %s: %w", i+1, n, node.Name, err)
		}
	}
	return nil
}

// checkServiceAnswers fails the test when serviceAnswers does, and logs what
// decides where the Service's connections go: its EndpointSlices as the API
// has them, the worker's NAT rules for it, and the worker's proxy and
// kube-proxy logs. (CI on 2026-12-03 saw "No route to host" once, 2 min into
// node1's loss, with nothing else logged.)
func checkServiceAnswers(ctx context.Context, t *testing.T, c *harnesslib.Cluster, state string, w harnesslib.Node, n int) {
	t.Helper()
	err := serviceAnswers(ctx, c, w, n)
	if err == nil {
		return
	}
	t.Error(err)
	eps, lerr := clientFor(t, state).DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=kubernetes"})
	if lerr != nil {
		t.Logf("the kubernetes Service's EndpointSlices: %v", lerr)
	} else {
		for _, es := range eps.Items {
			for _, e := range es.Endpoints {
				t.Logf("EndpointSlice %s: %v ready=%v", es.Name, e.Addresses, e.Conditions.Ready != nil && *e.Conditions.Ready)
			}
		}
	}
	out, _ := c.SSH(ctx, w, "root", "iptables-save -t nat | grep -F 'default/kubernetes:https'; journalctl -u kubeforge-apiproxy --since -3min --no-pager -o short-iso | tail -20; crictl logs --tail 30 $(crictl ps -q --name kube-proxy) 2>&1", nil)
	t.Logf("on %s: the Service's NAT rules, the proxy's and kube-proxy's last lines:\n%s", w.Name, out)
}

// TestHAWithoutALoadBalancer: 3 control planes and 2 workers with no
// controlPlaneEndpoint. Each worker's kubelet and kube-proxy reach the API
// through the node-local proxy. The first control plane (the one the cluster
// was made with) is stopped for two minutes: the other nodes stay Ready, a new
// Deployment's pods run, the kubernetes Service answers, scale adds a worker;
// started again, up converges. The proxies follow scale --remove and scale of
// a control plane without restarting any kubelet, and a hung API server is
// taken out of rotation.
func TestHAWithoutALoadBalancer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	c, state := startCluster(ctx, t, "kfna", "172.31.239.0/24", 6, 3)
	cp1, cp2, cp3, w4, w5, w6 := c.Nodes[0], c.Nodes[1], c.Nodes[2], c.Nodes[3], c.Nodes[4], c.Nodes[5]
	// One control plane and a worker first: the worker talks to node1 directly.
	if code, _ := kubeforge(ctx, t, "up", "-i", subsetInventory(t, c, "node1", "node4"), "--state-dir", state); code != 0 {
		t.Fatalf("up with one control plane exited %d", code)
	}
	if server, active, _ := proxyView(ctx, t, c, w4); server != "https://"+cp1.Address+":6443" || active == "active" {
		t.Errorf("one control plane: node4's kubelet server %q, proxy %q; want node1 and no proxy", server, active)
	}
	// scale adds the second and third control planes and a worker at once: etcd
	// ends with 3 voting members, every API server answers, and the workers
	// (the one already there too) move to the node-local proxy, kube-proxy too.
	five := subsetInventory(t, c, "node1", "node2", "node3", "node4", "node5")
	start := time.Now()
	if code, _ := kubeforge(ctx, t, "scale", "-i", five, "--state-dir", state); code != 0 {
		t.Fatalf("scale +2 control planes +1 worker exited %d", code)
	}
	t.Logf("scale +2 control planes +1 worker: %s", time.Since(start).Round(time.Millisecond))
	checkThreeControlPlanes(ctx, t, state, cp1, c.Nodes[:3])
	checkProxies(ctx, t, c, []harnesslib.Node{w4, w5}, cp1, cp2, cp3)
	checkServiceAnswers(ctx, t, c, state, w4, 5)
	checkNodesWhole(ctx, t, state, c.Nodes[:5], 3)
	if kp := kubectl(ctx, t, state, "-n", "kube-system", "get", "configmap", "kube-proxy", "-o", "jsonpath={.data.kubeconfig\\.conf}"); !strings.Contains(kp, "server: https://127.0.0.1:6443") {
		t.Errorf("kube-proxy's kubeconfig does not name 127.0.0.1:6443:\n%s", kp)
	}

	// node1, the control plane the cluster was made with, down for two minutes; scale adds node6 meanwhile.
	survivesLoss(ctx, t, c, state, cp1, cp2, "ha1", func() {
		start := time.Now()
		code, out := kubeforge(ctx, t, "scale", "-i", c.Inventory, "--state-dir", state)
		t.Logf("scale +1 worker with node1 down: %s", time.Since(start).Round(time.Millisecond))
		if code != 0 {
			t.Fatalf("scale with node1 down exited %d", code)
		}
		if !strings.Contains(out, "node1 is down") {
			t.Errorf("scale did not report node1 down:\n%s", out)
		}
	})
	checkProxies(ctx, t, c, []harnesslib.Node{w4, w5, w6}, cp1, cp2, cp3)
	// In a second run, the second control plane.
	survivesLoss(ctx, t, c, state, cp2, cp3, "ha2", nil)
	kc := clientFor(t, state)

	// The proxies follow the control-plane set with no kubelet restart.
	before := map[string]string{}
	for _, w := range []harnesslib.Node{w4, w5, w6} {
		before[w.Name] = kubeletState(ctx, t, c, w)
	}
	if code, _ := kubeforge(ctx, t, "scale", "-i", c.Inventory, "--state-dir", state, "--remove", "node3"); code != 0 {
		t.Fatalf("scale --remove node3 exited %d", code)
	}
	checkProxies(ctx, t, c, []harnesslib.Node{w4, w5, w6}, cp1, cp2)
	if code, _ := kubeforge(ctx, t, "scale", "-i", c.Inventory, "--state-dir", state); code != 0 {
		t.Fatalf("scale adding node3 back exited %d", code)
	}
	checkProxies(ctx, t, c, []harnesslib.Node{w4, w5, w6}, cp1, cp2, cp3)
	for _, w := range []harnesslib.Node{w4, w5, w6} {
		if after := kubeletState(ctx, t, c, w); after != before[w.Name] {
			t.Errorf("the kubelet of %s changed or restarted while the control planes changed:\nbefore %s\nafter  %s", w.Name, before[w.Name], after)
		}
	}

	// A hung API server (process stopped, port open) is taken out of rotation.
	// Only what the proxy logs from now on counts (node2 was stopped earlier too).
	since := strings.TrimSpace(MustSSH(ctx, t, c, w4, "root", "date +%s"))
	MustSSH(ctx, t, c, cp2, "root", "pkill -STOP -f '^kube-apiserver'")
	defer c.SSH(context.Background(), cp2, "root", "pkill -CONT -f '^kube-apiserver'", nil)
	var journal string
	hung := time.Now()
	err := wait.PollUntilContextTimeout(ctx, time.Second, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		journal = MustSSH(ctx, t, c, w4, "root", "journalctl -u kubeforge-apiproxy --since @"+since+" --no-pager -o cat | grep 'upstream unhealthy' | grep "+cp2.Address+" || true")
		return journal != "", nil
	})
	// Three failed checks in a row take it out (apiproxy: Fall), each its interval (2s) or timeout (2s): 6-8s; 15s allowed on a loaded machine.
	if took := time.Since(hung); err != nil || took > 15*time.Second {
		t.Errorf("node4's proxy did not take the hung API server of node2 out of rotation within 15s (%s)", took.Round(time.Second))
	} else {
		t.Logf("hung API server out of rotation on node4 within %s", took.Round(time.Second))
	}
	for _, w := range []harnesslib.Node{w4, w5} {
		checkServiceAnswers(ctx, t, c, state, w, 3)
	}
	MustSSH(ctx, t, c, cp2, "root", "pkill -CONT -f '^kube-apiserver'")
	time.Sleep(45 * time.Second)
	ready := readyNodes(ctx, kc)
	for _, n := range c.Nodes {
		if !ready[n.Name] {
			t.Errorf("%s not Ready after node2's API server hung and resumed: %v", n.Name, ready)
		}
	}

	// A controlPlaneEndpoint named (here node2's address stands for a load
	// balancer): the workers move to it and their proxies are removed.
	withEndpoint := filepath.Join(c.Dir, "endpoint.yaml")
	data, err := os.ReadFile(c.Inventory)
	if err != nil {
		t.Fatal(err)
	}
	ep := cp2.Address + ":6443"
	data = []byte(strings.Replace(string(data), "cluster:\n", "cluster:\n  controlPlaneEndpoint: "+ep+"\n", 1))
	if err := os.WriteFile(withEndpoint, data, 0o600); err != nil {
		t.Fatal(err)
	}
	mustUp(ctx, t, c, state, "-i", withEndpoint)
	for _, w := range []harnesslib.Node{w4, w5, w6} {
		if server, active, ups := proxyView(ctx, t, c, w); server != "https://"+ep || active == "active" || len(ups) != 0 {
			t.Errorf("with an endpoint: %s's kubelet server %q, proxy %q, upstreams %v; want %s and no proxy", w.Name, server, active, ups, ep)
		}
	}
	if kp := kubectl(ctx, t, state, "-n", "kube-system", "get", "configmap", "kube-proxy", "-o", "jsonpath={.data.kubeconfig\\.conf}"); !strings.Contains(kp, "server: https://"+ep) {
		t.Errorf("kube-proxy's kubeconfig does not name the endpoint:\n%s", kp)
	}
	checkNodesWhole(ctx, t, state, c.Nodes, 3)
}

// survivesLoss stops control plane lost for two minutes. Meanwhile, through
// live (another control plane): a new Deployment named dep gets its pods on
// the workers, and during (if set) runs; then the admin kubeconfig works,
// every other node is Ready and the kubernetes Service answers from every
// worker. lost is started again and up converges with no manual step.
func survivesLoss(ctx context.Context, t *testing.T, c *harnesslib.Cluster, state string, lost, live harnesslib.Node, dep string, during func()) {
	t.Helper()
	if _, err := dockerCmd(ctx, "stop", "-t", "2", lost.Container); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	cfg := restConfig(t, state)
	cfg.Host = "https://" + live.Address + ":6443"
	kcLive := kubernetes.NewForConfigOrDie(cfg)
	failover(ctx, t, kcLive, c, lost, down)
	if err := wait.PollUntilContextTimeout(ctx, 2*time.Second, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := kcLive.AppsV1().Deployments("default").Create(ctx, pauseDeployment(dep, 2), metav1.CreateOptions{})
		return err == nil, nil
	}); err != nil {
		t.Fatalf("no Deployment could be made through %s with %s down: %v", live.Name, lost.Name, err)
	}
	for _, p := range waitPodsRunning(ctx, t, kcLive, "default", "app="+dep, 2) {
		if !slices.ContainsFunc(c.Nodes, func(n harnesslib.Node) bool {
			return n.Name == p.Spec.NodeName && !slices.Contains(n.Roles, "control-plane")
		}) {
			t.Errorf("pod %s on %s; want a worker", p.Name, p.Spec.NodeName)
		}
	}
	if during != nil {
		during()
	} else {
		// scale works with this control plane down too (nothing to add).
		if code, out := kubeforge(ctx, t, "scale", "-i", c.Inventory, "--state-dir", state); code != 0 || !strings.Contains(out, lost.Name+" is down") {
			t.Errorf("scale with %s down: exit %d, or it did not report it down", lost.Name, code)
		}
	}
	if wait := 2*time.Minute - time.Since(down); wait > 0 {
		time.Sleep(wait)
	}
	// The workstation's admin kubeconfig names a control plane that answers
	// (the last run chose one); else a kubeforge run with lost down rewrites it.
	if code, _ := kubeforge(ctx, t, "up", "-i", c.Inventory, "--state-dir", state, "--dry-run"); code != 0 {
		t.Errorf("up --dry-run with %s down exited %d", lost.Name, code)
	}
	kc := clientFor(t, state)
	if _, err := kc.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("the admin kubeconfig does not work with %s down: %v", lost.Name, err)
	}
	ready := readyNodes(ctx, kc)
	for _, n := range c.Nodes {
		if n.Name != lost.Name && !ready[n.Name] {
			t.Errorf("%s not Ready %s after %s stopped: %v", n.Name, time.Since(down).Round(time.Second), lost.Name, ready)
		}
	}
	if ready[lost.Name] {
		t.Errorf("%s is Ready while stopped: the test did not take it down", lost.Name)
	}
	for _, w := range c.Nodes {
		if slices.Contains(w.Roles, "control-plane") {
			continue
		}
		checkServiceAnswers(ctx, t, c, state, w, 5)
	}
	if _, err := dockerCmd(ctx, "start", lost.Container); err != nil {
		t.Fatal(err)
	}
	// Up once the host is back as a Ready node (its kubelet and static pods restart by themselves): an up while
	// its sshd still starts takes it for down and leaves it out, and one while its network settles may see
	// its peer probes time out (docs/ha.md).
	if err := wait.PollUntilContextTimeout(ctx, 2*time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		return readyNodes(ctx, kc)[lost.Name], nil
	}); err != nil {
		t.Fatalf("%s did not come back as a Ready node after its restart: %v", lost.Name, err)
	}
	mustUp(ctx, t, c, state)
	checkWhole(ctx, t, c, state, 3)
}

// failover measures how long after lost stopped every worker's kubelet had
// renewed its Lease again (through a live API server, by way of its proxy),
// and logs it (docs/benchmarks.md, "HA failover").
func failover(ctx context.Context, t *testing.T, kc kubernetes.Interface, c *harnesslib.Cluster, lost harnesslib.Node, down time.Time) {
	t.Helper()
	renewed := map[string]time.Duration{}
	var expect []string // the workers that have a Lease
	_ = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		leases, err := kc.CoordinationV1().Leases("kube-node-lease").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		for _, l := range leases.Items {
			n, ok := c.Node(l.Name)
			if !ok || slices.Contains(n.Roles, "control-plane") || l.Spec.RenewTime == nil {
				continue
			}
			if !slices.Contains(expect, l.Name) {
				expect = append(expect, l.Name)
			}
			if _, done := renewed[l.Name]; !done && l.Spec.RenewTime.After(down) {
				renewed[l.Name] = time.Since(down)
			}
		}
		return len(expect) > 0 && len(renewed) == len(expect), nil
	})
	var slowest time.Duration
	var names []string
	for name, d := range renewed {
		names = append(names, fmt.Sprintf("%s %s", name, d.Round(100*time.Millisecond)))
		slowest = max(slowest, d)
	}
	sort.Strings(names)
	t.Logf("failover: %s stopped; every worker's kubelet renewed its Lease within %s (%s)", lost.Name, slowest.Round(100*time.Millisecond), strings.Join(names, ", "))
	if len(expect) == 0 || len(renewed) != len(expect) {
		t.Errorf("after %s stopped only %v of the workers %v renewed their Leases within 90s", lost.Name, names, expect)
	}
}
