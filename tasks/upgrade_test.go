package tasks

import (
	"strings"
	"testing"

	k8sversion "k8s.io/apimachinery/pkg/util/version"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/manifests"
)

func TestCheckVersions(t *testing.T) {
	target := k8sversion.MustParseSemantic("v1.37.2")
	cp := func(k8s, etcd, kubelet string) map[string]string {
		return map[string]string{"kube-apiserver": k8s, "kube-controller-manager": k8s, "kube-scheduler": k8s, "etcd": etcd, "kubelet": kubelet}
	}
	for _, tc := range []struct {
		name    string
		running map[string]string
		problem string // "" for none
		oldest  string
		stale   bool
	}{
		{"one minor up", cp("v1.36.3", "3.6.8-0", "v1.36.3"), "", "1.36.3", true},
		{"done", cp("v1.37.2", "3.7.0-0", "v1.37.2"), "", "1.37.2", false},
		{"only etcd left", cp("v1.37.2", "3.6.8-0", "v1.37.2"), "", "1.37.2", true},
		{"a patch", cp("v1.37.1", "3.7.0-0", "v1.37.1"), "", "1.37.1", true},
		{"static pods new, kubelet old (a run stopped mid-node)", cp("v1.37.2", "3.7.0-0", "v1.36.3"), "", "1.36.3", true},
		{"two minors", cp("v1.35.4", "3.6.5-0", "v1.35.4"), "control planes move one minor at a time; give the build of every minor between with --via DIR (v1.36 first)", "1.35.4", true},
		{"downgrade", cp("v1.37.3", "3.7.0-0", "v1.37.3"), "kubeforge does not downgrade", "1.37.3", false},
		{"worker kubelet three minors old", map[string]string{"kubelet": "v1.34.4"}, "", "1.34.4", true},
		{"worker kubelet four minors old", map[string]string{"kubelet": "v1.33.0"}, "the version skew policy", "1.33.0", true},
		{"unreadable", map[string]string{"kubelet": "unknown"}, "cannot read", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			problems, oldest, stale := checkVersions("node1", tc.running, target)
			got := strings.Join(problems, "; ")
			if (tc.problem == "") != (got == "") || !strings.Contains(got, tc.problem) {
				t.Errorf("problems %q; want one saying %q", got, tc.problem)
			}
			if tc.oldest != "" && (oldest == nil || oldest.String() != tc.oldest) {
				t.Errorf("oldest %v; want %s", oldest, tc.oldest)
			}
			if tc.problem == "" && stale != tc.stale {
				t.Errorf("stale %v; want %v", stale, tc.stale)
			}
		})
	}
}

