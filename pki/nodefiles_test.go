package pki

import (
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	certutil "k8s.io/client-go/util/cert"
)

func TestNodeFiles(t *testing.T) {
	inv := testInventory()
	b, _ := generated(t, inv, ecdsaOpts())
	cpFiles := []string{
		"/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/pki/ca.key",
		"/etc/kubernetes/pki/etcd/ca.crt", "/etc/kubernetes/pki/etcd/ca.key",
		"/etc/kubernetes/pki/front-proxy-ca.crt", "/etc/kubernetes/pki/front-proxy-ca.key",
		"/etc/kubernetes/pki/sa.key", "/etc/kubernetes/pki/sa.pub",
		"/etc/kubernetes/pki/apiserver.crt", "/etc/kubernetes/pki/apiserver.key",
		"/etc/kubernetes/pki/apiserver-kubelet-client.crt", "/etc/kubernetes/pki/apiserver-kubelet-client.key",
		"/etc/kubernetes/pki/front-proxy-client.crt", "/etc/kubernetes/pki/front-proxy-client.key",
		"/etc/kubernetes/pki/etcd/server.crt", "/etc/kubernetes/pki/etcd/server.key",
		"/etc/kubernetes/pki/etcd/peer.crt", "/etc/kubernetes/pki/etcd/peer.key",
		"/etc/kubernetes/pki/etcd/healthcheck-client.crt", "/etc/kubernetes/pki/etcd/healthcheck-client.key",
		"/etc/kubernetes/pki/apiserver-etcd-client.crt", "/etc/kubernetes/pki/apiserver-etcd-client.key",
		"/etc/kubernetes/admin.conf", "/etc/kubernetes/controller-manager.conf",
		"/etc/kubernetes/scheduler.conf", "/etc/kubernetes/kubelet.conf",
	}
	tests := []struct {
		host string
		want []string
	}{
		{"cp1", append(slices.Clone(cpFiles), "/etc/kubernetes/super-admin.conf")},
		{"cp2", cpFiles},
		{"cp3", cpFiles},
		{"w1", []string{"/etc/kubernetes/pki/ca.crt"}},
		{"w2", []string{"/etc/kubernetes/pki/ca.crt"}},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			files, err := b.NodeFiles(inv, inv.FirstControlPlane(), inv.Host(tt.host))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range files {
				got = append(got, f.Path)
				want := os.FileMode(0o600)
				if strings.HasSuffix(f.Path, ".crt") {
					want = 0o644
				}
				if f.Mode != want {
					t.Errorf("%s: mode %o, want %o", f.Path, f.Mode, want)
				}
				if len(f.Data) == 0 {
					t.Errorf("%s: empty", f.Path)
				}
			}
			slices.Sort(got)
			want := slices.Clone(tt.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("files\n got %v\nwant %v", got, want)
			}
		})
	}
}

// TestNodeKubeconfigs loads each kubeconfig with clientcmd and checks server,
// names, and that the client certificate chains to the CA for client auth.
func TestNodeKubeconfigs(t *testing.T) {
	inv := testInventory()
	b, _ := generated(t, inv, ecdsaOpts())
	tests := []struct {
		host, file, server, user string
		org                      []string
	}{
		{"cp1", "admin.conf", "https://k8s.example.com:6443", "kubernetes-admin", []string{"kubeadm:cluster-admins"}},
		{"cp1", "super-admin.conf", "https://k8s.example.com:6443", "kubernetes-super-admin", []string{"system:masters"}},
		{"cp2", "controller-manager.conf", "https://10.0.0.12:6443", "system:kube-controller-manager", nil},
		{"cp2", "scheduler.conf", "https://10.0.0.12:6443", "system:kube-scheduler", nil},
		{"cp1", "kubelet.conf", "https://10.0.0.11:6443", "system:node:cp1", []string{"system:nodes"}},
		{"cp3", "kubelet.conf", "https://10.0.0.13:6443", "system:node:cp3", []string{"system:nodes"}},
	}
	for _, tt := range tests {
		t.Run(tt.host+"/"+tt.file, func(t *testing.T) {
			files, err := b.NodeFiles(inv, inv.FirstControlPlane(), inv.Host(tt.host))
			if err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(files, func(f File) bool { return f.Path == "/etc/kubernetes/"+tt.file })
			if i < 0 {
				t.Fatalf("no %s", tt.file)
			}
			checkKubeconfig(t, files[i].Data, inv.Cluster.Name, tt.server, tt.user, tt.org, b.CACert())
		})
	}
	// Without a controlPlaneEndpoint each control plane's admin.conf names its own API server, as kubeadm's:
	// it works there as long as that control plane does, whichever other one is down (issue 26).
	noEP := testInventory()
	noEP.Cluster.ControlPlaneEndpoint = ""
	for _, host := range []string{"cp1", "cp2"} {
		files, err := b.NodeFiles(noEP, noEP.FirstControlPlane(), noEP.Host(host))
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(files, func(f File) bool { return f.Path == "/etc/kubernetes/admin.conf" })
		if i < 0 {
			t.Fatalf("%s: no admin.conf", host)
		}
		checkKubeconfig(t, files[i].Data, noEP.Cluster.Name, LocalServerURL(noEP.Host(host)), "kubernetes-admin", []string{"kubeadm:cluster-admins"}, b.CACert())
	}
	for _, tt := range []struct {
		name string
		fn   func(string, string) ([]byte, error)
		user string
		org  []string
	}{
		{"workstation admin", b.AdminKubeconfig, "kubernetes-admin", []string{"kubeadm:cluster-admins"}},
		{"workstation super-admin", b.SuperAdminKubeconfig, "kubernetes-super-admin", []string{"system:masters"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			data, err := tt.fn("prod-eu", "https://127.0.0.1:16443")
			if err != nil {
				t.Fatal(err)
			}
			checkKubeconfig(t, data, "prod-eu", "https://127.0.0.1:16443", tt.user, tt.org, b.CACert())
		})
	}
}

