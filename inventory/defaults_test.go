package inventory

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestLoadFillsDefaults(t *testing.T) {
	t.Setenv("SSH_AUTH_SOCK", "/tmp/agent.sock")
	inv, err := parseIn(t, t.TempDir(), head+oneCP)
	if err != nil {
		t.Fatal(err)
	}
	c := inv.Cluster
	got := map[string]any{
		"name": c.Name, "kubernetesVersion": c.KubernetesVersion, "podSubnet": c.PodSubnet,
		"serviceSubnet": c.ServiceSubnet, "dnsDomain": c.DNSDomain, "imageRepository": c.ImageRepository,
		"containerRuntimeEndpoint": c.ContainerRuntimeEndpoint, "certificateValidity": c.CertificateValidity.Duration,
		"keyType": c.KeyType, "cni.plugin": c.CNI.Plugin, "kubelet.cgroupDriver": c.Kubelet.CgroupDriver,
		"ssh.user": inv.SSH.User, "ssh.port": inv.SSH.Port, "ssh.connectTimeout": inv.SSH.ConnectTimeout.Duration,
		"hosts[0].port": inv.Hosts[0].Port, "hosts[0].user": inv.Hosts[0].User,
	}
	want := map[string]any{
		"name": "kubeforge", "kubernetesVersion": "v1.37.2", "podSubnet": "10.244.0.0/16",
		"serviceSubnet": "10.96.0.0/12", "dnsDomain": "cluster.local", "imageRepository": "registry.k8s.io",
		"containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock", "certificateValidity": 8760 * time.Hour,
		"keyType": "rsa", "cni.plugin": "", // decided against the cluster: docs/network.md
		"kubelet.cgroupDriver": "systemd",
		"ssh.user":             "root", "ssh.port": 22, "ssh.connectTimeout": 10 * time.Second,
		"hosts[0].port": 22, "hosts[0].user": "root",
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s = %v, want %v", k, got[k], w)
		}
	}
	if inv.SSH.UseAgent == nil || !*inv.SSH.UseAgent {
		t.Errorf("ssh.useAgent = %v, want true when SSH_AUTH_SOCK is set", inv.SSH.UseAgent)
	}
	if inv.Hosts[0].Line != 4 {
		t.Errorf("hosts[0].Line = %d, want 4", inv.Hosts[0].Line)
	}
}

func TestUseAgentDefaultsToFalseWithoutAgentButKeepsExplicitValue(t *testing.T) {
	t.Setenv("SSH_AUTH_SOCK", "")
	inv, err := parseIn(t, t.TempDir(), head+oneCP)
	if err != nil {
		t.Fatal(err)
	}
	if inv.SSH.UseAgent == nil || *inv.SSH.UseAgent {
		t.Errorf("ssh.useAgent = %v, want false without SSH_AUTH_SOCK", inv.SSH.UseAgent)
	}
	inv, err = parseIn(t, t.TempDir(), head+"ssh:\n  useAgent: true\n"+oneCP)
	if err != nil {
		t.Fatal(err)
	}
	if inv.SSH.UseAgent == nil || !*inv.SSH.UseAgent {
		t.Errorf("explicit ssh.useAgent: true was overridden")
	}
}

func TestKubernetesVersionWithoutVIsNormalised(t *testing.T) {
	inv, err := parseIn(t, t.TempDir(), head+"cluster:\n  kubernetesVersion: 1.37.0\n"+oneCP)
	if err != nil {
		t.Fatal(err)
	}
	if inv.Cluster.KubernetesVersion != "v1.37.0" {
		t.Errorf("kubernetesVersion = %q, want v1.37.0", inv.Cluster.KubernetesVersion)
	}
}

