package tasks

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/ssh"
)

// bundleDir makes an artifacts directory with a runtime/VERSIONS (no binaries: decisions only read VERSIONS).
func bundleDir(t *testing.T) string {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "runtime"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "runtime", "VERSIONS"), []byte("containerd v2.4.2\nrunc v1.5.2\ncni-plugins v1.9.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// debianContainerd is `containerd --version` of Debian 12's containerd.
const debianContainerd = "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1"

func TestDecideRuntime(t *testing.T) {
	debian := debianContainerd
	for _, tc := range []struct {
		name      string
		policy    string
		bundle    bool
		facts     Facts
		install   bool
		problem   string // a substring; "" for none
		messageIn string
	}{
		{name: "bare host, bundle: install", policy: inventory.RuntimeInstallIfMissing, bundle: true, install: true, messageIn: "installs containerd v2.4.2"},
		{name: "bare host, no bundle", policy: inventory.RuntimeInstallIfMissing, problem: "no runtime/"},
		{name: "bare host, never", policy: inventory.RuntimeInstallNever, bundle: true, problem: "runtime.install is never"},
		{name: "preinstalled and working: left alone", policy: inventory.RuntimeInstallIfMissing, bundle: true,
			facts: Facts{RuntimeVersion: debian, CRISocket: true, CRIReady: true}, messageIn: "left as it is"},
		{name: "preinstalled, broken: not touched", policy: inventory.RuntimeInstallIfMissing, bundle: true,
			facts: Facts{RuntimeVersion: debian, CRISocket: true}, problem: "does not touch a runtime it did not install"},
		{name: "preinstalled, always: replaced", policy: inventory.RuntimeInstallAlways, bundle: true,
			facts: Facts{RuntimeVersion: debian, CRISocket: true, CRIReady: true}, install: true, messageIn: "replaces"},
		{name: "kubeforge's, half installed: finished", policy: inventory.RuntimeInstallIfMissing, bundle: true,
			facts: Facts{RuntimeMarker: "containerd v2.4.2, runc v1.5.2, CNI plugins v1.9.1"}, install: true},
		{name: "another runtime holds the socket: never overwritten", policy: inventory.RuntimeInstallAlways, bundle: true,
			facts: Facts{CRISocket: true}, problem: "not containerd"},
		{name: "kubeforge's, even with never", policy: inventory.RuntimeInstallNever, bundle: true,
			facts: Facts{RuntimeMarker: "containerd v2.4.2", CRISocket: true, CRIReady: true}, install: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := observedEnv(t, []string{"n1"}, map[string]bool{"n1": true})
			env.Inv.Cluster.Runtime.Install = tc.policy
			if tc.bundle {
				env.Inv.Cluster.Artifacts = bundleDir(t)
			}
			h := env.hostNamed("n1")
			f := tc.facts
			f.Listening = map[int]bool{}
			h.Facts = &f
			d, err := decideRuntime(env, h)
			if err != nil {
				t.Fatal(err)
			}
			if d.Install != tc.install {
				t.Errorf("install %v, want %v (%+v)", d.Install, tc.install, d)
			}
			if (tc.problem == "") != (d.Problem == "") || !strings.Contains(d.Problem, tc.problem) {
				t.Errorf("problem %q, want one with %q", d.Problem, tc.problem)
			}
			if d.Problem != "" && d.Fix == "" {
				t.Error("a problem without a fix")
			}
			if !strings.Contains(d.Message, tc.messageIn) {
				t.Errorf("message %q lacks %q", d.Message, tc.messageIn)
			}
		})
	}
}

func TestContainerdMajor(t *testing.T) {
	for v, want := range map[string]int{
		"containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1":   1,
		"containerd github.com/containerd/containerd/v2 v2.4.2 release":            2,
		"containerd containerd.io 1.7.27 05044ec0a9a75232cad458027ca83437aae3f4da": 1,
		"": -1,
	} {
		if got := containerdMajor(v); got != want {
			t.Errorf("containerdMajor(%q) = %d, want %d", v, got, want)
		}
	}
}