func checkKubeconfig(t *testing.T, data []byte, cluster, server, user string, org []string, ca *x509.Certificate) {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	cfg, err := clientcmd.Load(data)
	if err != nil {
		t.Fatalf("clientcmd.Load: %v", err)
	}
	// As kubeadm: the cluster entry is named after the cluster, the context <user>@<cluster>.
	ctxName := user + "@" + cluster
	ctx := cfg.Contexts[cfg.CurrentContext]
	if cfg.CurrentContext != ctxName || ctx == nil || ctx.Cluster != cluster || ctx.AuthInfo != user {
		t.Fatalf("context %q %+v, want %s -> cluster %s, user %s", cfg.CurrentContext, ctx, ctxName, cluster, user)
	}
	if got := cfg.Clusters[cluster].Server; got != server {
		t.Errorf("server %q, want %q", got, server)
	}
	// The client config builds (clientcmd validates key/cert data).
	if _, err := clientcmd.NewDefaultClientConfig(*cfg, nil).ClientConfig(); err != nil {
		t.Errorf("client config: %v", err)
	}
	cas, err := certutil.ParseCertsPEM(cfg.Clusters[cluster].CertificateAuthorityData)
	if err != nil || !cas[0].Equal(ca) {
		t.Errorf("CA data is not the cluster CA: %v", err)
	}
	certs, err := certutil.ParseCertsPEM(cfg.AuthInfos[user].ClientCertificateData)
	if err != nil {
		t.Fatal(err)
	}
	c := certs[0]
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client cert does not chain to the CA: %v", err)
	}
	if c.Subject.CommonName != user || !slices.Equal(c.Subject.Organization, org) {
		t.Errorf("client cert subject %s, want CN=%s O=%v", c.Subject, user, org)
	}
	if key, err := parseKey(cfg.AuthInfos[user].ClientKeyData); err != nil || !keysMatch(c, key) {
		t.Errorf("client key does not match the certificate: %v", err)
	}
}

func TestWorkersNeverGetCAKeys(t *testing.T) {
	inv := testInventory()
	b, _ := generated(t, inv, ecdsaOpts())
	for _, h := range inv.Workers() {
		files, err := b.NodeFiles(inv, inv.FirstControlPlane(), h)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if strings.HasSuffix(f.Path, ".key") || strings.Contains(string(f.Data), "PRIVATE KEY") {
				t.Errorf("%s got private key material in %s", h.Name, f.Path)
			}
		}
	}
}

