package tasks

import (
	"strings"
	"testing"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/manifests"
)

// TestRegistryFilesFollowTheRuntimeAndTheMarker: the hosts files go where
// the host's containerd reads them, the marker lists them, what an earlier
// run wrote and the inventory dropped is removed, and a foreign containerd
// without config_path is refused.
func TestRegistryFilesFollowTheRuntimeAndTheMarker(t *testing.T) {
	env := observedEnv(t, []string{"n1"}, map[string]bool{"n1": true})
	env.Inv.SetDefaults()
	env.Inv.Cluster.Artifacts = bundleDir(t)
	h := env.hostNamed("n1")
	env.Inv.Cluster.Registries = map[string]inventory.Registry{"registry.k8s.io": {Mirrors: []inventory.Mirror{{URL: "https://m.local:5000", CAData: []byte("CA")}}}}
	h.Facts.RegistryFiles = []string{manifests.RegistryHostsDir + "/docker.io/hosts.toml", manifests.RegistryHostsDir + "/registry.k8s.io/hosts.toml"}

	files, removed, err := registryFiles(env, h)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, f := range files {
		paths = append(paths, f.Path)
	}
	want := manifests.RegistryHostsDir + "/registry.k8s.io/m.local_5000/ca.crt " + manifests.RegistryHostsDir + "/registry.k8s.io/hosts.toml " + registriesMarkerPath
	if strings.Join(paths, " ") != want {
		t.Errorf("files %v; want %s", paths, want)
	}
	if m := string(files[len(files)-1].Data); m != manifests.RegistryHostsDir+"/registry.k8s.io/m.local_5000/ca.crt\n"+manifests.RegistryHostsDir+"/registry.k8s.io/hosts.toml\n" {
		t.Errorf("marker:\n%s", m)
	}
	if strings.Join(removed, " ") != manifests.RegistryHostsDir+"/docker.io/hosts.toml" {
		t.Errorf("removed %v; want docker.io's hosts.toml", removed)
	}
	conf := containerdConfig(env, h, &runtimeBundle{versions: map[string]string{"containerd": "v2.4.2"}})
	if !strings.Contains(conf, "[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = \""+manifests.RegistryHostsDir+"\"") {
		t.Errorf("containerd's config has no config_path:\n%s", conf)
	}
	env.Inv.Cluster.Registries = nil
	if conf := containerdConfig(env, h, &runtimeBundle{versions: map[string]string{"containerd": "v2.4.2"}}); strings.Contains(conf, "config_path") {
		t.Errorf("containerd's config names a config_path without registries:\n%s", conf)
	}
	env.Inv.Cluster.Registries = map[string]inventory.Registry{"registry.k8s.io": {Mirrors: []inventory.Mirror{{URL: "https://m.local:5000", CAData: []byte("CA")}}}}
	// A containerd kubeforge did not install: its own config_path, or a refusal.
	env.Inv.Cluster.Artifacts = ""
	h.Facts.RuntimeVersion, h.Facts.CRISocket, h.Facts.CRIReady = debianContainerd, true, true
	h.Facts.RegistryConfigPath = "/etc/containerd/hosts:/etc/docker/certs.d"
	files, _, err = registryFiles(env, h)
	if err != nil || !strings.HasPrefix(files[0].Path, "/etc/containerd/hosts/registry.k8s.io/") {
		t.Errorf("foreign containerd with config_path: files %v, %v; want them under its first config_path", files, err)
	}
	h.Facts.RegistryConfigPath = ""
	if _, _, err := registryFiles(env, h); err == nil || !strings.Contains(err.Error(), "no registry config_path") {
		t.Errorf("foreign containerd without config_path: %v; want a refusal", err)
	}
	var failed []string
	if err := checkRegistries(env, h, func(id string, sev Severity, ok bool, msg, fix string) {
		if !ok {
			failed = append(failed, id+": "+msg+" / "+fix)
		}
	}); err != nil || len(failed) != 1 || !strings.Contains(failed[0], "config_path") {
		t.Errorf("preflight: %v %v; want one failed Registries check naming config_path", failed, err)
	}

	// No registries left: every file the marker names goes, and the marker empties.
	env.Inv.Cluster.Registries = nil
	h.Facts.RegistryFiles = []string{"/etc/containerd/hosts/registry.k8s.io/hosts.toml"}
	files, removed, err = registryFiles(env, h)
	if err != nil || len(files) != 1 || files[0].Path != registriesMarkerPath || len(files[0].Data) != 0 || len(removed) != 1 {
		t.Errorf("without registries: files %v removed %v err %v; want an empty marker and one removal", files, removed, err)
	}
	h.Facts.RegistryFiles = nil
	if files, removed, err = registryFiles(env, h); files != nil || removed != nil || err != nil {
		t.Errorf("never any registry: %v %v %v; want nothing", files, removed, err)
	}
}

// TestRegistryDirOfAForeignContainerd: where the hosts files go on a
// containerd kubeforge did not install: its CRI's config_path; without one
// (1.x or 2.x: containerd 2.4.2's CRI with an empty config_path did not read
// /etc/containerd/certs.d) preflight refuses.
func TestRegistryDirOfAForeignContainerd(t *testing.T) {
	const containerd2 = "containerd github.com/containerd/containerd/v2 v2.1.4 75cb2b7193e4e490e9fbdc236c0e811ccaba3376"
	for _, tc := range []struct {
		name, version, configPath string
		mirrors                   bool
		want                      string
	}{
		{"1.x without config_path reads none", debianContainerd, "", false, ""},
		{"1.x with config_path: its first directory", debianContainerd, "/etc/containerd/hosts:/etc/docker/certs.d", false, "/etc/containerd/hosts"},
		{"2.x without config_path reads none", containerd2, "", false, ""},
		{"2.x with mirrors instead reads none", containerd2, "", true, ""},
		{"2.x with config_path: its own", containerd2, "/etc/registries", false, "/etc/registries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := observedEnv(t, []string{"n1"}, map[string]bool{"n1": true})
			env.Inv.SetDefaults()
			env.Inv.Cluster.Registries = map[string]inventory.Registry{"docker.io": {Mirrors: []inventory.Mirror{{URL: "https://m.local"}}}}
			h := env.hostNamed("n1")
			h.Facts.RuntimeVersion, h.Facts.CRISocket, h.Facts.CRIReady = tc.version, true, true
			h.Facts.RegistryConfigPath, h.Facts.RegistryMirrors = tc.configPath, tc.mirrors
			dir, err := registryDir(env, h)
			if err != nil || dir != tc.want {
				t.Fatalf("registryDir = %q, %v; want %q", dir, err, tc.want)
			}
			var failed []string
			if err := checkRegistries(env, h, func(id string, sev Severity, ok bool, msg, fix string) {
				if !ok {
					failed = append(failed, msg)
				}
			}); err != nil {
				t.Fatal(err)
			}
			if refused := len(failed) > 0; refused != (tc.want == "") {
				t.Errorf("preflight refuses: %v (%v); want %v", refused, failed, tc.want == "")
			}
			if tc.mirrors && (len(failed) != 1 || !strings.Contains(failed[0], "registry.mirrors")) {
				t.Errorf("preflight of a containerd with mirrors: %v; want a refusal that names them", failed)
			}
		})
	}
}