func TestContainerdConfigFollowsHostAndKubelet(t *testing.T) {
	env := observedEnv(t, []string{"n1"}, map[string]bool{"n1": true})
	env.Inv.SetDefaults()
	h := env.hostNamed("n1")
	h.Facts.CapSysResource = true
	b := &runtimeBundle{versions: map[string]string{"containerd": "v2.4.2"}}
	full := containerdConfig(env, h, b)
	for _, want := range []string{`version = 4`, `address = "/run/containerd/containerd.sock"`, `sandbox = "registry.k8s.io/pause:3.10.2"`,
		`SystemdCgroup = true`, `BinaryName = "/usr/local/sbin/runc"`, `bin_dirs = ["/opt/cni/bin"]`} {
		if !strings.Contains(full, want) {
			t.Errorf("config lacks %s:\n%s", want, full)
		}
	}
	if strings.Contains(full, "restrict_oom_score_adj") {
		t.Error("restrict_oom_score_adj set on a host with CAP_SYS_RESOURCE")
	}
	h.Facts.CapSysResource = false
	env.Inv.Cluster.Kubelet.CgroupDriver = inventory.CgroupDriverCgroupfs
	c := containerdConfig(env, h, b)
	if !strings.Contains(c, "restrict_oom_score_adj = true") || !strings.Contains(c, "SystemdCgroup = false") {
		t.Errorf("without CAP_SYS_RESOURCE and with cgroupfs:\n%s", c)
	}
}