// A hop of a chained upgrade counts a control plane done once everything
// it runs is at the hop's version or newer.
func TestReachedAHop(t *testing.T) {
	hop := k8sversion.MustParseSemantic("v1.36.3")
	for _, tc := range []struct {
		name    string
		running map[string]string
		want    bool
	}{
		{"still on the old minor", map[string]string{"kube-apiserver": "v1.35.4", "kubelet": "v1.35.4", "etcd": "3.6.5-0"}, false},
		{"at the hop", map[string]string{"kube-apiserver": "v1.36.3", "kubelet": "v1.36.3", "etcd": "3.6.8-0"}, true},
		{"past the hop (the last step ran)", map[string]string{"kube-apiserver": "v1.37.2", "kubelet": "v1.37.2", "etcd": "3.7.0-0"}, true},
		{"static pods moved, kubelet not (stopped mid-node)", map[string]string{"kube-apiserver": "v1.36.3", "kubelet": "v1.35.4"}, false},
		{"an older patch of the hop's minor", map[string]string{"kube-apiserver": "v1.36.1", "kubelet": "v1.36.1"}, false},
		{"unreadable", map[string]string{"kube-apiserver": "?", "kubelet": "v1.36.3"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := reached(tc.running, hop); got != tc.want {
				t.Errorf("reached = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestBatchSize(t *testing.T) {
	for _, tc := range []struct {
		flag string
		n    int
		want int
	}{
		{"", 10, 1}, {"1", 10, 1}, {"3", 10, 3}, {"25%", 10, 2}, {"25%", 3, 1}, {"100%", 7, 7}, {"50%", 1, 1},
	} {
		e := &Env{Opts: Options{MaxUnavailable: tc.flag}}
		if got := e.batchSize(tc.n); got != tc.want {
			t.Errorf("--max-unavailable %q of %d workers: batches of %d; want %d", tc.flag, tc.n, got, tc.want)
		}
	}
	for _, bad := range []string{"0", "-1", "0%", "150%", "x", "10%%", ""} {
		if ParseMaxUnavailable(bad) == nil {
			t.Errorf("--max-unavailable %q accepted", bad)
		}
	}
	for _, good := range []string{"1", "5", "10%", "100%"} {
		if err := ParseMaxUnavailable(good); err != nil {
			t.Errorf("--max-unavailable %q: %v", good, err)
		}
	}
}

func TestRefuseVersionChange(t *testing.T) {
	env := observedEnv(t, []string{"cp1", "w1"}, map[string]bool{"cp1": true})
	env.Inv.Cluster.KubernetesVersion = "v1.37.2"
	name := "w1"
	if err := refuseVersionChange(env, map[string]string{name: "v1.37.2"}); err != nil {
		t.Errorf("same version refused: %v", err)
	}
	err := refuseVersionChange(env, map[string]string{name: "v1.36.3"})
	if err == nil || !strings.Contains(err.Error(), "kubeforge upgrade") || !strings.Contains(err.Error(), name+" v1.36.3") {
		t.Errorf("a version change: %v; want a refusal naming the node and `kubeforge upgrade`", err)
	}
}

func TestDiskLimit(t *testing.T) {
	for _, tc := range []struct {
		config map[string]any
		want   float64
	}{
		{nil, 84},
		{map[string]any{"imageGCHighThresholdPercent": 90}, 84}, // imagefs eviction (15% free) comes first
		{map[string]any{"imageGCHighThresholdPercent": 70}, 69},
		{map[string]any{"imageGCHighThresholdPercent": 100, "evictionHard": map[string]any{"imagefs.available": "1%"}}, 98},
	} {
		inv := &inventory.Inventory{}
		inv.Cluster.Kubelet.Config = tc.config
		if got := diskLimit(inv); got != tc.want {
			t.Errorf("kubelet config %v: limit %v%%; want %v%%", tc.config, got, tc.want)
		}
	}
}

func TestOtherwiseStale(t *testing.T) {
	proxyOnly := &HostPlan{Files: []FilePlan{{Path: manifests.APIProxyBinaryPath, Reason: "content differs"}}}
	kubelet := &HostPlan{Files: []FilePlan{{Path: "/usr/bin/kubelet", Reason: "content differs"}}}
	images := &HostPlan{Images: []string{"kubernetes-v1.37.2.tar"}}
	many := &HostPlan{Files: []FilePlan{{Path: "/a", Reason: "missing"}, {Path: "/b", Reason: "missing"}, {Path: "/c", Reason: "missing"}, {Path: "/d", Reason: "missing"}}}
	for _, tc := range []struct {
		name   string
		unseen []string
		hp     *HostPlan
		want   string
	}{
		{"no plan", nil, nil, ""},
		{"nothing to write", nil, &HostPlan{}, ""},
		{"only a newer kubeforge for its API proxy", nil, proxyOnly, ""},
		{"the kubelet differs", nil, kubelet, "/usr/bin/kubelet (content differs) differ"},
		{"images to import", nil, images, "image kubernetes-v1.37.2.tar differ"},
		{"many files", nil, many, "/a (missing), /b (missing), /c (missing) and 1 more differ"},
		{"a static pod without its mirror", []string{"etcd"}, &HostPlan{}, "no mirror pod for etcd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := otherwiseStale(tc.unseen, tc.hp); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
