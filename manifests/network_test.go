package manifests

import (
	"encoding/json"
	"net"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/pki"
)

func TestNetworkObjectsOnlyForFlannel(t *testing.T) {
	for _, plugin := range []string{inventory.CNIBridge, inventory.CNIManifest, ""} {
		objs, err := NetworkObjects(exampleInventory(), plugin)
		if err != nil || len(objs) != 0 {
			t.Errorf("%q: %d objects, %v; want none", plugin, len(objs), err)
		}
	}
}

func TestFlannelObjectsCarryTheClusterAndTheNodeLocalAPI(t *testing.T) {
	inv := exampleInventory()
	inv.Cluster.PodSubnet = "10.32.0.0/16"
	objs, err := NetworkObjects(inv, inventory.CNIFlannel)
	if err != nil {
		t.Fatal(err)
	}
	server, err := pki.NodeServerURL(inv)
	if err != nil {
		t.Fatal(err)
	}
	ds := map[string]*appsv1.DaemonSet{}
	var netConf string
	for _, o := range objs {
		switch o := o.(type) {
		case *appsv1.DaemonSet:
			ds[o.Name] = o
		case *corev1.ConfigMap:
			netConf = o.Data["net-conf.json"]
		}
	}
	var conf struct {
		Network        string
		EnableNFTables bool
		Backend        struct {
			Type string
			Port int
		}
	}
	if err := json.Unmarshal([]byte(netConf), &conf); err != nil {
		t.Fatalf("net-conf.json %q: %v", netConf, err)
	}
	if conf.Network != "10.32.0.0/16" || conf.Backend.Type != "vxlan" || conf.Backend.Port != 8472 || conf.EnableNFTables {
		t.Errorf("net-conf.json = %+v", conf)
	}
	for name, want := range map[string]struct{ image, arg string }{
		FlannelDaemonSet:    {FlannelImage, "--kube-subnet-mgr"},
		KubeRouterDaemonSet: {KubeRouterImage, "--run-router=false"},
	} {
		d := ds[name]
		if d == nil {
			t.Fatalf("no DaemonSet %s", name)
		}
		spec := d.Spec.Template.Spec
		c := spec.Containers[0]
		if c.Image != want.image || !strings.Contains(strings.Join(c.Command, " "), want.arg) {
			t.Errorf("%s: image %s, command %v", name, c.Image, c.Command)
		}
		if !spec.HostNetwork || c.SecurityContext == nil || !*c.SecurityContext.Privileged || len(spec.Tolerations) != 1 || spec.Tolerations[0].Operator != corev1.TolerationOpExists {
			t.Errorf("%s: want host network, privileged, every taint tolerated", name)
		}
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		// kube-proxy's endpoint, not the Service network that kube-proxy makes.
		if got := "https://" + net.JoinHostPort(env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"]); got != server {
			t.Errorf("%s: API endpoint %s; want kube-proxy's %s", name, got, server)
		}
	}
	if !strings.Contains(strings.Join(ds[FlannelDaemonSet].Spec.Template.Spec.Containers[0].Command, " "), "--iface=$(HOST_IP)") {
		t.Error("flanneld does not use the node's own address")
	}
	// Another pod subnet: another net-conf digest on the template, so the flannel pods roll.
	before := ds[FlannelDaemonSet].Spec.Template.Annotations[netConfAnnotation]
	inv.Cluster.PodSubnet = "10.33.0.0/16"
	objs, _ = NetworkObjects(inv, inventory.CNIFlannel)
	for _, o := range objs {
		if d, ok := o.(*appsv1.DaemonSet); ok && d.Name == FlannelDaemonSet && (d.Spec.Template.Annotations[netConfAnnotation] == before || before == "") {
			t.Errorf("net-conf digest %q did not change with the pod subnet", before)
		}
	}
}

func TestFlannelCNIHasTheOverlayMTUAndNoMasquerade(t *testing.T) {
	for _, tc := range []struct {
		link, want int
	}{{0, 1450}, {1500, 1450}, {9000, 8950}} {
		f := FlannelCNI("10.244.3.0/24", OverlayMTU(tc.link))
		var conf struct {
			Plugins []map[string]any `json:"plugins"`
		}
		if err := json.Unmarshal(f.Data, &conf); err != nil {
			t.Fatal(err)
		}
		b := conf.Plugins[0]
		if f.Path != CNIConfigPath || b["type"] != "bridge" || b["mtu"] != float64(tc.want) || b["ipMasq"] != false {
			t.Errorf("link %d: %s", tc.link, f.Data)
		}
	}
	if b := string(BridgeCNI("10.244.3.0/24").Data); strings.Contains(b, "mtu") || !strings.Contains(b, `"ipMasq": true`) {
		t.Errorf("the bridge's conflist changed: %s", b)
	}
}
