package manifests

import (
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	"sigs.k8s.io/yaml"
)

func TestKubeletConfigurationAsKubeadmWritesIt(t *testing.T) {
	inv := exampleInventory()
	cfg, err := KubeletConfiguration(inv, KubeletParams{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.APIVersion != "kubelet.config.k8s.io/v1beta1" || cfg.Kind != "KubeletConfiguration" {
		t.Errorf("TypeMeta %v", cfg.TypeMeta)
	}
	checks := []struct {
		field string
		ok    bool
	}{
		{"clusterDNS = 10th service IP", slices.Equal(cfg.ClusterDNS, []string{"10.96.0.10"})},
		{"clusterDomain", cfg.ClusterDomain == "cluster.local"},
		{"x509 client CA", cfg.Authentication.X509.ClientCAFile == "/etc/kubernetes/pki/ca.crt"},
		{"webhook authn", cfg.Authentication.Webhook.Enabled != nil && *cfg.Authentication.Webhook.Enabled},
		{"anonymous off", cfg.Authentication.Anonymous.Enabled != nil && !*cfg.Authentication.Anonymous.Enabled},
		{"webhook authz", cfg.Authorization.Mode == kubeletv1beta1.KubeletAuthorizationModeWebhook},
		{"cgroupDriver", cfg.CgroupDriver == "systemd"},
		{"rotateCertificates", cfg.RotateCertificates},
		{"serverTLSBootstrap off", !cfg.ServerTLSBootstrap},
		{"staticPodPath", cfg.StaticPodPath == "/etc/kubernetes/manifests"},
		{"runtime endpoint", cfg.ContainerRuntimeEndpoint == "unix:///run/containerd/containerd.sock"},
		{"resolvConf", cfg.ResolverConfig != nil && *cfg.ResolverConfig == "/etc/kubeforge/resolv.conf"},
		{"failSwapOn left to the kubelet's default (true), as kubeadm", cfg.FailSwapOn == nil},
		{"failCgroupV1 unset on cgroup v2", cfg.FailCgroupV1 == nil},
		{"healthz", cfg.HealthzBindAddress == "127.0.0.1" && cfg.HealthzPort != nil && *cfg.HealthzPort == 10248},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("%s: wrong", c.field)
		}
	}

	v1, err := KubeletConfiguration(inv, KubeletParams{CgroupV1: true})
	if err != nil {
		t.Fatal(err)
	}
	if v1.FailCgroupV1 == nil || *v1.FailCgroupV1 {
		t.Errorf("cgroup v1 host: failCgroupV1 = %v, want false", v1.FailCgroupV1)
	}

	inv.Cluster.ServiceSubnet = "10.100.0.0/16"
	inv.Cluster.Kubelet.CgroupDriver = "cgroupfs"
	inv.Cluster.Kubelet.ResolvConf = ""
	other, err := KubeletConfiguration(inv, KubeletParams{})
	if err != nil {
		t.Fatal(err)
	}
	if other.ClusterDNS[0] != "10.100.0.10" || other.CgroupDriver != "cgroupfs" || other.ResolverConfig != nil {
		t.Errorf("inventory values not followed: dns %v driver %q resolv %v", other.ClusterDNS, other.CgroupDriver, other.ResolverConfig)
	}
}

func TestKubeletConfigurationMerge(t *testing.T) {
	tests := []struct {
		name    string
		config  map[string]any
		wantErr string
		check   func(*kubeletv1beta1.KubeletConfiguration) string
	}{
		{
			name:   "scalar and map values override, siblings kept",
			config: map[string]any{"maxPods": 50, "evictionHard": map[string]any{"nodefs.available": "1%"}, "authentication": map[string]any{"anonymous": map[string]any{"enabled": true}}},
			check: func(c *kubeletv1beta1.KubeletConfiguration) string {
				if c.MaxPods != 50 || c.EvictionHard["nodefs.available"] != "1%" {
					return "maxPods/evictionHard not applied"
				}
				if c.Authentication.Anonymous.Enabled == nil || !*c.Authentication.Anonymous.Enabled {
					return "nested override lost"
				}
				if c.Authentication.X509.ClientCAFile != "/etc/kubernetes/pki/ca.crt" || c.Authentication.Webhook.Enabled == nil {
					return "sibling fields of authentication were dropped"
				}
				return ""
			},
		},
		{
			name:   "failCgroupV1 set by the user",
			config: map[string]any{"failCgroupV1": false},
			check: func(c *kubeletv1beta1.KubeletConfiguration) string {
				if c.FailCgroupV1 == nil || *c.FailCgroupV1 {
					return "failCgroupV1 not false"
				}
				return ""
			},
		},
		{name: "unknown key", config: map[string]any{"maxPodz": 50}, wantErr: `unknown field "maxPodz"`},
		{name: "wrong case is unknown", config: map[string]any{"MaxPods": 50}, wantErr: "unknown field"},
		{name: "unknown nested key", config: map[string]any{"authentication": map[string]any{"x509": map[string]any{"caFile": "x"}}}, wantErr: "unknown field"},
		{name: "wrong type", config: map[string]any{"maxPods": "many"}, wantErr: "decode kubelet config overrides"},
		{name: "kind is fixed", config: map[string]any{"kind": "Other"}, wantErr: `"kind" cannot be overridden`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv := exampleInventory()
			inv.Cluster.Kubelet.Config = tt.config
			cfg, err := KubeletConfiguration(inv, KubeletParams{})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if msg := tt.check(cfg); msg != "" {
				t.Error(msg)
			}
		})
	}
}

