//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kubeforge/kubeforge/test/harnesslib"
)

// The e2e harness uses its own instance, network and subnet so it never touches the demo's harness.
const (
	e2ePrefix = "kfe2e"
	e2eSubnet = "172.31.251.0/24"
)

// TestHarnessNodesRunAStaticEtcdPodFromTheArtifacts boots two harness nodes, node1 from the image with a
// preinstalled containerd and node2 bare, and checks what kubeforge relies on: SSH as root and as a sudo user
// with host key checking; on node1 containerd's CRI socket, the artifacts' images, and a kubelet started by hand
// running etcd as a static pod from the locally built image; on node2 no runtime at all. Then `down` leaves
// nothing.
func TestHarnessNodesRunAStaticEtcdPodFromTheArtifacts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	artifacts := ArtifactsDir(t)
	dir := t.TempDir()

	c := StartHarness(ctx, t, harnesslib.Options{Nodes: 2, NamePrefix: e2ePrefix, Subnet: e2eSubnet, Dir: dir, Artifacts: artifacts,
		NodeImages: map[string]string{"node1": harnesslib.ContainerdImage}})
	if len(c.Nodes) != 2 {
		t.Fatalf("harness made %d nodes, want 2", len(c.Nodes))
	}

	for _, n := range c.Nodes {
		if got := MustSSH(ctx, t, c, n, "root", "id -u"); got != "0" {
			t.Errorf("%s: root's id -u = %q", n.Name, got)
		}
		if got := MustSSH(ctx, t, c, n, "kube", "id -un; sudo -n id -u"); got != "kube\n0" {
			t.Errorf("%s: kube + sudo = %q, want kube then 0", n.Name, got)
		}
		if got := MustSSH(ctx, t, c, n, "root", "hostname"); got != n.Name {
			t.Errorf("%s: hostname = %q", n.Name, got)
		}
		if n.Variant != "containerd" {
			// A bare host: nothing of a container runtime.
			if got := MustSSH(ctx, t, c, n, "root", "command -v containerd ctr runc; ls -d /usr/lib/cni /opt/cni /etc/containerd 2>/dev/null; true"); got != "" {
				t.Errorf("%s (%s) is not bare: %s", n.Name, n.Variant, got)
			}
			continue
		}
		v, err := CRIVersion(ctx, c, n, "/run/containerd/containerd.sock")
		if err != nil {
			t.Fatalf("%s: %v", n.Name, err)
		}
		if v.RuntimeName != "containerd" || v.RuntimeAPIVersion != "v1" {
			t.Errorf("%s: CRI version = %+v, want containerd with API v1", n.Name, v)
		}
		imgs, err := ImportImages(ctx, c, n, artifacts)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			"registry.k8s.io/pause:3.10.2", "registry.k8s.io/etcd:3.7.0-0",
			"registry.k8s.io/kube-apiserver:v1.37.2", "registry.k8s.io/kube-controller-manager:v1.37.2",
			"registry.k8s.io/kube-scheduler:v1.37.2", "registry.k8s.io/kube-proxy:v1.37.2",
			"registry.k8s.io/coredns/coredns:v1.14.6",
		} {
			if !slices.Contains(imgs, want) {
				t.Errorf("%s: image %s not imported (have %v)", n.Name, want, imgs)
			}
		}
	}
	// Host keys are checked: a known_hosts without the node's key makes ssh refuse.
	if _, err := c.SSH(ctx, c.Nodes[0], "root", "true", nil); err != nil {
		t.Fatalf("ssh with the harness known_hosts: %v", err)
	}
	other := *c
	other.KnownHosts = filepath.Join(t.TempDir(), "empty_known_hosts")
	if _, err := other.SSH(ctx, c.Nodes[0], "root", "true", nil); err == nil {
		t.Error("ssh succeeded with an empty known_hosts: host key checking is off")
	}

	n := c.Nodes[0]
	if err := Upload(ctx, c, n, filepath.Join(artifacts, "bin", "kubelet"), "/usr/local/bin/kubelet", 0o755); err != nil {
		t.Fatal(err)
	}
	if got := MustSSH(ctx, t, c, n, "root", "kubelet --version"); got != "Kubernetes v1.37.2" {
		t.Errorf("kubelet --version = %q", got)
	}
	if err := WriteFile(ctx, c, n, "/var/lib/kubelet/config.yaml", []byte(kubeletConfig)); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(ctx, c, n, "/etc/kubernetes/manifests/etcd.yaml", []byte(etcdPod(n))); err != nil {
		t.Fatal(err)
	}
	MustSSH(ctx, t, c, n, "root", "systemd-run --unit=kubelet-e2e --collect /usr/local/bin/kubelet --config=/var/lib/kubelet/config.yaml --hostname-override="+n.Name+" --v=1")

	healthURL := fmt.Sprintf("http://%s:2379/health", n.Address)
	var last string
	deadline := time.Now().Add(3 * time.Minute)
	for {
		body, err := httpGet(ctx, healthURL)
		if err == nil && strings.Contains(body, `"health":"true"`) {
			t.Logf("etcd on %s: %s", n.Name, body)
			break
		}
		last = fmt.Sprintf("%v %s", err, body)
		if time.Now().After(deadline) {
			logs, _ := c.SSH(ctx, n, "root", "journalctl -u kubelet-e2e --no-pager | tail -40; ctr -n k8s.io containers ls; ctr -n k8s.io tasks ls", nil)
			t.Fatalf("etcd not healthy at %s after 3m (last: %s)\nnode state:\n%s", healthURL, last, logs)
		}
		time.Sleep(time.Second)
	}
	members, err := httpPost(ctx, fmt.Sprintf("http://%s:2379/v3/cluster/member/list", n.Address), "{}")
	if err != nil {
		t.Fatal(err)
	}
	var ml struct {
		Members []struct {
			Name string `json:"name"`
		} `json:"members"`
	}
	if err := json.Unmarshal([]byte(members), &ml); err != nil {
		t.Fatalf("decode member list %q: %v", members, err)
	}
	if len(ml.Members) != 1 || ml.Members[0].Name != n.Name {
		t.Errorf("etcd members = %s, want one named %s", members, n.Name)
	}
	if got := MustSSH(ctx, t, c, n, "root", "ctr -n k8s.io containers ls -q | wc -l"); got == "0" {
		t.Error("no CRI containers on the node, yet etcd answered: is something else listening?")
	}

	// Down removes exactly what Up made.
	if err := harnesslib.Down(ctx, dir); err != nil {
		t.Fatalf("harness down: %v", err)
	}
	left, err := harnesslib.Leftovers(ctx, e2ePrefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("harness down left %v", left)
	}
	if _, err := harnesslib.Load(dir); err == nil {
		t.Error("harness down left its state file")
	}
}

