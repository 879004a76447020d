package manifests

import (
	"path"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/kubeforge/kubeforge/internal/nodefile"
	"github.com/kubeforge/kubeforge/inventory"
)

// decodePods decodes each manifest strictly and through client-go's scheme.
func decodePods(t *testing.T, files []nodefile.File) map[string]*corev1.Pod {
	t.Helper()
	pods := map[string]*corev1.Pod{}
	for _, f := range files {
		var p corev1.Pod
		if err := yaml.UnmarshalStrict(f.Data, &p); err != nil {
			t.Fatalf("%s: strict decode: %v", f.Path, err)
		}
		obj, gvk, err := scheme.Codecs.UniversalDeserializer().Decode(f.Data, nil, nil)
		if err != nil {
			t.Fatalf("%s: scheme decode: %v", f.Path, err)
		}
		if want := (schema.GroupVersionKind{Version: "v1", Kind: "Pod"}); *gvk != want {
			t.Errorf("%s: decoded as %v, want %v", f.Path, *gvk, want)
		}
		if _, ok := obj.(*corev1.Pod); !ok {
			t.Errorf("%s: decoded to %T", f.Path, obj)
		}
		if want := path.Join(ManifestsDir, p.Name+".yaml"); f.Path != want {
			t.Errorf("pod %s written to %s, want %s", p.Name, f.Path, want)
		}
		if f.Mode != 0o600 {
			t.Errorf("%s: mode %v, want 0600", f.Path, f.Mode)
		}
		pods[p.Name] = &p
	}
	return pods
}

