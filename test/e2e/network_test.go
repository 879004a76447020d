//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeforge/kubeforge/test/harnesslib"
)

// netPod is one probe pod of the network test: etcd serving plain HTTP /health on :2379 (the server), pinned to a
// node, into which the test execs the image's kubectl as an HTTP client (no shell is needed).
type netPod struct {
	name, node string
	labels     map[string]string
}

// createNetPods creates pods (the control-plane image etcd, serving /health on :2379).
func createNetPods(ctx context.Context, t testing.TB, kc kubernetes.Interface, state string, pods []netPod) {
	t.Helper()
	images := map[string]string{}
	for _, l := range strings.Fields(kubectl(ctx, t, state, "get", "pods", "-n", "kube-system", "-o", "jsonpath={.items[*].spec.containers[*].image}")) {
		images[strings.SplitN(strings.TrimPrefix(l, "registry.k8s.io/"), ":", 2)[0]] = l
	}
	etcdImage := images["etcd"]
	if etcdImage == "" {
		t.Fatalf("etcd image not found: %v", images)
	}
	for _, p := range pods {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: p.name, Labels: p.labels},
			Spec: corev1.PodSpec{
				NodeName:    p.node,
				Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
				Containers: []corev1.Container{{Name: "net", Image: etcdImage, ImagePullPolicy: corev1.PullIfNotPresent,
					Command: []string{"etcd", "--data-dir=/tmp/etcd", "--listen-client-urls=http://0.0.0.0:2379",
						"--advertise-client-urls=http://127.0.0.1:2379", "--listen-peer-urls=http://127.0.0.1:2380"}}},
			},
		}
		if _, err := kc.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// podExec runs argv in pod's container with the artifacts' kubectl and returns its output and error.
