package manifests

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	kubeproxyv1alpha1 "k8s.io/kube-proxy/config/v1alpha1"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	"sigs.k8s.io/yaml"

	"github.com/kubeforge/kubeforge/inventory"
)

func TestClusterConfigurationIsKubeadmV1beta4(t *testing.T) {
	inv := exampleInventory()
	inv.Cluster.APIServer.ExtraArgs = map[string]string{"v": "2", "audit-log-maxage": "7"}
	inv.Cluster.KeyType = "ecdsa"
	out, err := ClusterConfiguration(inv, ClusterParams{})
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	get := func(path string) any {
		var cur any = doc
		for _, k := range strings.Split(path, ".") {
			m, ok := cur.(map[string]any)
			if !ok {
				return nil
			}
			cur = m[k]
		}
		return cur
	}
	for path, want := range map[string]any{
		"apiVersion":                  "kubeadm.k8s.io/v1beta4",
		"kind":                        "ClusterConfiguration",
		"clusterName":                 "demo",
		"kubernetesVersion":           "v1.37.2",
		"controlPlaneEndpoint":        "k8s.example.test:6443",
		"certificatesDir":             "/etc/kubernetes/pki",
		"imageRepository":             "registry.k8s.io",
		"encryptionAlgorithm":         "ECDSA-P256",
		"certificateValidityPeriod":   "8760h0m0s",
		"caCertificateValidityPeriod": "87600h0m0s",
		"etcd.local.dataDir":          "/var/lib/etcd",
		"networking.podSubnet":        "10.244.0.0/16",
		"networking.serviceSubnet":    "10.96.0.0/12",
		"networking.dnsDomain":        "cluster.local",
	} {
		if got := get(path); got != want {
			t.Errorf("%s = %v, want %v", path, got, want)
		}
	}
	sans, _ := get("apiServer.certSANs").([]any)
	if len(sans) != 2 || sans[0] != "k8s.example.test" {
		t.Errorf("apiServer.certSANs = %v", sans)
	}
	// v1beta4 extraArgs are a list of {name, value}, here sorted by name: kubeforge's own flags
	// (TestKubeadmConfigRecordsKubeforgeFlags) and the user's, whose audit-log-maxage wins.
	args, _ := get("apiServer.extraArgs").([]any)
	var names []string
	for _, a := range args {
		m, _ := a.(map[string]any)
		names = append(names, fmt.Sprint(m["name"], "=", m["value"]))
	}
	if !sort.StringsAreSorted(names) || !slices.Contains(names, "audit-log-maxage=7") || !slices.Contains(names, "v=2") {
		t.Errorf("apiServer.extraArgs = %v, want them sorted by name, with audit-log-maxage=7 and v=2", names)
	}

	// Strictly decodable into the local mirror of v1beta4 (no field it does not have).
	var cc clusterConfiguration
	if err := yaml.UnmarshalStrict(out, &cc); err != nil {
		t.Errorf("strict decode: %v", err)
	}

	inv.Cluster.KeyType = "dsa"
	if _, err := ClusterConfiguration(inv, ClusterParams{}); err == nil {
		t.Error("unknown key type accepted")
	}
}

func TestClusterConfigurationGolden(t *testing.T) {
	out, err := ClusterConfiguration(exampleInventory(), ClusterParams{})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "clusterconfiguration", out)
}

func objectName(o runtime.Object) string {
	m := o.(interface {
		GetNamespace() string
		GetName() string
	})
	gvk := o.GetObjectKind().GroupVersionKind()
	return gvk.Kind + " " + m.GetNamespace() + "/" + m.GetName()
}

