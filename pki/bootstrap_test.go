package pki

import (
	"bytes"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/cluster-bootstrap/token/jws"
)

func TestNewBootstrapToken(t *testing.T) {
	re := regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`)
	seen := map[string]bool{}
	for range 20 {
		tok, err := NewBootstrapToken()
		if err != nil {
			t.Fatal(err)
		}
		if !re.MatchString(tok.String()) {
			t.Errorf("token %q does not match %s", tok.String(), re)
		}
		if seen[tok.String()] {
			t.Errorf("token %q repeated", tok.String())
		}
		seen[tok.String()] = true
	}
}

func TestParseBootstrapToken(t *testing.T) {
	tests := []struct {
		in, id, secret string
		ok             bool
	}{
		{"abcdef.0123456789abcdef", "abcdef", "0123456789abcdef", true},
		{"ABCDEF.0123456789abcdef", "", "", false},
		{"abcde.0123456789abcdef", "", "", false},
		{"abcdef:0123456789abcdef", "", "", false},
		{"abcdef.0123456789abcdef0", "", "", false},
		{"", "", "", false},
	}
	for _, tt := range tests {
		tok, err := ParseBootstrapToken(tt.in)
		if (err == nil) != tt.ok || tok.ID != tt.id || tok.Secret != tt.secret {
			t.Errorf("%q: %+v, %v", tt.in, tok, err)
		}
		if err != nil && tt.in != "" && strings.Contains(err.Error(), tt.in) {
			t.Errorf("%q: the error repeats the token: %v", tt.in, err)
		}
	}
}

func TestBootstrapTokenNeverLoggedInFull(t *testing.T) {
	tok := BootstrapToken{ID: "abcdef", Secret: "0123456789abcdef"}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("join", "token", tok)
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("join", "token", tok)
	if strings.Contains(buf.String(), tok.Secret) || !strings.Contains(buf.String(), "abcdef.****************") {
		t.Errorf("log output: %s", buf.String())
	}
	if tok.String() != "abcdef.0123456789abcdef" {
		t.Errorf("String %q", tok.String())
	}
}

func TestBootstrapTokenSecret(t *testing.T) {
	tok := BootstrapToken{ID: "abcdef", Secret: "0123456789abcdef"}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.FixedZone("x", 3600))
	s := BootstrapTokenSecret(tok, 24*time.Hour, now, "kubeforge join")
	if s.Name != "bootstrap-token-abcdef" || s.Namespace != "kube-system" || s.Type != "bootstrap.kubernetes.io/token" {
		t.Errorf("meta %s/%s type %s", s.Namespace, s.Name, s.Type)
	}
	want := map[string]string{
		"token-id":                       "abcdef",
		"token-secret":                   "0123456789abcdef",
		"usage-bootstrap-authentication": "true",
		"usage-bootstrap-signing":        "true",
		"auth-extra-groups":              "system:bootstrappers:kubeadm:default-node-token",
		"expiration":                     "2026-03-02T11:00:00Z",
		"description":                    "kubeforge join",
	}
	if len(s.Data) != len(want) {
		t.Errorf("data keys %d, want %d", len(s.Data), len(want))
	}
	for k, v := range want {
		if string(s.Data[k]) != v {
			t.Errorf("%s = %q, want %q", k, s.Data[k], v)
		}
	}
	if s := BootstrapTokenSecret(tok, 0, now, ""); s.Data["expiration"] != nil || s.Data["description"] != nil {
		t.Error("no ttl or description still sets them")
	}
}

func TestClusterInfoSignatureVerifies(t *testing.T) {
	inv := testInventory()
	b, _ := generated(t, inv, ecdsaOpts())
	tok, err := NewBootstrapToken()
	if err != nil {
		t.Fatal(err)
	}
	kc, err := ClusterInfoKubeconfig(b.CACertPEM(), "https://k8s.example.com:6443")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.Load(kc)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.AuthInfos) != 0 || cfg.Clusters[""] == nil || cfg.Clusters[""].Server != "https://k8s.example.com:6443" ||
		!bytes.Equal(cfg.Clusters[""].CertificateAuthorityData, b.CACertPEM()) {
		t.Errorf("cluster-info kubeconfig: %+v", cfg)
	}
	sig, err := SignClusterInfo(kc, tok)
	if err != nil {
		t.Fatal(err)
	}
	if !jws.DetachedTokenIsValid(sig, string(kc), tok.ID, tok.Secret) {
		t.Error("signature does not verify with cluster-bootstrap")
	}
	if jws.DetachedTokenIsValid(sig, string(kc)+" ", tok.ID, tok.Secret) {
		t.Error("signature verifies for other content")
	}
	other := BootstrapToken{ID: tok.ID, Secret: "0000000000000000"}
	if jws.DetachedTokenIsValid(sig, string(kc), other.ID, other.Secret) {
		t.Error("signature verifies with another secret")
	}
	if ClusterInfoSignatureKey(tok) != "jws-kubeconfig-"+tok.ID {
		t.Error(ClusterInfoSignatureKey(tok))
	}
}

func TestBootstrapKubeconfig(t *testing.T) {
	inv := testInventory()
	b, _ := generated(t, inv, ecdsaOpts())
	tok := BootstrapToken{ID: "abcdef", Secret: "0123456789abcdef"}
	f, err := b.BootstrapKubeletFile(inv, tok)
	if err != nil {
		t.Fatal(err)
	}
	if f.Path != "/etc/kubernetes/bootstrap-kubelet.conf" || f.Mode != 0o600 {
		t.Errorf("file %s %o", f.Path, f.Mode)
	}
	cfg, err := clientcmd.Load(f.Data)
	if err != nil {
		t.Fatal(err)
	}
	ctx := cfg.Contexts[cfg.CurrentContext]
	if cfg.CurrentContext != "tls-bootstrap-token-user@kubernetes" || ctx.AuthInfo != "tls-bootstrap-token-user" || ctx.Cluster != "kubernetes" {
		t.Errorf("context %q %+v", cfg.CurrentContext, ctx)
	}
	if cfg.AuthInfos["tls-bootstrap-token-user"].Token != "abcdef.0123456789abcdef" {
		t.Error("token missing")
	}
	if cfg.Clusters["kubernetes"].Server != "https://k8s.example.com:6443" || !bytes.Equal(cfg.Clusters["kubernetes"].CertificateAuthorityData, b.CACertPEM()) {
		t.Errorf("cluster %+v", cfg.Clusters["kubernetes"])
	}
	rest, err := clientcmd.NewDefaultClientConfig(*cfg, nil).ClientConfig()
	if err != nil || rest.BearerToken != tok.String() {
		t.Errorf("client config: %v", err)
	}
}