func podExec(ctx context.Context, t testing.TB, state, pod string, argv ...string) (string, error) {
	t.Helper()
	bin := filepath.Join(ArtifactsDir(t), "bin", "kubectl")
	args := append([]string{"--kubeconfig", filepath.Join(state, "admin.conf"), "exec", pod, "-c", "net", "--"}, argv...)
	cmd := exec.CommandContext(ctx, bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// httpHealth asks url's /health from inside pod (5 s at most) and reports whether etcd answered healthy.
func httpHealth(ctx context.Context, t testing.TB, state, pod, url string) (bool, string) {
	t.Helper()
	out, err := podExec(ctx, t, state, pod, "kubectl", "--server="+url, "--request-timeout=5s", "get", "--raw", "/health")
	return err == nil && strings.Contains(out, `"health":"true"`), out
}

// eventually polls check until it reports want (within limit), then requires it three more times in a row, so a
// result that flaps does not pass.
func eventually(ctx context.Context, t *testing.T, what string, limit time.Duration, want bool, check func() (bool, string)) {
	t.Helper()
	var last string
	start := time.Now()
	err := wait.PollUntilContextTimeout(ctx, time.Second, limit, true, func(ctx context.Context) (bool, error) {
		got, out := check()
		last = out
		return got == want, nil
	})
	if err != nil {
		t.Errorf("%s: not %v within %s; last answer: %s", what, want, limit, last)
		return
	}
	for i := 0; i < 3; i++ {
		if got, out := check(); got != want {
			t.Errorf("%s: %v, then %v (%s)", what, want, got, out)
			return
		}
	}
	t.Logf("%s: %v after %s", what, want, time.Since(start).Round(time.Millisecond))
}

func podIP(ctx context.Context, t testing.TB, kc kubernetes.Interface, name string) string {
	t.Helper()
	p, err := kc.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p.Status.PodIP
}

// TestDefaultNetworkCrossesSubnets is issue 28's acceptance test: a 1+2 cluster made by `up` with the default pod
// network (flannel's VXLAN and kube-router's NetworkPolicy firewall) on two routed subnets, node1 and node3 on
// the first, node2 on the second. Pods on each subnet reach each other both ways; a Service's ClusterIP, its
// name through CoreDNS and a NodePort answer from every node; a default-deny NetworkPolicy blocks and an allow
// rule opens exactly what it names; a node restarted (its container: a reboot) gets its pod network back; and
// `up` again plans nothing.
func TestDefaultNetworkCrossesSubnets(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	c, state := startRouted(ctx, t, 3, 1)
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	if n1.Network == n2.Network || n1.Network != n3.Network {
		t.Fatalf("placement: %s on %s, %s on %s, %s on %s", n1.Name, n1.Network, n2.Name, n2.Network, n3.Name, n3.Network)
	}

	code, out := kubeforge(ctx, t, "up", "-i", c.Inventory, "--state-dir", state, "--dry-run")
	if code != 0 || !strings.Contains(out, "Pod network: flannel: flannel VXLAN (UDP 8472) with kube-router's NetworkPolicy firewall, pods' MTU 1450 (the default for a new cluster).") ||
		!strings.Contains(out, "create  DaemonSet kube-system/kube-flannel") || !strings.Contains(out, "create  DaemonSet kube-system/kube-router") {
		t.Fatalf("dry run of a new cluster (exit %d) does not show the default network and its objects", code)
	}
	start := time.Now()
	mustUp(ctx, t, c, state)
	t.Logf("first up: %s", time.Since(start).Round(time.Millisecond))
	kc := clientFor(t, state)
	waitPodsRunning(ctx, t, kc, "kube-system", "app=flannel", 3)
	waitPodsRunning(ctx, t, kc, "kube-system", "k8s-app=kube-router", 3)

	for _, n := range c.Nodes {
		conf := MustSSH(ctx, t, c, n, "root", "cat /etc/cni/net.d/10-kubeforge.conflist")
		if !strings.Contains(conf, `"mtu": 1450`) || !strings.Contains(conf, `"ipMasq": false`) {
			t.Errorf("%s: CNI config without the overlay's MTU or with its own masquerade:\n%s", n.Name, conf)
		}
		if out, err := c.SSH(ctx, n, "root", "test ! -e /etc/kubeforge/pod-routes.sh", nil); err != nil {
			t.Errorf("%s: the bridge's routes script is there under flannel: %v %s", n.Name, err, out)
		}
		eventually(ctx, t, n.Name+": flannel.1 up with MTU 1450", 2*time.Minute, true, func() (bool, string) {
			out, err := c.SSH(ctx, n, "root", "cat /sys/class/net/flannel.1/mtu; cat /run/flannel/subnet.env", nil)
			return err == nil && strings.HasPrefix(out, "1450\n"), out
		})
	}

	// Probe pods: one per node; node2's carries access=true, which the allow rule below names.
	pods := []netPod{
		{name: "net1", node: n1.Name, labels: map[string]string{"app": "net"}},
		{name: "net2", node: n2.Name, labels: map[string]string{"app": "net", "access": "true"}},
		{name: "net3", node: n3.Name, labels: map[string]string{"app": "net"}},
	}
	createNetPods(ctx, t, kc, state, pods)
	waitPodsRunning(ctx, t, kc, "default", "app=net", 3)
	waitPodsRunning(ctx, t, kc, "kube-system", "k8s-app=kube-dns", 1)
	ip := map[string]string{}
	for _, p := range pods {
		ip[p.name] = podIP(ctx, t, kc, p.name)
	}
	t.Logf("pod IPs: %v", ip)
	reach := func(from, to string) func() (bool, string) {
		return func() (bool, string) { return httpHealth(ctx, t, state, from, "http://"+ip[to]+":2379") }
	}

	t.Run("pod to pod across the subnets, both ways", func(t *testing.T) {
		for _, p := range [][2]string{{"net1", "net2"}, {"net2", "net1"}, {"net2", "net3"}, {"net3", "net2"}, {"net1", "net3"}} {
			eventually(ctx, t, p[0]+" -> "+p[1]+" ("+ip[p[1]]+")", time.Minute, true, reach(p[0], p[1]))
		}
		// Large answers cross too (the MTU is right: 1450 inside 1500): 64 KiB of /metrics, node2 -> node1.
		out, err := podExec(ctx, t, state, "net2", "kubectl", "--server=http://"+ip["net1"]+":2379", "--request-timeout=10s", "get", "--raw", "/metrics")
		if err != nil || len(out) < 64<<10 {
			t.Errorf("net2 -> net1 /metrics: %d bytes, %v", len(out), err)
		}
	})

	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "net"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"app": "net"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstrFromInt(2379)}}},
	}
	svc, err := kc.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	clusterIP, nodePort := svc.Spec.ClusterIP, svc.Spec.Ports[0].NodePort
	t.Run("a Service by ClusterIP, by name (DNS) from pods on each subnet, and its NodePort from every node", func(t *testing.T) {
		for _, p := range pods {
			eventually(ctx, t, p.name+" -> net.default.svc.cluster.local", time.Minute, true, func() (bool, string) {
				return httpHealth(ctx, t, state, p.name, "http://net.default.svc.cluster.local")
			})
			eventually(ctx, t, p.name+" -> ClusterIP "+clusterIP, time.Minute, true, func() (bool, string) {
				return httpHealth(ctx, t, state, p.name, "http://"+clusterIP)
			})
		}
		// The request's stdin stays open until the answer came: a half-closed connection cancels etcd's health
		// check ("RANGE ERROR: context canceled"); HTTP/1.0, so etcd closes after answering and socat ends.
		get := "{ printf 'GET /health HTTP/1.0\\r\\n\\r\\n'; sleep 1; } | timeout 5 socat - TCP:%s:%d"
		for _, n := range c.Nodes {
			eventually(ctx, t, n.Name+" -> ClusterIP "+clusterIP, time.Minute, true, func() (bool, string) {
				out, err := c.SSH(ctx, n, "root", fmt.Sprintf(get, clusterIP, 80), nil)
				return err == nil && strings.Contains(out, `"health":"true"`), out
			})
			for _, to := range c.Nodes {
				eventually(ctx, t, fmt.Sprintf("%s -> NodePort %s:%d", n.Name, to.Address, nodePort), time.Minute, true, func() (bool, string) {
					out, err := c.SSH(ctx, n, "root", fmt.Sprintf(get, to.Address, nodePort), nil)
					return err == nil && strings.Contains(out, `"health":"true"`), out
				})
			}
		}
	})

	t.Run("a default-deny NetworkPolicy blocks, an allow rule opens what it names", func(t *testing.T) {
		nps := kc.NetworkingV1().NetworkPolicies("default")
		deny := &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "default-deny"},
			Spec:       networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}},
		}
		if _, err := nps.Create(ctx, deny, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// kube-router applies a policy within seconds (its sync on the watch event): wait for it, then it must hold.
		eventually(ctx, t, "denied: net2 -> net1 across the subnets", time.Minute, false, reach("net2", "net1"))
		eventually(ctx, t, "denied: net3 -> net1 on one subnet", time.Minute, false, reach("net3", "net1"))
		eventually(ctx, t, "denied: net1 -> net2", time.Minute, false, reach("net1", "net2"))
		allow := &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "allow-access"},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "net"}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"access": "true"}}}},
				}},
			},
		}
		if _, err := nps.Create(ctx, allow, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(ctx, t, "allowed: net2 (access=true) -> net1 across the subnets", time.Minute, true, reach("net2", "net1"))
		eventually(ctx, t, "allowed: net2 (access=true) -> net3 across the subnets", time.Minute, true, reach("net2", "net3"))
		eventually(ctx, t, "still denied: net3 -> net1", 10*time.Second, false, reach("net3", "net1"))
		eventually(ctx, t, "still denied: net1 -> net2", 10*time.Second, false, reach("net1", "net2"))
		for _, name := range []string{"default-deny", "allow-access"} {
			if err := nps.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		eventually(ctx, t, "open again: net3 -> net1", time.Minute, true, reach("net3", "net1"))
	})

	t.Run("a node restarted gets its pod network back", func(t *testing.T) {
		start := time.Now()
		if out, err := dockerCmd(ctx, "restart", "-t", "5", n2.Container); err != nil {
			t.Fatalf("docker restart %s: %v %s", n2.Container, err, out)
		}
		err := wait.PollUntilContextTimeout(ctx, 2*time.Second, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
			p, err := kc.CoreV1().Pods("default").Get(ctx, "net2", metav1.GetOptions{})
			if err != nil || p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
				return false, nil
			}
			for _, s := range p.Status.ContainerStatuses {
				if !s.Ready || s.RestartCount == 0 {
					return false, nil
				}
			}
			return true, nil
		})
		if err != nil {
			t.Fatalf("net2 not running again after its node's restart: %v\n%s", err, kubectl(ctx, t, state, "get", "pods", "-A", "-o", "wide"))
		}
		ip["net2"] = podIP(ctx, t, kc, "net2")
		t.Logf("net2 running again on the restarted %s after %s, IP %s", n2.Name, time.Since(start).Round(time.Second), ip["net2"])
		eventually(ctx, t, "after the restart: net1 -> net2", 2*time.Minute, true, reach("net1", "net2"))
		eventually(ctx, t, "after the restart: net2 -> net1", time.Minute, true, reach("net2", "net1"))
		eventually(ctx, t, "after the restart: net2 -> the Service by name", time.Minute, true, func() (bool, string) {
			return httpHealth(ctx, t, state, "net2", "http://net.default.svc.cluster.local")
		})
	})

	t.Run("up again plans nothing", func(t *testing.T) {
		code, out := kubeforge(ctx, t, "up", "-i", c.Inventory, "--state-dir", state, "--dry-run")
		if code != 0 || !strings.Contains(out, "The plan is empty") {
			t.Errorf("up --dry-run after converging (exit %d) plans changes", code)
		}
		mustUp(ctx, t, c, state)
	})
}