func flagValue(cmd []string, name string) (string, bool) {
	for _, a := range cmd {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func TestStaticPodsAreValidKubeadmPods(t *testing.T) {
	inv := exampleInventory()
	for _, h := range inv.ControlPlanes() {
		files, err := StaticPods(inv, h, ControlPlaneParams{Etcd: EtcdParams{}})
		if err != nil {
			t.Fatalf("%s: %v", h.Name, err)
		}
		pods := decodePods(t, files)
		for _, name := range []string{Etcd, KubeAPIServer, KubeControllerManager, KubeScheduler} {
			p, ok := pods[name]
			if !ok {
				t.Fatalf("%s: no %s manifest", h.Name, name)
			}
			if p.Namespace != "kube-system" || p.Labels["component"] != name || p.Labels["tier"] != "control-plane" {
				t.Errorf("%s/%s: metadata %v %v", h.Name, name, p.Namespace, p.Labels)
			}
			if !p.Spec.HostNetwork || p.Spec.PriorityClassName != "system-node-critical" || p.Spec.Priority == nil || *p.Spec.Priority != 2000001000 {
				t.Errorf("%s/%s: hostNetwork/priority wrong", h.Name, name)
			}
			if sc := p.Spec.SecurityContext; sc == nil || sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("%s/%s: seccomp profile not RuntimeDefault", h.Name, name)
			}
			if len(p.Spec.Containers) != 1 {
				t.Fatalf("%s/%s: %d containers", h.Name, name, len(p.Spec.Containers))
			}
			c := p.Spec.Containers[0]
			if c.Image != Images(inv)[name] || c.Command[0] != name {
				t.Errorf("%s/%s: image %q command %q", h.Name, name, c.Image, c.Command[0])
			}
			vols := map[string]corev1.Volume{}
			for _, v := range p.Spec.Volumes {
				if v.HostPath == nil || !path.IsAbs(v.HostPath.Path) {
					t.Errorf("%s/%s: volume %s is not an absolute host path", h.Name, name, v.Name)
				}
				vols[v.Name] = v
			}
			for _, m := range c.VolumeMounts {
				if _, ok := vols[m.Name]; !ok {
					t.Errorf("%s/%s: mount %s has no volume", h.Name, name, m.Name)
				}
			}
			if !slices.IsSortedFunc(p.Spec.Volumes, func(a, b corev1.Volume) int { return strings.Compare(a.Name, b.Name) }) {
				t.Errorf("%s/%s: volumes not sorted by name", h.Name, name)
			}
			if c.LivenessProbe == nil || c.StartupProbe == nil {
				t.Errorf("%s/%s: missing liveness or startup probe", h.Name, name)
			}
			if c.StartupProbe != nil && c.StartupProbe.FailureThreshold != 24 {
				t.Errorf("%s/%s: startup failureThreshold %d, want 24 (4m / 10s)", h.Name, name, c.StartupProbe.FailureThreshold)
			}
			if len(c.Ports) != 1 || c.Ports[0].Name != "probe-port" {
				t.Errorf("%s/%s: ports %v", h.Name, name, c.Ports)
			}
			// Flags are sorted by name, as kubeadm writes them.
			if !slices.IsSorted(c.Command[1:]) {
				t.Errorf("%s/%s: flags not sorted: %v", h.Name, name, c.Command[1:])
			}
		}
		ip := h.NodeIP()
		api := pods[KubeAPIServer]
		if got := api.Annotations[APIServerAdvertiseAddressAnnotation]; got != ip+":6443" {
			t.Errorf("%s: apiserver endpoint annotation %q", h.Name, got)
		}
		cmd := api.Spec.Containers[0].Command
		for flag, want := range map[string]string{
			"advertise-address":        ip,
			"authorization-mode":       "Node,RBAC",
			"etcd-servers":             "https://127.0.0.1:2379",
			"service-cluster-ip-range": "10.96.0.0/12",
			"service-account-issuer":   "https://kubernetes.default.svc.cluster.local",
			"client-ca-file":           "/etc/kubernetes/pki/ca.crt",
		} {
			if got, _ := flagValue(cmd, flag); got != want {
				t.Errorf("%s: kube-apiserver --%s=%q, want %q", h.Name, flag, got, want)
			}
		}
		probe := api.Spec.Containers[0].ReadinessProbe
		if probe == nil || probe.HTTPGet.Path != "/readyz" || probe.HTTPGet.Host != ip || probe.HTTPGet.Scheme != corev1.URISchemeHTTPS {
			t.Errorf("%s: apiserver readiness probe %+v", h.Name, probe)
		}
		cm := pods[KubeControllerManager].Spec.Containers[0].Command
		for flag, want := range map[string]string{
			"allocate-node-cidrs": "true", "cluster-cidr": "10.244.0.0/16",
			"service-cluster-ip-range": "10.96.0.0/12", "cluster-name": "demo",
		} {
			if got, _ := flagValue(cm, flag); got != want {
				t.Errorf("%s: kube-controller-manager --%s=%q, want %q", h.Name, flag, got, want)
			}
		}
		etcd := pods[Etcd]
		if got := etcd.Annotations[EtcdAdvertiseClientURLsAnnotation]; got != "https://"+ip+":2379" {
			t.Errorf("%s: etcd annotation %q", h.Name, got)
		}
		if got, _ := flagValue(etcd.Spec.Containers[0].Command, "name"); got != h.Name {
			t.Errorf("%s: etcd --name=%q", h.Name, got)
		}
	}
}

func TestStaticPodsEtcdMembership(t *testing.T) {
	inv := exampleInventory()
	cp1, cp2 := inv.Host("cp1"), inv.Host("cp2")
	both := "cp1=https://10.0.0.11:2380,cp2=https://10.0.0.12:2380"
	tests := []struct {
		name        string
		host        *inventory.Host
		params      EtcdParams
		wantCluster string
		wantState   string // "" = no --initial-cluster-state flag
	}{
		{"first member alone", cp1, EtcdParams{}, "cp1=https://10.0.0.11:2380", ""},
		{"first member, explicit new", cp1, EtcdParams{InitialCluster: "cp1=https://10.0.0.11:2380", InitialClusterState: "new"}, "cp1=https://10.0.0.11:2380", ""},
		{"joining member", cp2, EtcdParams{InitialCluster: both, InitialClusterState: "existing"}, both, "existing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files, err := StaticPods(inv, tt.host, ControlPlaneParams{Etcd: tt.params})
			if err != nil {
				t.Fatal(err)
			}
			cmd := decodePods(t, files)[Etcd].Spec.Containers[0].Command
			if got, _ := flagValue(cmd, "initial-cluster"); got != tt.wantCluster {
				t.Errorf("--initial-cluster=%q, want %q", got, tt.wantCluster)
			}
			got, ok := flagValue(cmd, "initial-cluster-state")
			if tt.wantState == "" && ok {
				t.Errorf("unexpected --initial-cluster-state=%q", got)
			}
			if tt.wantState != "" && got != tt.wantState {
				t.Errorf("--initial-cluster-state=%q, want %q", got, tt.wantState)
			}
		})
	}
}