func TestClusterObjectsDecodeThroughClientGoScheme(t *testing.T) {
	objs, err := ClusterObjects(exampleInventory(), ClusterParams{})
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) == 0 {
		t.Fatal("no objects")
	}
	if first := objectName(objs[0]); first != "ClusterRoleBinding /kubeadm:cluster-admins" {
		t.Errorf("first object %s, want the cluster-admins binding", first)
	}
	seen := map[string]bool{}
	for _, o := range objs {
		gvk := o.GetObjectKind().GroupVersionKind()
		if gvk.Kind == "" || gvk.Version == "" {
			t.Fatalf("%T has no TypeMeta", o)
		}
		name := objectName(o)
		if seen[name] {
			t.Errorf("%s appears twice", name)
		}
		seen[name] = true
		data, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		back, got, err := scheme.Codecs.UniversalDeserializer().Decode(data, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if *got != gvk {
			t.Errorf("%s: decoded as %v", name, *got)
		}
		if !equality.Semantic.DeepEqual(back, o) {
			t.Errorf("%s: does not round-trip through the scheme", name)
		}
	}
	for _, want := range []string{
		"ConfigMap kube-system/kubeadm-config", "Role kube-system/kubeadm:nodes-kubeadm-config", "RoleBinding kube-system/kubeadm:nodes-kubeadm-config",
		"ConfigMap kube-system/kubelet-config", "Role kube-system/kubeadm:kubelet-config", "RoleBinding kube-system/kubeadm:kubelet-config",
		"ClusterRoleBinding /kubeadm:kubelet-bootstrap", "ClusterRoleBinding /kubeadm:node-autoapprove-bootstrap",
		"ClusterRoleBinding /kubeadm:node-autoapprove-certificate-rotation", "ClusterRole /kubeadm:get-nodes", "ClusterRoleBinding /kubeadm:get-nodes",
		"ClusterRoleBinding /kubeadm:apiserver-kubelet-client",
		"Role kube-public/kubeadm:bootstrap-signer-clusterinfo", "RoleBinding kube-public/kubeadm:bootstrap-signer-clusterinfo",
		"ServiceAccount kube-system/kube-proxy", "ClusterRoleBinding /kubeadm:node-proxier", "ConfigMap kube-system/kube-proxy",
		"Role kube-system/kube-proxy", "RoleBinding kube-system/kube-proxy", "DaemonSet kube-system/kube-proxy",
		"ServiceAccount kube-system/coredns", "ClusterRole /system:coredns", "ClusterRoleBinding /system:coredns",
		"ConfigMap kube-system/coredns", "Deployment kube-system/coredns", "Service kube-system/kube-dns",
	} {
		if !seen[want] {
			t.Errorf("missing %s", want)
		}
	}
}

// find returns the object of type T named name.
func find[T runtime.Object](t *testing.T, objs []runtime.Object, name string) T {
	t.Helper()
	for _, o := range objs {
		if v, ok := o.(T); ok && strings.HasSuffix(objectName(o), "/"+name) {
			return v
		}
	}
	var zero T
	t.Fatalf("no %T %s", zero, name)
	return zero
}