// withCNIPlugin writes a copy of c's inventory with cluster.cni.plugin set to plugin and returns its path.
func withCNIPlugin(t testing.TB, c *harnesslib.Cluster, plugin string) string {
	t.Helper()
	return rewriteInventory(t, c.Inventory, strings.TrimSuffix(c.Inventory, ".yaml")+"-"+plugin+".yaml", func(root *yaml.Node) {
		cluster := mapValue(root, "cluster")
		if cluster == nil {
			t.Fatal("the harness inventory has no cluster section")
		}
		cluster.Content = append(cluster.Content,
			&yaml.Node{Kind: yaml.ScalarNode, Value: "cni"},
			&yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
				{Kind: yaml.ScalarNode, Value: "plugin"}, {Kind: yaml.ScalarNode, Value: plugin},
			}})
	})
}

// bridgeToFlannel is docs/network.md's step 1 of "Moving a bridge cluster to flannel", on one host: the bridge's
// routes unit and script go, and so do its routes to the other nodes' pod CIDRs (within the pod subnet).
const bridgeToFlannel = `systemctl disable --now kubeforge-routes.service
rm -f /etc/kubeforge/pod-routes.sh /etc/systemd/system/kubeforge-routes.service
systemctl daemon-reload
ip route show root 10.244.0.0/16 | awk '$2 == "via" {print $1}' | xargs -r -n1 ip route del`

