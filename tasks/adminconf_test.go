package tasks

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/manifests"
	"github.com/kubeforge/kubeforge/pki"
)

func TestChooseServer(t *testing.T) {
	cp1 := APIServer{Server: "https://10.0.0.1:6443", Host: "cp1"}
	cp2 := APIServer{Server: "https://10.0.0.2:6443", Host: "cp2"}
	cp3 := APIServer{Server: "https://10.0.0.3:6443", Host: "cp3"}
	lb := APIServer{Server: "https://api.example.com:6443"}
	down := errors.New("connection refused")
	tests := []struct {
		name      string
		current   string
		probes    []ServerProbe
		want      string
		moved     bool
		reason    string // in the choice's reason, or in the error
		wantError bool
	}{
		{name: "the named server answers: kept", current: cp1.Server,
			probes: []ServerProbe{{APIServer: cp1}}, want: cp1.Server, reason: "(cp1) answers /readyz"},
		{name: "the named server is down: the first that answers", current: cp1.Server,
			probes: []ServerProbe{{APIServer: cp1, Err: down}, {APIServer: cp2, Err: down}, {APIServer: cp3}}, want: cp3.Server, moved: true,
			reason: "https://10.0.0.1:6443 (cp1) did not answer /readyz (connection refused); https://10.0.0.3:6443 (cp3) answers"},
		{name: "a named server that is no longer the cluster's", current: "https://10.9.9.9:6443",
			probes: []ServerProbe{{APIServer: cp1}, {APIServer: cp2}}, want: cp1.Server, moved: true,
			reason: "https://10.9.9.9:6443 is none of the cluster's API servers"},
		{name: "the endpoint is down: a control plane", current: lb.Server,
			probes: []ServerProbe{{APIServer: lb, Err: down}, {APIServer: cp2}}, want: cp2.Server, moved: true,
			reason: "(controlPlaneEndpoint) did not answer"},
		{name: "none answers", current: cp1.Server, wantError: true,
			probes: []ServerProbe{{APIServer: cp1, Err: down}, {APIServer: cp2, Err: down}},
			reason: "no API server answered /readyz:\n  https://10.0.0.1:6443 (cp1): connection refused\n  https://10.0.0.2:6443 (cp2): connection refused"},
		{name: "nothing to probe", current: cp1.Server, wantError: true, reason: "no API server to probe"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ChooseServer(tt.current, tt.probes)
			if tt.wantError {
				if err == nil || !strings.Contains(err.Error(), tt.reason) {
					t.Fatalf("ChooseServer: %+v, %v; want an error with %q", got, err, tt.reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Server != tt.want || got.Moved != tt.moved || got.Was != tt.current || !strings.Contains(got.Reason, tt.reason) {
				t.Errorf("ChooseServer: %+v; want %s (moved %v) because %q", got, tt.want, tt.moved, tt.reason)
			}
		})
	}
}

// adminEnv is an Env for three control planes and a worker with a PKI and
// the state dir's admin kubeconfig, as `up` leaves them.
func adminEnv(t *testing.T, endpoint string) *Env {
	t.Helper()
	dir := t.TempDir()
	doc := "apiVersion: kubeforge.io/v1alpha1\nkind: Cluster\ncluster:\n  name: c\n"
	if endpoint != "" {
		doc += "  controlPlaneEndpoint: " + endpoint + "\n"
	}
	doc += "hosts:\n"
	for i, n := range []string{"cp1", "cp2", "cp3", "w1"} {
		role := "control-plane"
		if n == "w1" {
			role = "worker"
		}
		doc += "  - name: " + n + "\n    address: 10.0.0." + string(rune('1'+i)) + "\n    roles: [" + role + "]\n"
	}
	path := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	env := NewEnv(inv, filepath.Join(dir, "state"), slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	if err := os.MkdirAll(env.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := EnsureCerts(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	return env
}

func serverIn(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := kubeconfigServer(b)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fakeProbe answers for the servers up, and records what was asked.
type fakeProbe struct {
	up    map[string]bool
	asked []string
}

func (f *fakeProbe) probe(_ context.Context, kubeconfig []byte, s APIServer) error {
	f.asked = append(f.asked, s.Server)
	if len(kubeconfig) == 0 {
		return errors.New("no credentials")
	}
	if !f.up[s.Server] {
		return errors.New("connection refused")
	}
	return nil
}

// TestARunMovesTheAdminKubeconfigOffADeadServer: a run that finds the API
// server the state dir's admin kubeconfig names down moves the file to one
// that answers (atomically, 0600) and says so; a dry run only says so; a
// named server that answers, or a controlPlaneEndpoint, is kept.
func TestARunMovesTheAdminKubeconfigOffADeadServer(t *testing.T) {
	const cp1, cp2, cp3 = "https://10.0.0.1:6443", "https://10.0.0.2:6443", "https://10.0.0.3:6443"
	tests := []struct {
		name      string
		endpoint  string
		dryRun    bool
		up        []string
		want      string
		wantWarn  string
		wantAsked int
	}{
		{name: "named server down", up: []string{cp2, cp3}, want: cp2, wantAsked: 3,
			wantWarn: "from " + cp1 + " to " + cp2 + " (cp2): " + cp1 + " (cp1) did not answer /readyz (connection refused)"},
		{name: "named server down, dry run", dryRun: true, up: []string{cp3}, want: cp1, wantAsked: 3,
			wantWarn: "names " + cp1 + "; a run moves it to " + cp3 + " (cp3)"},
		{name: "named server answers", up: []string{cp1, cp2}, want: cp1, wantAsked: 1},
		{name: "none answers", want: cp1, wantAsked: 3},
		{name: "controlPlaneEndpoint", endpoint: "api.example.com", want: "https://api.example.com:6443"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := adminEnv(t, tt.endpoint)
			path := env.AdminKubeconfigPath()
			if got := serverIn(t, path); got != tt.want && tt.endpoint == "" && got != cp1 {
				t.Fatalf("up wrote %s; want %s", got, cp1)
			}
			env.Opts.DryRun = tt.dryRun
			f := &fakeProbe{up: map[string]bool{}}
			for _, s := range tt.up {
				f.up[s] = true
			}
			admin, err := env.PKI.AdminKubeconfig("c", env.serverURL())
			if err != nil {
				t.Fatal(err)
			}
			env.followLiveAPIServer(context.Background(), admin, f.probe)
			if got := serverIn(t, path); got != tt.want {
				t.Errorf("the admin kubeconfig names %s; want %s", got, tt.want)
			}
			if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
				t.Errorf("admin kubeconfig mode %v (%v); want 0600", st.Mode(), err)
			}
			if len(f.asked) != tt.wantAsked {
				t.Errorf("probed %v; want %d probes", f.asked, tt.wantAsked)
			}
			warnings := strings.Join(env.Warnings(), "\n")
			if tt.wantWarn == "" && warnings != "" || !strings.Contains(warnings, tt.wantWarn) {
				t.Errorf("warnings %q; want %q", warnings, tt.wantWarn)
			}
			if b, _ := os.ReadFile(path); !strings.Contains(string(b), "client-certificate-data") {
				t.Errorf("the admin kubeconfig lost its credentials:\n%s", b)
			}
			// The next run's certs step keeps the server the file names.
			if err := EnsureCerts(context.Background(), env); err != nil {
				t.Fatal(err)
			}
			if got := serverIn(t, path); got != tt.want {
				t.Errorf("after the certs step the admin kubeconfig names %s; want %s", got, tt.want)
			}
		})
	}
}

// TestEnsureCertsKeepsTheControlPlaneTheAdminKubeconfigNames: the certs step
// of every run rewrites the admin kubeconfig; it keeps the control plane the
// file names (a run chose it because it answered) instead of going back to
// the first one, and drops a server that is no control plane any more.
func TestEnsureCertsKeepsTheControlPlaneTheAdminKubeconfigNames(t *testing.T) {
	for _, tt := range []struct{ named, want string }{
		{named: "https://10.0.0.2:6443", want: "https://10.0.0.2:6443"},
		{named: "https://10.0.0.9:6443", want: "https://10.0.0.1:6443"},
		{named: "https://10.0.0.4:6443", want: "https://10.0.0.1:6443"}, // the worker's address
	} {
		env := adminEnv(t, "")
		path := env.AdminKubeconfigPath()
		b, _ := os.ReadFile(path)
		moved, err := withServer(b, "https://10.0.0.1:6443", tt.named)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, moved, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := EnsureCerts(context.Background(), env); err != nil {
			t.Fatal(err)
		}
		if got := serverIn(t, path); got != tt.want {
			t.Errorf("named %s: after the certs step %s; want %s", tt.named, got, tt.want)
		}
	}
}

// TestLiveAdminKubeconfigNamesAServerThatAnswers: `kubeforge kubeconfig`'s
// work: the state dir's file is left as it is, the kubeconfig handed out
// names a server that answers, and none answering is an error naming each.
func TestLiveAdminKubeconfigNamesAServerThatAnswers(t *testing.T) {
	env := adminEnv(t, "")
	before, _ := os.ReadFile(env.AdminKubeconfigPath())
	f := &fakeProbe{up: map[string]bool{"https://10.0.0.3:6443": true}}
	b, choice, err := LiveAdminKubeconfig(context.Background(), env.Inv, env.StateDir, f.probe)
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := kubeconfigServer(b); s != "https://10.0.0.3:6443" || !choice.Moved || choice.Host != "cp3" {
		t.Errorf("handed out %s (%+v); want cp3's server", s, choice)
	}
	if after, _ := os.ReadFile(env.AdminKubeconfigPath()); string(after) != string(before) {
		t.Error("the state dir's admin kubeconfig changed")
	}
	_, _, err = LiveAdminKubeconfig(context.Background(), env.Inv, env.StateDir, (&fakeProbe{}).probe)
	if err == nil || !strings.Contains(err.Error(), "no API server answered /readyz") || !strings.Contains(err.Error(), "https://10.0.0.2:6443 (cp2): connection refused") {
		t.Errorf("none answering: %v", err)
	}
}

// TestDirectReadyzSpeaksTLSToTheServer: the workstation's probe verifies
// the server against the kubeconfig's CA and wants "ok" from /readyz.
func TestDirectReadyzSpeaksTLSToTheServer(t *testing.T) {
	var ready atomic.Bool
	ready.Store(true)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" || !ready.Load() {
			http.Error(w, "[-]etcd failed", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	kubeconfig := func(ca []byte) []byte {
		cfg := clientcmdapi.NewConfig()
		cfg.Clusters["c"] = &clientcmdapi.Cluster{Server: "https://10.0.0.1:6443", CertificateAuthorityData: ca}
		cfg.AuthInfos["a"] = &clientcmdapi.AuthInfo{Token: "t"}
		cfg.Contexts["a@c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "a"}
		cfg.CurrentContext = "a@c"
		b, err := clientcmd.Write(*cfg)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	s := APIServer{Server: srv.URL, Host: "cp1"}
	if err := DirectReadyz(context.Background(), kubeconfig(caPEM), s); err != nil {
		t.Errorf("a ready server: %v", err)
	}
	ready.Store(false)
	if err := DirectReadyz(context.Background(), kubeconfig(caPEM), s); err == nil {
		t.Error("a server whose /readyz fails answered")
	}
	ready.Store(true)
	// Another CA (every httptest server has the same certificate).
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	otherCA := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := DirectReadyz(context.Background(), kubeconfig(otherCA), s); err == nil {
		t.Error("a server the kubeconfig's CA did not sign answered")
	}
}

// TestClusterParamsFollowTheEncryptionKeys: the kubeadm-config that
// cluster/bootstrap applies names the API server's encryption configuration
// exactly when the PKI holds encryption keys (when render gives the static
// pod that flag), so `kubeadm upgrade apply` keeps it.
func TestClusterParamsFollowTheEncryptionKeys(t *testing.T) {
	env := adminEnv(t, "")
	keys := env.PKI.EncryptionKeys()
	for _, tc := range []struct {
		name string
		keys []pki.EncryptionKey
		want bool
	}{
		{"keys", keys, true},
		{"no keys", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env.PKI.SetEncryptionKeys(tc.keys)
			p := env.clusterParams()
			if p.Encryption != tc.want {
				t.Errorf("clusterParams().Encryption = %v with %d keys, want %v", p.Encryption, len(tc.keys), tc.want)
			}
			cc, err := manifests.ClusterConfiguration(env.Inv, p)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(string(cc), "encryption-provider-config"); got != tc.want {
				t.Errorf("kubeadm-config names the encryption configuration: %v, want %v", got, tc.want)
			}
		})
	}
	if len(keys) == 0 {
		t.Fatal("the default inventory's PKI has no encryption keys")
	}
}