func TestClusterObjectsContent(t *testing.T) {
	inv := exampleInventory()
	objs, err := ClusterObjects(inv, ClusterParams{})
	if err != nil {
		t.Fatal(err)
	}
	anon := find[*rbacv1.RoleBinding](t, objs, "kubeadm:bootstrap-signer-clusterinfo")
	if len(anon.Subjects) != 1 || anon.Subjects[0].Name != "system:anonymous" || anon.Subjects[0].Kind != "User" {
		t.Errorf("cluster-info binding subjects %v", anon.Subjects)
	}
	ciRole := find[*rbacv1.Role](t, objs, "kubeadm:bootstrap-signer-clusterinfo")
	if r := ciRole.Rules; len(r) != 1 || len(r[0].ResourceNames) != 1 || r[0].ResourceNames[0] != "cluster-info" || len(r[0].Verbs) != 1 || r[0].Verbs[0] != "get" {
		t.Errorf("cluster-info role grants more than get cluster-info: %v", r)
	}

	cc := find[*corev1.ConfigMap](t, objs, "kubeadm-config")
	want, _ := ClusterConfiguration(inv, ClusterParams{})
	if cc.Data["ClusterConfiguration"] != string(want) {
		t.Error("kubeadm-config does not hold ClusterConfiguration")
	}

	kc := find[*corev1.ConfigMap](t, objs, "kubelet-config")
	var kcfg kubeletv1beta1.KubeletConfiguration
	if err := yaml.UnmarshalStrict([]byte(kc.Data["kubelet"]), &kcfg); err != nil {
		t.Fatalf("kubelet-config: %v", err)
	}
	if kcfg.ContainerRuntimeEndpoint != "" || kcfg.FailCgroupV1 != nil || kcfg.ClusterDNS[0] != "10.96.0.10" {
		t.Errorf("kubelet-config has per-host fields or wrong DNS: %q %v %v", kcfg.ContainerRuntimeEndpoint, kcfg.FailCgroupV1, kcfg.ClusterDNS)
	}
	// As kubeadm: a generated config carries its hash, one the user set parts of does not.
	wantHash := fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(kc.Data["kubelet"])))
	if userKubeletConfig(inv) {
		wantHash = ""
	}
	if got := kc.Annotations[ComponentConfigHashAnnotation]; got != wantHash {
		t.Errorf("kubelet-config hash %q, want %q", got, wantHash)
	}

	kp := find[*corev1.ConfigMap](t, objs, "kube-proxy")
	var pcfg kubeproxyv1alpha1.KubeProxyConfiguration
	if err := yaml.UnmarshalStrict([]byte(kp.Data["config.conf"]), &pcfg); err != nil {
		t.Fatalf("kube-proxy config.conf: %v", err)
	}
	if pcfg.Mode != "iptables" || pcfg.ClusterCIDR != "10.244.0.0/16" || pcfg.Conntrack.MaxPerCore == nil || *pcfg.Conntrack.MaxPerCore != 0 ||
		pcfg.ClientConnection.Kubeconfig != "/var/lib/kube-proxy/kubeconfig.conf" || pcfg.BindAddress != "0.0.0.0" {
		t.Errorf("kube-proxy config: mode %q cidr %q maxPerCore %v kubeconfig %q bind %q", pcfg.Mode, pcfg.ClusterCIDR, pcfg.Conntrack.MaxPerCore, pcfg.ClientConnection.Kubeconfig, pcfg.BindAddress)
	}
	kcfgFile, err := clientcmd.Load([]byte(kp.Data["kubeconfig.conf"]))
	if err != nil {
		t.Fatalf("kube-proxy kubeconfig.conf: %v", err)
	}
	if c := kcfgFile.Clusters["default"]; c == nil || c.Server != "https://k8s.example.test:6443" || c.CertificateAuthority != "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt" {
		t.Errorf("kube-proxy kubeconfig cluster %+v", c)
	}
	if u := kcfgFile.AuthInfos["default"]; u == nil || u.TokenFile != "/var/run/secrets/kubernetes.io/serviceaccount/token" {
		t.Errorf("kube-proxy kubeconfig user %+v", u)
	}
	ds := find[*appsv1.DaemonSet](t, objs, "kube-proxy")
	if img := ds.Spec.Template.Spec.Containers[0].Image; img != "registry.k8s.io/kube-proxy:v1.37.2" {
		t.Errorf("kube-proxy image %q", img)
	}

	svc := find[*corev1.Service](t, objs, "kube-dns")
	if svc.Spec.ClusterIP != "10.96.0.10" || len(svc.Spec.Ports) != 3 {
		t.Errorf("kube-dns %s ports %v", svc.Spec.ClusterIP, svc.Spec.Ports)
	}
	dep := find[*appsv1.Deployment](t, objs, "coredns")
	if *dep.Spec.Replicas != 2 || dep.Spec.Template.Spec.Containers[0].Image != "registry.k8s.io/coredns/coredns:v1.14.6" {
		t.Errorf("coredns replicas %d image %q", *dep.Spec.Replicas, dep.Spec.Template.Spec.Containers[0].Image)
	}
	core := find[*corev1.ConfigMap](t, objs, "coredns").Data["Corefile"]
	for _, want := range []string{"kubernetes cluster.local in-addr.arpa ip6.arpa {", "disable success cluster.local", "forward . /etc/resolv.conf {"} {
		if !strings.Contains(core, want) {
			t.Errorf("Corefile lacks %q", want)
		}
	}
}

