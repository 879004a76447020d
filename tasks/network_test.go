package tasks

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/kubeforge/kubeforge/inventory"
)

func TestNetworkPluginKeepsWhatAnExistingClusterRuns(t *testing.T) {
	for _, tc := range []struct {
		name, inventory, seen, podSubnet string
		want, why, wantErr               string
	}{
		{name: "a new cluster without cni.plugin gets flannel", want: "flannel", why: "the default for a new cluster"},
		{name: "a new cluster on an IPv6 pod subnet gets the bridge", podSubnet: "fd00:10:244::/56", want: "bridge", why: "the default for a new cluster"},
		{name: "a bridge cluster without cni.plugin keeps the bridge", seen: "bridge", want: "bridge",
			why: "the cluster runs it (seen: where); cni.plugin is unset, so an existing cluster keeps its network (new clusters get flannel"},
		{name: "a flannel cluster without cni.plugin keeps flannel", seen: "flannel", want: "flannel", why: "the cluster runs it (seen: where)"},
		{name: "the inventory's plugin on a new cluster", inventory: "bridge", want: "bridge", why: "cni.plugin in the inventory"},
		{name: "the inventory's plugin that the cluster runs", inventory: "flannel", seen: "flannel", want: "flannel", why: "cni.plugin in the inventory"},
		{name: "flannel asked of a bridge cluster: refused", inventory: "flannel", seen: "bridge", want: "flannel",
			wantErr: "the cluster runs the bridge pod network (seen: where) and the inventory asks for flannel"},
		{name: "the bridge asked of a flannel cluster: refused", inventory: "bridge", seen: "flannel", want: "bridge",
			wantErr: "the cluster runs the flannel pod network"},
		{name: "a manifest asked of a bridge cluster: the user's own network, applied", inventory: "manifest", seen: "bridge", want: "manifest",
			why: "cni.plugin in the inventory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := observedEnv(t, []string{"cp1", "w1"}, map[string]bool{"cp1": true})
			env.Inv.Cluster.CNI.Plugin = tc.inventory
			env.Inv.Cluster.PodSubnet = "10.244.0.0/16"
			if tc.podSubnet != "" {
				env.Inv.Cluster.PodSubnet = tc.podSubnet
			}
			env.Cluster = &ClusterFacts{Network: tc.seen, NetworkSeen: "where"}
			env.Plan = &Plan{}
			if got := env.NetworkPlugin(); got != tc.want {
				t.Errorf("NetworkPlugin() = %q; want %q", got, tc.want)
			}
			err := PlanNetwork(context.Background(), env)
			if tc.wantErr != "" {
				var ref *ErrRefused
				if !errors.As(err, &ref) || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "docs/network.md") {
					t.Fatalf("err = %v; want a refusal containing %q and the procedure", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n := env.Plan.Network; n == nil || n.Plugin != tc.want || !strings.Contains(n.Why, tc.why) {
				t.Fatalf("plan's network = %+v; want %s because %q", n, tc.want, tc.why)
			}
		})
	}
}

func TestFlannelPlanListsItsObjectsAndTheSmallestMTU(t *testing.T) {
	env := observedEnv(t, []string{"cp1", "w1", "w2"}, map[string]bool{"cp1": true})
	env.Inv.Cluster.PodSubnet = "10.244.0.0/16"
	mtus := map[string]int{"cp1": 1500, "w1": 9000} // w2: unknown, taken as 1500
	for _, h := range env.Hosts(env.Inv.Hosts) {
		h.Facts.LinkMTU = map[string]int{h.NodeIP(): mtus[h.Name]}
	}
	env.Cluster = &ClusterFacts{}
	env.Plan = &Plan{}
	if err := PlanNetwork(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	n := env.Plan.Network
	if n.Plugin != inventory.CNIFlannel || n.MTU != 1450 {
		t.Errorf("network %s MTU %d; want flannel 1450", n.Plugin, n.MTU)
	}
	var objs []string
	for _, o := range n.Objects {
		objs = append(objs, o.Action+" "+o.Object)
	}
	for _, want := range []string{"create DaemonSet kube-system/kube-flannel", "create DaemonSet kube-system/kube-router", "create ConfigMap kube-system/kube-flannel-cfg"} {
		if !strings.Contains(strings.Join(objs, "\n"), want) {
			t.Errorf("objects %v; want %q", objs, want)
		}
	}
	if env.Plan.Empty() {
		t.Error("a plan that creates the network's objects is empty")
	}
	// Each node's conflist carries its own link's overlay MTU, and no routes script.
	for name, want := range map[string]string{"cp1": `"mtu": 1450`, "w1": `"mtu": 8950`, "w2": `"mtu": 1450`} {
		h := env.hostNamed(name)
		files := podNetworkFiles(env, h, map[string]string{name: "10.244.1.0/24"})
		if len(files) != 1 || !strings.Contains(string(files[0].Data), want) || !strings.Contains(string(files[0].Data), `"ipMasq": false`) {
			t.Errorf("%s: files %d, conflist %s; want only the conflist with %s and no masquerade", name, len(files), files[0].Data, want)
		}
	}
	// The bridge: its conflist masquerades, has no MTU, and its routes script and unit come along.
	env.Inv.Cluster.CNI.Plugin = inventory.CNIBridge
	files := podNetworkFiles(env, env.hostNamed("w1"), map[string]string{"w1": "10.244.1.0/24", "cp1": "10.244.0.0/24"})
	if len(files) != 3 || strings.Contains(string(files[0].Data), "mtu") || !strings.Contains(string(files[1].Data), "ip route replace 10.244.0.0/24 via") {
		t.Errorf("bridge files: %d; first %s", len(files), files[0].Data)
	}
}

func TestPreflightChecksVXLANOnlyForFlannel(t *testing.T) {
	for _, tc := range []struct {
		plugin string
		vxlan  bool
		want   string // "" for no check
	}{
		{plugin: "", vxlan: true, want: "passed"},
		{plugin: "flannel", vxlan: false, want: "failed"},
		{plugin: "bridge", vxlan: false},
		{plugin: "manifest", vxlan: false},
	} {
		env := observedEnv(t, []string{"cp1"}, map[string]bool{"cp1": true})
		env.Inv.Cluster.CNI.Plugin = tc.plugin
		env.Inv.Cluster.PodSubnet = "10.244.0.0/16"
		got := ""
		checkVXLAN(env, &Facts{VXLAN: tc.vxlan}, func(id string, sev Severity, ok bool, msg, fix string) {
			if id != "VXLAN" || sev != SeverityError {
				t.Errorf("check %s severity %v", id, sev)
			}
			got = map[bool]string{true: "passed", false: "failed"}[ok]
		})
		if got != tc.want {
			t.Errorf("plugin %q, vxlan %v: check %q; want %q", tc.plugin, tc.vxlan, got, tc.want)
		}
	}
}