// TestBridgeClusterMovesToFlannelByTheProcedure follows docs/network.md's procedure on a 1+1 cluster made with the
// bridge on one subnet (where the bridge works): pods reach each other on the bridge; after step 1, `up` with
// cni.plugin flannel plans flannel (no bridge seen any more) and installs it; re-created pods reach each other
// over the overlay with its MTU; and an inventory without cni.plugin then keeps flannel with nothing to do.
func TestBridgeClusterMovesToFlannelByTheProcedure(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	c, state := startCluster(ctx, t, "kfnmv", "172.31.204.0/24", 2, 1)
	n1, n2 := c.Nodes[0], c.Nodes[1]
	bridge, flannel := withCNIPlugin(t, c, "bridge"), withCNIPlugin(t, c, "flannel")
	if code, _ := kubeforge(ctx, t, "up", "-i", bridge, "--state-dir", state); code != 0 {
		t.Fatalf("up with the bridge exited %d", code)
	}
	kc := clientFor(t, state)
	pods := []netPod{{name: "net1", node: n1.Name, labels: map[string]string{"app": "net"}}, {name: "net2", node: n2.Name, labels: map[string]string{"app": "net"}}}
	createNetPods(ctx, t, kc, state, pods)
	waitPodsRunning(ctx, t, kc, "default", "app=net", 2)
	reach := func(from, to string) func() (bool, string) {
		return func() (bool, string) {
			return httpHealth(ctx, t, state, from, "http://"+podIP(ctx, t, kc, to)+":2379")
		}
	}
	eventually(ctx, t, "bridge: net1 -> net2", time.Minute, true, reach("net1", "net2"))

	for _, n := range c.Nodes {
		MustSSH(ctx, t, c, n, "root", bridgeToFlannel)
	}
	code, out := kubeforge(ctx, t, "up", "-i", flannel, "--state-dir", state, "--dry-run")
	if code != 0 || !strings.Contains(out, "Pod network: flannel: flannel VXLAN (UDP 8472) with kube-router's NetworkPolicy firewall, pods' MTU 1450 (cni.plugin in the inventory).") ||
		!strings.Contains(out, "create  DaemonSet kube-system/kube-flannel") || !strings.Contains(out, "/etc/cni/net.d/10-kubeforge.conflist") {
		t.Fatalf("dry run after step 1 (exit %d) does not plan flannel, its objects and the new conflist", code)
	}
	if code, _ := kubeforge(ctx, t, "up", "-i", flannel, "--state-dir", state); code != 0 {
		t.Fatalf("up with flannel exited %d", code)
	}
	waitPodsRunning(ctx, t, kc, "kube-system", "app=flannel", 2)
	waitPodsRunning(ctx, t, kc, "kube-system", "k8s-app=kube-router", 2)
	// Step 3: every pod on the pod network is re-created, with the overlay's MTU: CoreDNS by a rollout restart, the
	// probe pods deleted and made again.
	kubectl(ctx, t, state, "-n", "kube-system", "rollout", "restart", "deployment/coredns")
	kubectl(ctx, t, state, "-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=3m")
	for _, p := range pods {
		zero := int64(0)
		if err := kc.CoreV1().Pods("default").Delete(ctx, p.name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
			t.Fatal(err)
		}
	}
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := kc.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=net"})
		return err == nil && len(l.Items) == 0, nil
	}); err != nil {
		t.Fatalf("the bridge's pods are not gone: %v", err)
	}
	createNetPods(ctx, t, kc, state, pods)
	waitPodsRunning(ctx, t, kc, "default", "app=net", 2)
	eventually(ctx, t, "flannel: net1 -> net2", time.Minute, true, reach("net1", "net2"))
	eventually(ctx, t, "flannel: net2 -> net1", time.Minute, true, reach("net2", "net1"))
	for _, n := range c.Nodes {
		if out := MustSSH(ctx, t, c, n, "root", "ip -o link show master cni0 | grep -o 'mtu [0-9]*' | sort -u; ip -4 route show root 10.244.0.0/16"); !strings.Contains(out, "mtu 1450") ||
			strings.Contains(out, "mtu 1500") || !strings.Contains(out, "dev flannel.1") || strings.Contains(out, " via "+n1.Address) || strings.Contains(out, " via "+n2.Address) {
			t.Errorf("%s after the move: pods' links and pod routes:\n%s\nwant MTU 1450 only, routes through flannel.1 only", n.Name, out)
		}
	}
	code, out = kubeforge(ctx, t, "up", "-i", c.Inventory, "--state-dir", state, "--dry-run")
	if code != 0 || !strings.Contains(out, "(the cluster runs it (seen: DaemonSet kube-system/kube-flannel)") || !strings.Contains(out, "The plan is empty") {
		t.Errorf("dry run without cni.plugin after the move (exit %d): want flannel kept and nothing to do", code)
	}
}