func TestClusterObjectsWithoutEndpointUseFirstControlPlane(t *testing.T) {
	inv := exampleInventory()
	inv.Cluster.ControlPlaneEndpoint = ""
	objs, err := ClusterObjects(inv, ClusterParams{})
	if err != nil {
		t.Fatal(err)
	}
	// Several control planes: every node reaches the API on 127.0.0.1:6443
	// (the node-local proxy on a worker, its own API server on a control plane).
	kp := find[*corev1.ConfigMap](t, objs, "kube-proxy")
	if len(inv.ControlPlanes()) < 2 || !strings.Contains(kp.Data["kubeconfig.conf"], "server: https://127.0.0.1:6443") {
		t.Errorf("kube-proxy server of a cluster of %d control planes is not the node-local proxy:\n%s", len(inv.ControlPlanes()), kp.Data["kubeconfig.conf"])
	}
	// One control plane: its address.
	var one []*inventory.Host
	for _, h := range inv.Hosts {
		if !h.IsControlPlane() || len(one) == 0 {
			one = append(one, h)
		}
	}
	inv.Hosts = one
	if objs, err = ClusterObjects(inv, ClusterParams{}); err != nil {
		t.Fatal(err)
	}
	kp = find[*corev1.ConfigMap](t, objs, "kube-proxy")
	if !strings.Contains(kp.Data["kubeconfig.conf"], "server: https://10.0.0.11:6443") {
		t.Errorf("kube-proxy server is not the only control plane:\n%s", kp.Data["kubeconfig.conf"])
	}

	inv.Hosts = []*inventory.Host{{Name: "w", Address: "10.0.0.5", Roles: []inventory.Role{inventory.RoleWorker}}}
	if _, err := ClusterObjects(inv, ClusterParams{}); err == nil {
		t.Error("no control plane and no endpoint was accepted")
	}
}

func TestClusterObjectsGolden(t *testing.T) {
	render := func() []byte {
		objs, err := ClusterObjects(exampleInventory(), ClusterParams{})
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		for _, o := range objs {
			data, err := yaml.Marshal(o)
			if err != nil {
				t.Fatal(err)
			}
			b.WriteString("---\n")
			b.Write(data)
		}
		return b.Bytes()
	}
	a, b := render(), render()
	if !bytes.Equal(a, b) {
		t.Fatal("two renders differ")
	}
	golden(t, "clusterobjects", a)
}

func TestImagesHonourRepository(t *testing.T) {
	inv := exampleInventory()
	def := Images(inv)
	if def["coredns"] != "registry.k8s.io/coredns/coredns:v1.14.6" || def["pause"] != "registry.k8s.io/pause:3.10.2" || def["etcd"] != "registry.k8s.io/etcd:3.7.0-0" {
		t.Errorf("default images %v", def)
	}
	inv.Cluster.ImageRepository = "mirror.example.test/k8s/"
	inv.Cluster.KubernetesVersion = "1.37.2+build.1"
	got := Images(inv)
	want := map[string]string{
		"pause":                   "mirror.example.test/k8s/pause:3.10.2",
		"etcd":                    "mirror.example.test/k8s/etcd:3.7.0-0",
		"kube-apiserver":          "mirror.example.test/k8s/kube-apiserver:v1.37.2_build.1",
		"kube-controller-manager": "mirror.example.test/k8s/kube-controller-manager:v1.37.2_build.1",
		"kube-scheduler":          "mirror.example.test/k8s/kube-scheduler:v1.37.2_build.1",
		"kube-proxy":              "mirror.example.test/k8s/kube-proxy:v1.37.2_build.1",
		"coredns":                 "mirror.example.test/k8s/coredns:v1.14.6",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("images\n got %v\nwant %v", got, want)
	}
}

