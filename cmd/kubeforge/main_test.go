package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := execute(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestValidateExampleInventory(t *testing.T) {
	code, out, errOut := run(t, "inventory", "validate", "-i", "../../examples/cluster.yaml")
	if code != 0 || !strings.Contains(out, "valid (5 hosts: 3 control plane, 2 worker)") {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
}

// TestBrokenInventoryFailsBeforeAnyConnection: every problem with file:line,
// exit 2, and no host contacted (the addresses are unroutable TEST-NET ones
// and a contact attempt would show as a connect step in the output).
func TestBrokenInventoryFailsBeforeAnyConnection(t *testing.T) {
	dir := t.TempDir()
	inv := filepath.Join(dir, "bad.yaml")
	doc := `apiVersion: kubeforge.io/v1alpha1
kind: Cluster
cluster:
  serviceSubnet: 10.96.0.0/30
hosts:
  - name: cp1
    address: 192.0.2.1
    roles: [control-plane]
  - name: cp1
    address: 192.0.2.2
    roles: [worker]
    colour: blue
`
	if err := os.WriteFile(inv, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range [][]string{{"inventory", "validate"}, {"preflight"}, {"up"}, {"scale"}, {"reset", "--yes"}} {
		t.Run(cmd[0], func(t *testing.T) {
			code, out, errOut := run(t, append(cmd, "-i", inv)...)
			if code != 2 {
				t.Fatalf("exit %d; want 2\nstdout %s\nstderr %s", code, out, errOut)
			}
			for _, want := range []string{inv + ":4:", inv + ":9:", inv + ":12:", "Nothing was changed on any host."} {
				if !strings.Contains(errOut, want) {
					t.Errorf("stderr lacks %q:\n%s", want, errOut)
				}
			}
			if strings.Contains(out, "connect") {
				t.Errorf("a host was contacted:\n%s", out)
			}
			if _, err := os.Stat(filepath.Join(dir, "kubeforge.kubeforge")); err == nil {
				t.Error("a state dir was created for an invalid inventory")
			}
		})
	}
}

func TestDryRunPrintsPlanWithoutState(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	code, out, errOut := run(t, "up", "--dry-run", "--offline", "-i", "../../examples/cluster.yaml", "--state-dir", state)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "control-plane/join               control-planes that are not initialising, serial: cp1, cp2, cp3") {
		t.Errorf("plan lacks the serial control-plane join:\n%s", out)
	}
	if _, err := os.Stat(state); err == nil {
		t.Error("--dry-run created the state dir")
	}
}

func TestUnknownStepIsBadInput(t *testing.T) {
	code, _, errOut := run(t, "up", "--dry-run", "--skip", "nonsense", "-i", "../../examples/cluster.yaml")
	if code != 2 || !strings.Contains(errOut, "unknown step nonsense") {
		t.Fatalf("exit %d, stderr %s", code, errOut)
	}
}

// TestCertsAndRenderGiveEveryNodeItsTree: for the example 3 control-plane +
// 2 worker inventory, the PKI in kubeadm's layout and each host's tree; the CA
// key only on control planes; keys 0600; a second run changes nothing.
func TestCertsAndRenderGiveEveryNodeItsTree(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	inv := "../../examples/cluster.yaml"
	if code, _, errOut := run(t, "certs", "generate", "-i", inv, "--state-dir", state); code != 0 {
		t.Fatalf("certs generate: exit %d: %s", code, errOut)
	}
	for _, f := range []string{"ca.crt", "ca.key", "etcd/ca.crt", "etcd/ca.key", "front-proxy-ca.crt", "front-proxy-ca.key", "sa.key", "sa.pub"} {
		if _, err := os.Stat(filepath.Join(state, "pki", f)); err != nil {
			t.Errorf("pki/%s: %v", f, err)
		}
	}
	if code, _, errOut := run(t, "render", "--offline", "-i", inv, "--state-dir", state); code != 0 {
		t.Fatalf("render: exit %d: %s", code, errOut)
	}
	snapshot := func() map[string]string {
		out := map[string]string{}
		filepath.Walk(filepath.Join(state, "nodes"), func(p string, info os.FileInfo, err error) error {
			if err == nil && !info.IsDir() {
				b, _ := os.ReadFile(p)
				rel, _ := filepath.Rel(state, p)
				out[rel] = fmt.Sprintf("%v %x", info.Mode().Perm(), sha256.Sum256(b))
			}
			return nil
		})
		return out
	}
	tree := snapshot()
	for _, h := range []string{"cp1", "cp2", "cp3"} {
		for _, f := range []string{"pki/ca.key", "pki/apiserver.crt", "pki/etcd/server.key", "manifests/etcd.yaml", "manifests/kube-apiserver.yaml", "kubelet.conf", "controller-manager.conf"} {
			key := filepath.Join("nodes", h, "etc/kubernetes", f)
			mode, ok := tree[key]
			if !ok {
				t.Errorf("%s missing", key)
			}
			if strings.HasSuffix(f, ".key") && !strings.HasPrefix(mode, "-rw-------") {
				t.Errorf("%s mode %s; want 0600", key, mode)
			}
		}
	}
	for _, h := range []string{"worker1", "worker2"} {
		if _, ok := tree[filepath.Join("nodes", h, "etc/kubernetes/pki/ca.crt")]; !ok {
			t.Errorf("%s lacks ca.crt", h)
		}
		if _, ok := tree[filepath.Join("nodes", h, "var/lib/kubelet/config.yaml")]; !ok {
			t.Errorf("%s lacks the kubelet config", h)
		}
		for k := range tree {
			if strings.HasPrefix(k, filepath.Join("nodes", h)) && strings.HasSuffix(k, ".key") {
				t.Errorf("worker %s received a private key: %s", h, k)
			}
		}
	}
	if code, _, errOut := run(t, "render", "--offline", "-i", inv, "--state-dir", state); code != 0 {
		t.Fatalf("second render: exit %d: %s", code, errOut)
	}
	again := snapshot()
	for k, v := range tree {
		if again[k] != v {
			t.Errorf("second render changed %s", k)
		}
	}
}

// TestResetPurgeRefusalsChangeNothing: a purge kubeforge refuses fails before
// the reset (exit 2, no host contacted) and leaves the state dir as it was.
func TestResetPurgeRefusalsChangeNothing(t *testing.T) {
	dir := t.TempDir()
	inv := filepath.Join(dir, "cluster.yaml")
	doc := `apiVersion: kubeforge.io/v1alpha1
kind: Cluster
cluster:
  name: c
hosts:
  - name: cp1
    address: 192.0.2.1
    roles: [control-plane]
  - name: w1
    address: 192.0.2.2
    roles: [worker]
`
	if err := os.WriteFile(inv, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string
		atInvDir bool // the state dir is the inventory's directory
		prepare  func(t *testing.T, state string)
		want     string
	}{
		{name: "with --hosts", args: []string{"--hosts", "cp1"}, want: "but --hosts resets only cp1",
			prepare: func(t *testing.T, state string) {
				// A live cluster's CA.
				if code, _, errOut := run(t, "certs", "generate", "-i", inv, "--state-dir", state); code != 0 {
					t.Fatalf("certs generate: exit %d: %s", code, errOut)
				}
			}},
		{name: "a directory that is not a state dir", want: "it does not look like a kubeforge state dir",
			prepare: func(t *testing.T, state string) {
				if err := os.MkdirAll(state, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(state, "thesis.tex"), []byte("x"), 0o644); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "the inventory's directory", atInvDir: true, want: "it is the inventory's directory",
			prepare: func(*testing.T, string) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state := filepath.Join(t.TempDir(), "state")
			if tt.atInvDir {
				state = dir
			}
			tt.prepare(t, state)
			before := tree(t, state)
			args := append([]string{"reset", "--purge", "--yes", "--timeout", "10s", "-i", inv, "--state-dir", state}, tt.args...)
			code, out, errOut := run(t, args...)
			if code != 2 || !strings.Contains(errOut, tt.want) || !strings.Contains(errOut, "Nothing was reset and nothing was removed.") {
				t.Errorf("exit %d; want 2 and %q\nstdout %s\nstderr %s", code, tt.want, out, errOut)
			}
			if strings.Contains(out, "connect") {
				t.Errorf("the reset ran:\n%s", out)
			}
			if after := tree(t, state); after != before {
				t.Errorf("the state dir changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// tree lists the files under dir with their sizes ("" when dir is missing).
func tree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil {
			fmt.Fprintf(&b, "%s:%d ", p, info.Size())
		}
		return nil
	})
	return b.String()
}

// An inventory that cannot be read is bad input like an invalid one: exit 2.
func TestUnreadableInventoryExitsTwo(t *testing.T) {
	for _, p := range []string{filepath.Join(t.TempDir(), "missing.yaml"), t.TempDir()} {
		code, _, errOut := run(t, "inventory", "validate", "-i", p)
		if code != 2 || !strings.Contains(errOut, "cannot read the inventory") {
			t.Errorf("validate -i %s: exit %d, %q; want 2 and \"cannot read the inventory\"", p, code, errOut)
		}
	}
}