func TestCheckRuntimeVersionAndSandbox(t *testing.T) {
	debian := debianContainerd
	for _, tc := range []struct {
		name    string
		facts   Facts
		version string
		want    map[string]string // check ID -> "ok", "warning" or "FAIL"
	}{
		{name: "containerd 1.6 on v1.37: a warning", facts: Facts{RuntimeVersion: debian, RuntimeSandbox: "registry.k8s.io/pause:3.10.2", SandboxPresent: true},
			want: map[string]string{"Runtime": "ok", "RuntimeVersion": "warning", "SandboxImage": "ok"}},
		{name: "containerd 1.6 on v1.38: refused", version: "v1.38.0", facts: Facts{RuntimeVersion: debian},
			want: map[string]string{"Runtime": "ok", "RuntimeVersion": "FAIL"}},
		{name: "a sandbox image neither on the host nor in the artifacts", facts: Facts{RuntimeVersion: debian, RuntimeSandbox: "registry.k8s.io/pause:3.6"},
			want: map[string]string{"SandboxImage": "FAIL"}},
		{name: "another sandbox image, present: a warning", facts: Facts{RuntimeVersion: debian, RuntimeSandbox: "registry.k8s.io/pause:3.6", SandboxPresent: true},
			want: map[string]string{"SandboxImage": "warning"}},
		{name: "containerd 2 of someone else", facts: Facts{RuntimeVersion: "containerd containerd.io v2.1.4 abc", RuntimeSandbox: "registry.k8s.io/pause:3.10.2", SandboxPresent: true},
			want: map[string]string{"Runtime": "ok", "RuntimeVersion": "ok", "SandboxImage": "ok"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := observedEnv(t, []string{"n1"}, map[string]bool{"n1": true})
			env.Inv.Cluster.Artifacts = bundleDir(t)
			env.Inv.SetDefaults()
			if tc.version != "" {
				env.Inv.Cluster.KubernetesVersion = tc.version
			}
			h := env.hostNamed("n1")
			f := tc.facts
			f.CRISocket, f.CRIReady, f.Listening = true, true, map[int]bool{}
			h.Facts = &f
			got := map[string]string{}
			err := checkRuntime(env, h, func(id string, sev Severity, ok bool, msg, fix string) {
				switch {
				case ok:
					got[id] = "ok"
				case sev == SeverityWarning:
					got[id] = "warning"
				default:
					got[id] = "FAIL"
				}
				if !ok && fix == "" {
					t.Errorf("%s failed without a fix: %s", id, msg)
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			for id, want := range tc.want {
				if got[id] != want {
					t.Errorf("%s: %q, want %q (all: %v)", id, got[id], want, got)
				}
			}
		})
	}
}

// fullBundle is bundleDir with small stand-ins for the binaries (hashed, never run).
func fullBundle(t *testing.T) string {
	dir := bundleDir(t)
	for _, f := range []string{"bin/containerd", "bin/containerd-shim-runc-v2", "bin/ctr", "bin/runc", "cni/bridge", "cni/host-local", "cni/loopback", "cni/portmap", "cni/macvlan"} {
		p := filepath.Join(dir, "runtime", f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestRuntimeFilesMarkerAndPlugins(t *testing.T) {
	env := observedEnv(t, []string{"n1"}, map[string]bool{"n1": true})
	env.Inv.Cluster.Artifacts = fullBundle(t)
	env.Inv.SetDefaults()
	h := env.hostNamed("n1")
	b, err := env.runtimeBundle()
	if err != nil || b == nil {
		t.Fatal(b, err)
	}
	paths := func(fs []ssh.File) string { return strings.Join(pathsOf(fs), " ") }

	// The bridge network: only its plugins; the marker names every file, and a replaced runtime once.
	h.Facts.RuntimeVersion = "containerd github.com/containerd/containerd 1.6.20~ds1"
	marker, bins, _, err := runtimeFiles(env, h, b)
	if err != nil {
		t.Fatal(err)
	}
	if got := paths(bins); strings.Contains(got, "macvlan") || !strings.Contains(got, "/opt/cni/bin/bridge") || !strings.Contains(got, "/usr/local/sbin/runc") {
		t.Errorf("bridge network pushes %s", got)
	}
	m := string(marker.Data)
	if !strings.HasPrefix(m, "containerd v2.4.2, runc v1.5.2, CNI plugins v1.9.1\n") || !strings.Contains(m, "\n# replaced: containerd github.com/containerd/containerd 1.6.20~ds1\n") ||
		!strings.Contains(m, "\n/etc/containerd/config.toml\n") || !strings.Contains(m, "\n/usr/local/bin/ctr\n") {
		t.Errorf("marker:\n%s", m)
	}
	// The next run finds kubeforge's containerd and the marker's record: the same marker.
	h.Facts.RuntimeMarker, h.Facts.RuntimeReplaced, h.Facts.RuntimeVersion = "containerd v2.4.2, runc v1.5.2, CNI plugins v1.9.1", h.Facts.RuntimeVersion, "containerd github.com/containerd/containerd/v2 v2.4.2 release"
	again, _, _, err := runtimeFiles(env, h, b)
	if err != nil || string(again.Data) != m {
		t.Errorf("the marker changed on the next run (%v):\n%s", err, again.Data)
	}

	// Another CNI: every plugin, but not over a copy the host has; the marker lists them all either way.
	env.Inv.Cluster.CNI.Plugin = inventory.CNIManifest
	h.Facts.CNIPlugins = map[string]bool{"bridge": true}
	marker, bins, _, err = runtimeFiles(env, h, b)
	if err != nil {
		t.Fatal(err)
	}
	if got := paths(bins); strings.Contains(got, "/opt/cni/bin/bridge") || !strings.Contains(got, "/opt/cni/bin/macvlan") {
		t.Errorf("another CNI: pushes %s", got)
	}
	if !strings.Contains(string(marker.Data), "\n/opt/cni/bin/bridge\n") {
		t.Errorf("the marker lost a plugin:\n%s", marker.Data)
	}
	for p, want := range map[string]bool{"/usr/local/bin/containerd": true, "/etc/containerd/config.toml": true, "/opt/cni/bin/bridge": false, runtimeMarkerPath: false} {
		if restartsContainerd(p) != want {
			t.Errorf("restartsContainerd(%s) = %v", p, !want)
		}
	}
}