func TestBridgeCNI(t *testing.T) {
	tests := []struct {
		cidr, subnet, route string
	}{
		{"10.244.1.0/24", "10.244.1.0/24", "0.0.0.0/0"},
		{"10.244.2.7/24", "10.244.2.0/24", "0.0.0.0/0"},
		{"fd00:10:244:1::/64", "fd00:10:244:1::/64", "::/0"},
	}
	for _, tt := range tests {
		t.Run(tt.cidr, func(t *testing.T) {
			f := BridgeCNI(tt.cidr)
			if f.Path != "/etc/cni/net.d/10-kubeforge.conflist" || f.Mode != 0o644 {
				t.Errorf("file %s %v", f.Path, f.Mode)
			}
			var conf struct {
				CNIVersion string `json:"cniVersion"`
				Name       string `json:"name"`
				Plugins    []struct {
					Type        string `json:"type"`
					Bridge      string `json:"bridge"`
					IsGateway   bool   `json:"isGateway"`
					IPMasq      bool   `json:"ipMasq"`
					HairpinMode bool   `json:"hairpinMode"`
					IPAM        struct {
						Type   string                `json:"type"`
						Ranges [][]map[string]string `json:"ranges"`
						Routes []map[string]string   `json:"routes"`
					} `json:"ipam"`
					Capabilities map[string]bool `json:"capabilities"`
				} `json:"plugins"`
			}
			if err := json.Unmarshal(f.Data, &conf); err != nil {
				t.Fatal(err)
			}
			if conf.CNIVersion != "1.0.0" || len(conf.Plugins) != 2 {
				t.Fatalf("version %q, %d plugins", conf.CNIVersion, len(conf.Plugins))
			}
			br, pm := conf.Plugins[0], conf.Plugins[1]
			if br.Type != "bridge" || br.Bridge != "cni0" || !br.IsGateway || !br.IPMasq || !br.HairpinMode || br.IPAM.Type != "host-local" {
				t.Errorf("bridge plugin %+v", br)
			}
			if len(br.IPAM.Ranges) != 1 || len(br.IPAM.Ranges[0]) != 1 || br.IPAM.Ranges[0][0]["subnet"] != tt.subnet {
				t.Errorf("ranges %v, want [[{subnet: %s}]]", br.IPAM.Ranges, tt.subnet)
			}
			if len(br.IPAM.Routes) != 1 || br.IPAM.Routes[0]["dst"] != tt.route {
				t.Errorf("routes %v", br.IPAM.Routes)
			}
			if pm.Type != "portmap" || !pm.Capabilities["portMappings"] {
				t.Errorf("portmap plugin %+v", pm)
			}
		})
	}
	golden(t, "cni", BridgeCNI("10.244.1.0/24").Data)
}

// On cgroup v1 hosts the kubelet-config ConfigMap carries failCgroupV1: false,
// so a kubelet that plain `kubeadm join` configures from it starts there too.
func TestKubeletConfigMapFailCgroupV1(t *testing.T) {
	for _, v1 := range []bool{false, true} {
		objs, err := ClusterObjects(exampleInventory(), ClusterParams{CgroupV1: v1})
		if err != nil {
			t.Fatal(err)
		}
		var data string
		for _, o := range objs {
			if cm, ok := o.(*corev1.ConfigMap); ok && cm.Name == KubeletConfigConfigMap {
				data = cm.Data[KubeletConfigConfigMapKey]
			}
		}
		if data == "" {
			t.Fatal("no kubelet-config ConfigMap")
		}
		if got := strings.Contains(data, "failCgroupV1: false"); got != v1 {
			t.Errorf("cgroup v1 %v: failCgroupV1: false in the ConfigMap %v:\n%s", v1, got, data)
		}
	}
}