func TestStaticPodsRejectBadInput(t *testing.T) {
	inv := exampleInventory()
	named := &inventory.Host{Name: "cpx", Address: "cp.example.test", Roles: []inventory.Role{inventory.RoleControlPlane}}
	tests := []struct {
		name    string
		host    *inventory.Host
		params  EtcdParams
		wantErr string
	}{
		{"worker host", inv.Host("w1"), EtcdParams{}, "not a control-plane host"},
		{"nil host", nil, EtcdParams{}, "not a control-plane host"},
		{"address not an IP", named, EtcdParams{}, "is not an IP address"},
		{"unknown state", inv.Host("cp1"), EtcdParams{InitialClusterState: "joining"}, `want "new" or "existing"`},
		{"existing without cluster", inv.Host("cp2"), EtcdParams{InitialClusterState: "existing"}, "needs the initial cluster"},
		{"cluster without this member", inv.Host("cp2"), EtcdParams{InitialCluster: "cp1=https://10.0.0.11:2380", InitialClusterState: "existing"}, "does not list this member"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := StaticPods(inv, tt.host, ControlPlaneParams{Etcd: tt.params})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestStaticPodsExtraArgsOverrideDefaults(t *testing.T) {
	inv := exampleInventory()
	inv.Cluster.APIServer.ExtraArgs = map[string]string{"secure-port": "7443", "audit-log-maxage": "7", "authorization-config": "/etc/kubernetes/authz.yaml"}
	inv.Cluster.Scheduler.ExtraArgs = map[string]string{"bind-address": "0.0.0.0"}
	inv.Cluster.Etcd.ExtraArgs = map[string]string{"listen-metrics-urls": "http://127.0.0.1:2382", "data-dir": "/data/etcd"}
	files, err := StaticPods(inv, inv.Host("cp1"), ControlPlaneParams{Etcd: EtcdParams{}})
	if err != nil {
		t.Fatal(err)
	}
	pods := decodePods(t, files)
	cmd := pods[KubeAPIServer].Spec.Containers[0].Command
	n := len(cmd)
	// Overrides replace the default in place of it and come last, sorted.
	if want := []string{"--audit-log-maxage=7", "--authorization-config=/etc/kubernetes/authz.yaml", "--secure-port=7443"}; !slices.Equal(cmd[n-3:], want) {
		t.Errorf("apiserver command tail %v, want %v", cmd[n-3:], want)
	}
	if slices.Contains(cmd, "--secure-port=6443") {
		t.Error("default --secure-port survived its override")
	}
	if _, ok := flagValue(cmd, "authorization-mode"); ok {
		t.Error("--authorization-mode is set although --authorization-config is given")
	}
	sched := pods[KubeScheduler].Spec.Containers[0]
	if sched.LivenessProbe.HTTPGet.Host != "" {
		t.Errorf("scheduler bound to 0.0.0.0 should probe without host, got %q", sched.LivenessProbe.HTTPGet.Host)
	}
	etcd := pods[Etcd].Spec.Containers[0]
	if etcd.Ports[0].ContainerPort != 2382 || etcd.LivenessProbe.HTTPGet.Host != "127.0.0.1" {
		t.Errorf("etcd probe port %d host %q, want 2382 127.0.0.1", etcd.Ports[0].ContainerPort, etcd.LivenessProbe.HTTPGet.Host)
	}
	for _, v := range pods[Etcd].Spec.Volumes {
		if v.Name == "etcd-data" && v.HostPath.Path != "/data/etcd" {
			t.Errorf("etcd-data volume at %s, want /data/etcd", v.HostPath.Path)
		}
	}
}

func TestStaticPodsGolden(t *testing.T) {
	inv := exampleInventory()
	initial := "cp1=https://10.0.0.11:2380,cp2=https://10.0.0.12:2380,cp3=https://10.0.0.13:2380"
	for _, h := range inv.ControlPlanes() {
		params := EtcdParams{InitialCluster: initial, InitialClusterState: "existing"}
		if h == inv.FirstControlPlane() {
			params = EtcdParams{}
		}
		first, err := StaticPods(inv, h, ControlPlaneParams{Etcd: params})
		if err != nil {
			t.Fatal(err)
		}
		again, err := StaticPods(inv, h, ControlPlaneParams{Etcd: params})
		if err != nil {
			t.Fatal(err)
		}
		a, b := joinFiles(first), joinFiles(again)
		if string(a) != string(b) {
			t.Fatalf("%s: two renders differ", h.Name)
		}
		golden(t, "staticpods-"+h.Name, a)
	}
}

// With an external CA (its key stays with the user) the controller manager's
// signing flags are empty, as kubeadm sets them, instead of naming a key that
// is never pushed.
func TestStaticPodsExternalCA(t *testing.T) {
	inv := exampleInventory()
	for _, external := range []bool{false, true} {
		files, err := StaticPods(inv, inv.Host("cp1"), ControlPlaneParams{ExternalCA: external})
		if err != nil {
			t.Fatal(err)
		}
		cmd := decodePods(t, files)[KubeControllerManager].Spec.Containers[0].Command
		key, ok := flagValue(cmd, "cluster-signing-key-file")
		want := "/etc/kubernetes/pki/ca.key"
		if external {
			want = ""
		}
		if !ok || key != want {
			t.Errorf("external CA %v: --cluster-signing-key-file=%q (set %v), want %q", external, key, ok, want)
		}
	}
}

func TestControllerManagerMountsTheFlexVolumeDirUpToV135(t *testing.T) {
	for _, tc := range []struct {
		version, pluginDir string // pluginDir: controllerManager.extraArgs flex-volume-plugin-dir
		want               string // the mounted directory, "" for none
	}{
		{"v1.35.4", "", FlexVolumeDir},
		{"v1.35.4", "/opt/flex", "/opt/flex"},
		{"v1.36.3", "", ""},
		{"v1.37.2", "", ""},
	} {
		t.Run(tc.version+" "+tc.pluginDir, func(t *testing.T) {
			inv := exampleInventory()
			inv.Cluster.KubernetesVersion = tc.version
			if tc.pluginDir != "" {
				inv.Cluster.ControllerManager.ExtraArgs = map[string]string{"flex-volume-plugin-dir": tc.pluginDir}
			}
			files, err := StaticPods(inv, inv.Host("cp1"), ControlPlaneParams{})
			if err != nil {
				t.Fatal(err)
			}
			pod := decodePods(t, files)[KubeControllerManager]
			var vol, mount string
			for _, v := range pod.Spec.Volumes {
				if v.Name == "flexvolume-dir" {
					vol = v.HostPath.Path
					if *v.HostPath.Type != corev1.HostPathDirectoryOrCreate {
						t.Errorf("flexvolume-dir host path type %s, want DirectoryOrCreate", *v.HostPath.Type)
					}
				}
			}
			for _, m := range pod.Spec.Containers[0].VolumeMounts {
				if m.Name == "flexvolume-dir" {
					mount = m.MountPath
					if m.ReadOnly {
						t.Error("flexvolume-dir is mounted read-only; kubeadm mounts it read-write")
					}
				}
			}
			if vol != tc.want || mount != tc.want {
				t.Errorf("flexvolume-dir volume %q mounted at %q, want %q", vol, mount, tc.want)
			}
		})
	}
}
