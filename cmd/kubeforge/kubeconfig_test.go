package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubeforge/kubeforge/tasks"
)

// TestKubeconfigHandsOutAServerThatAnswers: with the control plane that the
// state dir's admin kubeconfig names down, `kubeforge kubeconfig` prints one
// naming a control plane that answers /readyz, says on stderr which and why,
// and leaves the state dir's file alone; with none answering it fails and
// says what each said.
func TestKubeconfigHandsOutAServerThatAnswers(t *testing.T) {
	dir := t.TempDir()
	inv := filepath.Join(dir, "cluster.yaml")
	doc := `apiVersion: kubeforge.io/v1alpha1
kind: Cluster
cluster:
  name: c
hosts:
  - {name: cp1, address: 192.0.2.1, roles: [control-plane]}
  - {name: cp2, address: 192.0.2.2, roles: [control-plane]}
  - {name: cp3, address: 192.0.2.3, roles: [control-plane]}
  - {name: w1, address: 192.0.2.4, roles: [worker]}
`
	if err := os.WriteFile(inv, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	if code, _, errOut := run(t, "certs", "generate", "-i", inv, "--state-dir", state); code != 0 {
		t.Fatalf("certs generate: exit %d: %s", code, errOut)
	}
	stored, err := os.ReadFile(filepath.Join(state, "admin.conf"))
	if err != nil || !strings.Contains(string(stored), "server: https://192.0.2.1:6443") {
		t.Fatalf("the state dir's admin kubeconfig (%v) does not name cp1:\n%s", err, stored)
	}
	tests := []struct {
		name       string
		up         []string
		wantCode   int
		wantServer string
		wantErr    string
	}{
		{name: "the named control plane answers", up: []string{"https://192.0.2.1:6443", "https://192.0.2.2:6443"},
			wantServer: "https://192.0.2.1:6443", wantErr: "kubeconfig: server https://192.0.2.1:6443 (cp1): https://192.0.2.1:6443 (cp1) answers /readyz"},
		{name: "the named control plane is down", up: []string{"https://192.0.2.3:6443"}, wantServer: "https://192.0.2.3:6443",
			wantErr: "kubeconfig: server https://192.0.2.3:6443 (cp3), not https://192.0.2.1:6443: https://192.0.2.1:6443 (cp1) did not answer /readyz (connection refused)"},
		{name: "none answers", wantCode: 1,
			wantErr: "no API server answered /readyz:\n  https://192.0.2.1:6443 (cp1): connection refused\n  https://192.0.2.2:6443 (cp2): connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := map[string]bool{}
			for _, s := range tt.up {
				up[s] = true
			}
			g := &globals{probeAPI: func(_ context.Context, _ []byte, s tasks.APIServer) error {
				if !up[s.Server] {
					return errors.New("connection refused")
				}
				return nil
			}}
			var out, errOut bytes.Buffer
			code := executeWith(context.Background(), g, []string{"kubeconfig", "-i", inv, "--state-dir", state}, &out, &errOut)
			if code != tt.wantCode || !strings.Contains(errOut.String(), tt.wantErr) {
				t.Errorf("exit %d; want %d and stderr with %q\nstderr: %s", code, tt.wantCode, tt.wantErr, errOut.String())
			}
			if tt.wantServer != "" && !strings.Contains(out.String(), "server: "+tt.wantServer+"\n") {
				t.Errorf("the kubeconfig does not name %s:\n%s", tt.wantServer, out.String())
			}
			if tt.wantServer == "" && out.Len() > 0 {
				t.Errorf("printed a kubeconfig with no server answering:\n%s", out.String())
			}
			if after, _ := os.ReadFile(filepath.Join(state, "admin.conf")); !bytes.Equal(after, stored) {
				t.Error("the state dir's admin kubeconfig changed")
			}
		})
	}
}