// systemd-resolved's resolv.conf goes to the kubelet of a host that runs it,
// unless the inventory names one.
func TestKubeletResolvConfFromHost(t *testing.T) {
	inv := exampleInventory()
	inv.Cluster.Kubelet.ResolvConf = ""
	cfg, err := KubeletConfiguration(inv, KubeletParams{ResolvConf: SystemdResolvConf})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ResolverConfig == nil || *cfg.ResolverConfig != SystemdResolvConf {
		t.Errorf("resolvConf %v; want %s", cfg.ResolverConfig, SystemdResolvConf)
	}
	inv.Cluster.Kubelet.ResolvConf = "/etc/kubeforge/resolv.conf"
	if cfg, err = KubeletConfiguration(inv, KubeletParams{ResolvConf: SystemdResolvConf}); err != nil {
		t.Fatal(err)
	}
	if *cfg.ResolverConfig != "/etc/kubeforge/resolv.conf" {
		t.Errorf("the inventory's resolvConf lost to the host's: %s", *cfg.ResolverConfig)
	}
}

func TestImagesFollowTheMinorsKubeadmPins(t *testing.T) {
	for _, tc := range []struct {
		version                 string
		pause, etcd, coredns, k string
	}{
		{"v1.35.4", "3.10.1", "3.6.6-0", "v1.13.1", "v1.35.4"},
		{"v1.36.3", "3.10.2", "3.6.8-0", "v1.14.2", "v1.36.3"},
		{"v1.37.2", "3.10.2", "3.7.0-0", "v1.14.6", "v1.37.2"},
		{"v1.38.0-beta.0", "3.10.2", "3.7.1-0", "v1.15.0", "v1.38.0-beta.0"},
	} {
		t.Run(tc.version, func(t *testing.T) {
			inv := exampleInventory()
			inv.Cluster.KubernetesVersion = tc.version
			got := Images(inv)
			want := map[string]string{
				"pause":                   "registry.k8s.io/pause:" + tc.pause,
				"etcd":                    "registry.k8s.io/etcd:" + tc.etcd,
				"coredns":                 "registry.k8s.io/coredns/coredns:" + tc.coredns,
				"kube-apiserver":          "registry.k8s.io/kube-apiserver:" + tc.k,
				"kube-controller-manager": "registry.k8s.io/kube-controller-manager:" + tc.k,
				"kube-scheduler":          "registry.k8s.io/kube-scheduler:" + tc.k,
				"kube-proxy":              "registry.k8s.io/kube-proxy:" + tc.k,
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("images\n got %v\nwant %v", got, want)
			}
		})
	}
}

func TestKubeProxyModeIsSetFromV137AsKubeadmDoes(t *testing.T) {
	for _, tc := range []struct{ version, mode string }{
		{"v1.35.4", ""},
		{"v1.36.3", ""},
		{"v1.37.2", "iptables"},
		{"v1.38.0-beta.0", "iptables"},
	} {
		inv := exampleInventory()
		inv.Cluster.KubernetesVersion = tc.version
		if got := KubeProxyConfiguration(inv, inv.FirstControlPlane()).Mode; string(got) != tc.mode {
			t.Errorf("%s: kube-proxy mode %q, want %q (kubeadm up to v1.36 leaves it to kube-proxy's default)", tc.version, got, tc.mode)
		}
	}
}

func TestKubeProxyBindsToTheSeedsAddressFamily(t *testing.T) {
	inv := exampleInventory()
	inv.Hosts[1].Address = "fd00::12" // cp2; cp1, the file's first, stays IPv4
	for _, tc := range []struct {
		seed *inventory.Host
		bind string
	}{
		{inv.Host("cp1"), "0.0.0.0"},
		{inv.Host("cp2"), "::"},
	} {
		objs, err := ClusterObjects(inv, ClusterParams{Seed: tc.seed})
		if err != nil {
			t.Fatal(err)
		}
		var cfg kubeproxyv1alpha1.KubeProxyConfiguration
		if err := yaml.Unmarshal([]byte(find[*corev1.ConfigMap](t, objs, "kube-proxy").Data["config.conf"]), &cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.BindAddress != tc.bind {
			t.Errorf("seed %s: kube-proxy binds to %q; want %q", tc.seed.Name, cfg.BindAddress, tc.bind)
		}
	}
}