func TestExpirationReadsCertsAndKubeconfigs(t *testing.T) {
	inv := testInventory()
	opt := ecdsaOpts()
	b, dir := generated(t, inv, opt)
	now := opt.Now()
	files, err := b.NodeFiles(inv, inv.FirstControlPlane(), inv.Host("cp2"))
	if err != nil {
		t.Fatal(err)
	}
	byPath := map[string][]byte{}
	for _, f := range files {
		byPath[f.Path] = f.Data
	}
	for _, nc := range NodeCertificates(inv, inv.FirstControlPlane(), inv.Host("cp2")) {
		data, ok := byPath[nc.Path]
		if !ok {
			t.Errorf("NodeCertificates lists %s, which the node does not receive", nc.Path)
			continue
		}
		ci, err := Expiration(nc.Name, data, now)
		if err != nil {
			t.Errorf("%s: %v", nc.Path, err)
			continue
		}
		want := 365 * 24 * time.Hour
		if ci.IsCA {
			want = 10 * 365 * 24 * time.Hour
		}
		if ci.Residual != want {
			t.Errorf("%s: residual %s, want %s", nc.Name, ci.Residual, want)
		}
	}
	ci, err := Expiration("apiserver", []byte(mustRead(t, filepath.Join(dir, "nodes/cp2/apiserver.crt"))), now)
	if err != nil || ci.CAName != "ca" || ci.Subject != "CN=kube-apiserver" {
		t.Errorf("apiserver: %+v %v", ci, err)
	}
	if _, err := Expiration("junk", []byte("junk"), now); err == nil {
		t.Error("junk parsed")
	}
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestOpenSSLChecksKeyPairs has openssl compare each node key with its certificate.
func TestOpenSSLChecksKeyPairs(t *testing.T) {
	inv := testInventory()
	b, _ := generated(t, inv, ecdsaOpts())
	files, err := b.NodeFiles(inv, inv.FirstControlPlane(), inv.Host("cp1"))
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	for _, f := range files {
		p := filepath.Join(root, f.Path)
		must(t, os.MkdirAll(filepath.Dir(p), 0o700))
		must(t, os.WriteFile(p, f.Data, f.Mode))
	}
	pub := func(args ...string) string {
		out, err := exec.Command("openssl", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("openssl %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	for _, f := range files {
		if !strings.HasSuffix(f.Path, ".crt") {
			continue
		}
		keyPath := filepath.Join(root, strings.TrimSuffix(f.Path, ".crt")+".key")
		if _, err := os.Stat(keyPath); err != nil {
			continue
		}
		fromCert := pub("x509", "-noout", "-pubkey", "-in", filepath.Join(root, f.Path))
		fromKey := pub("pkey", "-pubout", "-in", keyPath)
		if fromCert != fromKey {
			t.Errorf("%s: key and certificate differ for openssl", f.Path)
		}
	}
	saPub := pub("pkey", "-pubout", "-in", filepath.Join(root, "etc/kubernetes/pki/sa.key"))
	if saPub != mustRead(t, filepath.Join(root, "etc/kubernetes/pki/sa.pub")) {
		t.Error("sa.pub is not the public half of sa.key")
	}
}

func TestSuperAdminGoesToTheSeedGivenNotTheFilesFirst(t *testing.T) {
	inv := testInventory()
	inv.Cluster.ControlPlaneEndpoint = ""
	seed := inv.Host("cp2")
	dir := filepath.Join(t.TempDir(), "pki")
	b, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	changes, err := Ensure(inv, seed, b, ecdsaOpts())
	if err != nil {
		t.Fatal(err)
	}
	var holders []string
	for _, c := range changes {
		if c.Name == "super-admin.conf" {
			holders = append(holders, c.Host)
		}
	}
	if got := strings.Join(holders, ","); got != ",cp2" {
		t.Errorf("super-admin.conf issued for %q; want the workstation and cp2, the seed", got)
	}
	for _, h := range inv.ControlPlanes() {
		files, err := b.NodeFiles(inv, seed, h)
		if err != nil {
			t.Fatal(err)
		}
		has := slices.ContainsFunc(files, func(f File) bool { return f.Path == "/etc/kubernetes/super-admin.conf" })
		listed := slices.ContainsFunc(NodeCertificates(inv, seed, h), func(nc NodeCert) bool { return nc.Name == "super-admin.conf" })
		if want := h.Name == "cp2"; has != want || listed != want {
			t.Errorf("%s: super-admin.conf rendered %v, listed for check-expiration %v; want %v", h.Name, has, listed, want)
		}
	}
	if got, err := ServerURL(inv, seed); err != nil || got != "https://10.0.0.12:6443" {
		t.Errorf("ServerURL = %q, %v; want cp2's", got, err)
	}
	if _, err := b.NodeFiles(inv, nil, inv.Host("cp1")); err == nil {
		t.Error("a control plane's files rendered without a seed or an endpoint")
	}
}