func TestKubeletFiles(t *testing.T) {
	inv := exampleInventory()
	inv.Cluster.Kubelet.ExtraArgs = map[string]string{"v": "2", "node-ip": "10.9.9.9"}
	tests := []struct {
		name      string
		host      string
		params    KubeletParams
		wantFlags string
	}{
		{"control plane, hostname matches", "cp1", KubeletParams{NodeIP: "10.0.0.11", Hostname: "cp1"},
			`KUBELET_KUBEADM_ARGS="--node-ip=10.9.9.9 --v=2"`},
		{"control plane, other hostname", "cp2", KubeletParams{NodeIP: "10.0.0.12", Hostname: "ip-10-0-0-12"},
			`KUBELET_KUBEADM_ARGS="--hostname-override=cp2 --node-ip=10.9.9.9 --v=2"`},
		{"worker with taints", "w2", KubeletParams{Hostname: "w2"},
			`KUBELET_KUBEADM_ARGS="--register-with-taints=dedicated=gpu:NoSchedule --node-ip=10.9.9.9 --v=2"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files, err := KubeletFiles(inv, inv.Host(tt.host), tt.params)
			if err != nil {
				t.Fatal(err)
			}
			byPath := map[string][]byte{}
			for _, f := range files {
				byPath[f.Path] = f.Data
				// 0600 for the config, the unit and its drop-in (CIS 4.1.1, 4.1.9); the others as kubeadm.
				want := os.FileMode(0o644)
				if f.Path == KubeletConfigPath || f.Path == KubeletUnitPath || f.Path == KubeletDropInPath {
					want = 0o600
				}
				if f.Mode != want {
					t.Errorf("%s: mode %v, want %v", f.Path, f.Mode, want)
				}
			}
			for _, p := range []string{KubeletConfigPath, KubeletInstancePath, KubeletFlagsPath, KubeletUnitPath, KubeletDropInPath} {
				if _, ok := byPath[p]; !ok {
					t.Errorf("missing %s", p)
				}
			}
			if got := strings.TrimSpace(string(byPath[KubeletFlagsPath])); got != tt.wantFlags {
				t.Errorf("flags:\n got %s\nwant %s", got, tt.wantFlags)
			}
			var cfg kubeletv1beta1.KubeletConfiguration
			if err := yaml.UnmarshalStrict(byPath[KubeletConfigPath], &cfg); err != nil {
				t.Fatalf("config.yaml: %v", err)
			}
			if cfg.ContainerRuntimeEndpoint != "unix:///run/containerd/containerd.sock" {
				t.Errorf("config.yaml runtime endpoint %q", cfg.ContainerRuntimeEndpoint)
			}
			var inst kubeletv1beta1.KubeletConfiguration
			if err := yaml.UnmarshalStrict(byPath[KubeletInstancePath], &inst); err != nil || inst.ContainerRuntimeEndpoint != cfg.ContainerRuntimeEndpoint {
				t.Errorf("instance-config.yaml: %v %q", err, inst.ContainerRuntimeEndpoint)
			}
			dropIn := string(byPath[KubeletDropInPath])
			for _, want := range []string{
				"--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf",
				"--config=/var/lib/kubelet/config.yaml",
				"EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env",
				"EnvironmentFile=-/etc/default/kubelet",
				"ExecStart=\nExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS",
			} {
				if !strings.Contains(dropIn, want) {
					t.Errorf("drop-in lacks %q", want)
				}
			}
			if !strings.Contains(string(byPath[KubeletUnitPath]), "ExecStart=/usr/bin/kubelet\n") {
				t.Error("unit does not run /usr/bin/kubelet")
			}
		})
	}
}

func TestKubeletFlagsWithoutExtraArgs(t *testing.T) {
	inv := exampleInventory()
	files, err := KubeletFiles(inv, inv.Host("w1"), KubeletParams{NodeIP: "10.0.0.21", Hostname: "w1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if f.Path == KubeletFlagsPath {
			if got := flagNames(f.Data); !slices.Equal(got, []string{"node-ip"}) {
				t.Errorf("flags %v, want [node-ip]", got)
			}
		}
	}
	inv.Cluster.Kubelet.ExtraArgs = map[string]string{"node-labels": `a="b"`}
	if _, err := KubeletFiles(inv, inv.Host("w1"), KubeletParams{}); err == nil {
		t.Error("a quote in a kubelet extra arg was accepted")
	}
}

func TestKubeletFilesGolden(t *testing.T) {
	inv := exampleInventory()
	files, err := KubeletFiles(inv, inv.Host("w2"), KubeletParams{CgroupV1: true, NodeIP: "10.0.0.22", Hostname: "node-22"})
	if err != nil {
		t.Fatal(err)
	}
	again, _ := KubeletFiles(inv, inv.Host("w2"), KubeletParams{CgroupV1: true, NodeIP: "10.0.0.22", Hostname: "node-22"})
	if string(joinFiles(files)) != string(joinFiles(again)) {
		t.Fatal("two renders differ")
	}
	golden(t, "kubelet-w2", joinFiles(files))
}

// flagNames lists the flag names of a kubeadm-flags.env file, sorted.
func flagNames(env []byte) []string {
	s := strings.TrimSpace(string(env))
	s = strings.TrimPrefix(s, "KUBELET_KUBEADM_ARGS=")
	if u, err := strconv.Unquote(s); err == nil {
		s = u
	}
	var names []string
	for _, f := range strings.Fields(s) {
		n, _, _ := strings.Cut(strings.TrimPrefix(f, "--"), "=")
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// kubelet.config is an RFC 7386 merge patch: maps merge, a null unsets a default.
func TestKubeletConfigMergePatchUnsets(t *testing.T) {
	inv := exampleInventory()
	inv.Cluster.Kubelet.Config = map[string]any{"healthzBindAddress": nil, "evictionHard": map[string]any{"memory.available": "200Mi"}}
	cfg, err := KubeletConfiguration(inv, KubeletParams{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HealthzBindAddress != "" || cfg.EvictionHard["memory.available"] != "200Mi" {
		t.Errorf("healthzBindAddress %q (want unset), evictionHard %v", cfg.HealthzBindAddress, cfg.EvictionHard)
	}
}