func TestRelativePathsResolveAgainstTheInventoryDir(t *testing.T) {
	dir := writeFiles(t)
	home := t.TempDir()
	t.Setenv("HOME", home)
	if err := os.WriteFile(filepath.Join(home, "key"), []byte("k"), 0o600); err != nil {
		t.Fatal(err)
	}
	doc := head + `cluster:
  artifacts: somedir
  cni: {plugin: manifest, manifest: cni.yaml}
ssh:
  identityFiles: [id_test, ~/key]
  knownHosts: [known]
  bastion: {address: 10.0.0.100}
hosts:
  - name: cp1
    address: 10.0.0.1
    roles: [control-plane]
    ssh: {identityFiles: [./id_test], user: admin, port: 2222}
`
	// Load through a relative path, from another working directory.
	t.Chdir(filepath.Dir(dir))
	if err := os.WriteFile(filepath.Join(dir, "inv.yaml"), []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	inv, err := Load(filepath.Join(filepath.Base(dir), "inv.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	checks := map[string][2]string{
		"path":                  {inv.Path, filepath.Join(dir, "inv.yaml")},
		"artifacts":             {inv.Cluster.Artifacts, filepath.Join(dir, "somedir")},
		"cni.manifest":          {inv.Cluster.CNI.Manifest, filepath.Join(dir, "cni.yaml")},
		"ssh.identityFiles[0]":  {inv.SSH.IdentityFiles[0], filepath.Join(dir, "id_test")},
		"ssh.identityFiles[1]":  {inv.SSH.IdentityFiles[1], filepath.Join(home, "key")},
		"ssh.knownHosts[0]":     {inv.SSH.KnownHosts[0], filepath.Join(dir, "known")},
		"bastion.identityFiles": {inv.SSH.Bastion.IdentityFiles[1], filepath.Join(home, "key")},
		"bastion.user":          {inv.SSH.Bastion.User, "root"},
		"host identity":         {inv.Hosts[0].SSH.IdentityFiles[0], filepath.Join(dir, "id_test")},
		"host user":             {inv.Hosts[0].User, "admin"},
		"state dir":             {inv.StateDir(), filepath.Join(dir, "kubeforge.kubeforge")},
	}
	for k, c := range checks {
		if c[0] != c[1] {
			t.Errorf("%s = %q, want %q", k, c[0], c[1])
		}
	}
	if inv.Hosts[0].Port != 2222 || inv.SSH.Bastion.Port != 22 {
		t.Errorf("host port = %d, bastion port = %d; want 2222 and 22", inv.Hosts[0].Port, inv.SSH.Bastion.Port)
	}
}

func TestEffectiveSSHMergesHostOverrides(t *testing.T) {
	no := false
	inv := &Inventory{
		SSH: SSH{User: "root", Port: 22, IdentityFiles: []string{"/a"}, KnownHosts: []string{"/kh"},
			ConnectTimeout: Duration{10 * time.Second}, PasswordEnv: "PW", Bastion: &Bastion{Address: "b", Port: 22}},
	}
	h := &Host{Name: "n", SSH: &SSH{User: "admin", IdentityFiles: []string{"/b"}, UseAgent: &no, ConnectTimeout: Duration{time.Minute}}, Port: 2200}
	got := inv.EffectiveSSH(h)
	want := SSH{User: "admin", Port: 2200, IdentityFiles: []string{"/b"}, UseAgent: &no, PasswordEnv: "PW",
		KnownHosts: []string{"/kh"}, ConnectTimeout: Duration{time.Minute}, Bastion: &Bastion{Address: "b", Port: 22}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("EffectiveSSH() = %+v, want %+v", got, want)
	}
	got.KnownHosts[0] = "changed"
	got.Bastion.Address = "changed"
	if inv.SSH.KnownHosts[0] != "/kh" || inv.SSH.Bastion.Address != "b" {
		t.Errorf("EffectiveSSH() result aliases the inventory")
	}
	if plain := inv.EffectiveSSH(&Host{Name: "m"}); plain.User != "root" || plain.Port != 22 || plain.IdentityFiles[0] != "/a" {
		t.Errorf("EffectiveSSH() without overrides = %+v", plain)
	}
}

func TestEndpointAndServerURL(t *testing.T) {
	cases := []struct {
		name, endpoint, internal string
		wantHost                 string
		wantPort                 int
		wantURL                  string
	}{
		{"first control plane node IP", "", "192.168.1.5", "192.168.1.5", 6443, "https://192.168.1.5:6443"},
		{"endpoint without port", "api.example.com", "", "api.example.com", 6443, "https://api.example.com:6443"},
		{"endpoint with port", "api.example.com:8443", "", "api.example.com", 8443, "https://api.example.com:8443"},
		{"ipv6 node IP", "", "fd00::5", "fd00::5", 6443, "https://[fd00::5]:6443"},
		{"bracketed ipv6 endpoint with port", "[fd00::10]:443", "", "fd00::10", 443, "https://[fd00::10]:443"},
		{"bare ipv6 endpoint", "fd00::10", "", "fd00::10", 6443, "https://[fd00::10]:6443"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			inv := &Inventory{
				Cluster: Cluster{ControlPlaneEndpoint: tc.endpoint},
				Hosts: []*Host{
					{Name: "w", Address: "10.0.0.9", Roles: []Role{RoleWorker}},
					{Name: "cp", Address: "10.0.0.1", InternalAddress: tc.internal, Roles: []Role{RoleControlPlane}},
				},
			}
			h, p := inv.Endpoint(inv.FirstControlPlane())
			if h != tc.wantHost || p != tc.wantPort {
				t.Errorf("Endpoint() = %q, %d; want %q, %d", h, p, tc.wantHost, tc.wantPort)
			}
			if u := inv.ServerURL(inv.FirstControlPlane()); u != tc.wantURL {
				t.Errorf("ServerURL() = %q, want %q", u, tc.wantURL)
			}
		})
	}
}

func TestEndpointIsOnTheSeedGivenNotTheFilesFirst(t *testing.T) {
	cp1 := &Host{Name: "cp1", Address: "10.0.0.1", Roles: []Role{RoleControlPlane}}
	cp2 := &Host{Name: "cp2", Address: "10.0.0.2", Roles: []Role{RoleControlPlane}}
	inv := &Inventory{Hosts: []*Host{cp1, cp2}}
	if got := inv.FirstControlPlane(); got != cp1 {
		t.Fatalf("FirstControlPlane() = %v; want cp1, the file's first", got)
	}
	if got := inv.ServerURL(cp2); got != "https://10.0.0.2:6443" {
		t.Errorf("ServerURL(cp2) = %q; want cp2's address", got)
	}
	if h, _ := inv.Endpoint(nil); h != "" {
		t.Errorf("Endpoint(nil) = %q; want none: no endpoint and no seed", h)
	}
	inv.Cluster.ControlPlaneEndpoint = "api.example.com"
	if got := inv.ServerURL(cp2); got != "https://api.example.com:6443" {
		t.Errorf("ServerURL(cp2) with an endpoint = %q; want the endpoint", got)
	}
}

func TestServiceIP(t *testing.T) {
	cases := []struct {
		subnet string
		n      int
		want   string
		err    bool
	}{
		{"10.96.0.0/12", 1, "10.96.0.1", false},
		{"10.96.0.0/12", 10, "10.96.0.10", false},
		{"10.96.5.7/12", 1, "10.96.0.1", false}, // host bits are ignored
		{"172.30.0.0/24", 300, "", true},
		{"fd00:10:96::/108,10.96.0.0/16", 10, "fd00:10:96::a", false},
		{"10.255.255.0/24", 255, "10.255.255.255", false},
		{"255.255.255.0/24", 256, "", true},
		{"nonsense", 1, "", true},
	}
	for _, tc := range cases {
		inv := &Inventory{Cluster: Cluster{ServiceSubnet: tc.subnet}}
		ip, err := inv.ServiceIP(tc.n)
		if tc.err {
			if err == nil {
				t.Errorf("ServiceIP(%d) in %s = %v, want an error", tc.n, tc.subnet, ip)
			}
			continue
		}
		if err != nil || !ip.Equal(net.ParseIP(tc.want)) {
			t.Errorf("ServiceIP(%d) in %s = %v, %v; want %s", tc.n, tc.subnet, ip, err, tc.want)
		}
	}
}

func TestDurationRoundTripsThroughYAML(t *testing.T) {
	var v struct {
		D Duration `yaml:"d"`
	}
	if err := yaml.Unmarshal([]byte("d: 1h30m\n"), &v); err != nil {
		t.Fatal(err)
	}
	if v.D.Duration != 90*time.Minute {
		t.Fatalf("decoded %v, want 1h30m", v.D.Duration)
	}
	out, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "d: 1h30m0s\n" {
		t.Errorf("Marshal() = %q, want %q", out, "d: 1h30m0s\n")
	}
	if err := yaml.Unmarshal([]byte("d: [1]\n"), &v); err == nil {
		t.Errorf("Unmarshal of a sequence into Duration succeeded")
	}
}

func TestValidateWorksOnAnInventoryBuiltInCode(t *testing.T) {
	inv := &Inventory{APIVersion: APIVersion, Kind: Kind, Hosts: []*Host{
		{Name: "cp1", Address: "10.0.0.1", Roles: []Role{RoleControlPlane}},
	}}
	inv.SetDefaults()
	if err := inv.Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	inv.Hosts = append(inv.Hosts, &Host{Name: "cp1", Address: "10.0.0.2", Port: 22, User: "root", Roles: []Role{RoleWorker}, Line: 7})
	err := inv.Validate()
	ve, ok := err.(*ValidationError)
	if !ok || len(ve.Problems) != 1 || ve.Problems[0].Line != 7 {
		t.Fatalf("Validate() = %v, want one problem at the host's line 7", err)
	}
}

func TestKubernetesVersionsOfTheSupportedMinorsLoad(t *testing.T) {
	for _, tc := range []struct {
		version    string
		preRelease bool // allowPreRelease: true
		ok         bool
	}{
		{"v1.35.4", false, true},
		{"v1.35.0", false, true},
		{"v1.36.3", false, true},
		{"v1.37.2", false, true},
		{"v1.34.4", false, false},
		{"v1.38.0", false, false},
		{"v1.35.0-rc.1", false, false},
		{"v2.35.4", false, false},
		// A pre-release only with the opt-in, of a supported or the preview minor, never of an older one.
		{"v1.38.0-beta.0", false, false},
		{"v1.38.0-beta.0", true, true},
		{"v1.37.0-rc.1", true, true},
		{"v1.34.0-rc.1", true, false},
		{"v1.39.0-alpha.0", true, false},
		// The opt-in does not admit a release of the preview minor: that waits for its parity.
		{"v1.38.0", true, false},
	} {
		t.Run(fmt.Sprintf("%s allowPreRelease=%v", tc.version, tc.preRelease), func(t *testing.T) {
			_, err := parseIn(t, t.TempDir(), head+"cluster:\n  kubernetesVersion: "+tc.version+"\n  allowPreRelease: "+fmt.Sprint(tc.preRelease)+"\n"+oneCP)
			if tc.ok && err != nil {
				t.Errorf("Load = %v, want no problem", err)
			}
			if !tc.ok && (err == nil || !strings.Contains(err.Error(), "unsupported Kubernetes version")) {
				t.Errorf("Load = %v, want an unsupported Kubernetes version", err)
			}
		})
	}
}