const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
failCgroupV1: false
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
staticPodPath: /etc/kubernetes/manifests
address: 127.0.0.1
readOnlyPort: 0
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
resolvConf: /etc/kubeforge/resolv.conf
evictionHard:
  imagefs.available: "1%"
  nodefs.available: "1%"
  memory.available: "50Mi"
`

// etcdPod is a single-member etcd static pod from the locally built image, serving plain HTTP to the harness.
func etcdPod(n harnesslib.Node) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: etcd
  namespace: kube-system
spec:
  hostNetwork: true
  priorityClassName: system-node-critical
  containers:
  - name: etcd
    image: registry.k8s.io/etcd:3.7.0-0
    imagePullPolicy: IfNotPresent
    command:
    - etcd
    - --name=%[1]s
    - --data-dir=/var/lib/etcd
    - --listen-client-urls=http://0.0.0.0:2379
    - --advertise-client-urls=http://%[2]s:2379
    - --listen-peer-urls=http://127.0.0.1:2380
    - --initial-advertise-peer-urls=http://127.0.0.1:2380
    - --initial-cluster=%[1]s=http://127.0.0.1:2380
    - --listen-metrics-urls=http://127.0.0.1:2381
    volumeMounts:
    - name: data
      mountPath: /var/lib/etcd
  volumes:
  - name: data
    hostPath:
      path: /var/lib/etcd
      type: DirectoryOrCreate
`, n.Name, n.Address)
}

func httpGet(ctx context.Context, url string) (string, error) {
	return httpDo(ctx, http.MethodGet, url, "")
}

func httpPost(ctx context.Context, url, body string) (string, error) {
	return httpDo(ctx, http.MethodPost, url, body)
}

func httpDo(ctx context.Context, method, url, body string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req) // never through a proxy: the nodes are local
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("%s %s: %s", method, url, resp.Status)
	}
	return string(b), nil
}
