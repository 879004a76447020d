package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/util/keyutil"
)

func TestSecondEnsureChangesNothingAndSaveWritesNothing(t *testing.T) {
	inv := testInventory()
	opt := ecdsaOpts()
	_, dir := generated(t, inv, opt)
	before := snapshot(t, dir)

	b, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	changes, err := Ensure(inv, inv.FirstControlPlane(), b, opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) == 0 {
		t.Fatal("Ensure reported nothing")
	}
	for _, c := range changes {
		if c.Action != ActionUnchanged {
			t.Errorf("second Ensure: %s", c)
		}
	}
	time.Sleep(10 * time.Millisecond) // a rewrite would get a later mtime
	if err := b.Save(dir); err != nil {
		t.Fatal(err)
	}
	after := snapshot(t, dir)
	if len(after) != len(before) {
		t.Errorf("Save changed the file set: %d -> %d entries", len(before), len(after))
	}
	for p, st := range before {
		if after[p] != st {
			t.Errorf("Save rewrote %s", p)
		}
	}
}

func TestSaveModes(t *testing.T) {
	_, dir := generated(t, testInventory(), ecdsaOpts())
	for rel, st := range snapshot(t, dir) {
		var want os.FileMode
		switch {
		case strings.HasSuffix(rel, "/"):
			if rel == "./" {
				continue
			}
			want = 0o700
		case strings.HasSuffix(rel, ".key"), rel == "sa.pub":
			want = 0o600
		case strings.HasSuffix(rel, ".crt"):
			want = 0o644
		default:
			t.Errorf("unexpected file %s", rel)
			continue
		}
		if st.mode != want {
			t.Errorf("%s: mode %o, want %o", rel, st.mode, want)
		}
	}
}

func TestCertSANChangeReissuesOnlyAPIServer(t *testing.T) {
	inv := testInventory()
	opt := ecdsaOpts()
	_, dir := generated(t, inv, opt)
	before := snapshot(t, dir)

	inv.Cluster.CertSANs = append(inv.Cluster.CertSANs, "new.example.org")
	b, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	changes, err := Ensure(inv, inv.FirstControlPlane(), b, opt)
	if err != nil {
		t.Fatal(err)
	}
	var reissued []string
	for _, c := range changes {
		if c.Action != ActionUnchanged {
			reissued = append(reissued, c.Host+"/"+c.Name)
			if c.Action != ActionReissued || c.Reason != "SANs changed: +new.example.org" {
				t.Errorf("%s: action %q reason %q", c.Name, c.Action, c.Reason)
			}
		}
	}
	if want := []string{"cp1/apiserver", "cp2/apiserver", "cp3/apiserver"}; !slices.Equal(reissued, want) {
		t.Errorf("re-issued %v, want %v", reissued, want)
	}
	if err := b.Save(dir); err != nil {
		t.Fatal(err)
	}
	var rewritten []string
	for p, st := range snapshot(t, dir) {
		if before[p] != st {
			rewritten = append(rewritten, p)
		}
	}
	slices.Sort(rewritten)
	want := []string{"nodes/cp1/apiserver.crt", "nodes/cp1/apiserver.key", "nodes/cp2/apiserver.crt",
		"nodes/cp2/apiserver.key", "nodes/cp3/apiserver.crt", "nodes/cp3/apiserver.key"}
	if !slices.Equal(rewritten, want) {
		t.Errorf("rewritten %v, want %v", rewritten, want)
	}
	if c := readCert(t, filepath.Join(dir, "nodes/cp2/apiserver.crt")); !slices.Contains(c.DNSNames, "new.example.org") {
		t.Errorf("new apiserver cert lacks the SAN: %v", c.DNSNames)
	}
}

func TestEnsureReissuesExpiringLeavesOnly(t *testing.T) {
	inv := testInventory()
	opt := ecdsaOpts()
	b, _ := generated(t, inv, opt)
	later := opt.Now().Add(340 * 24 * time.Hour) // 25 days left on leaves
	opt.Now = func() time.Time { return later }
	changes, err := Ensure(inv, inv.FirstControlPlane(), b, opt)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range changes {
		isCA := c.Host == "" && (c.Name == "ca" || c.Name == "etcd-ca" || c.Name == "front-proxy-ca" || c.Name == "sa")
		if isCA && c.Action != ActionUnchanged {
			t.Errorf("%s: %s", c.Name, c)
		}
		if !isCA && (c.Action != ActionReissued || !strings.HasPrefix(c.Reason, "expires ")) {
			t.Errorf("%s: %s, want re-issued because it expires", c.Name, c)
		}
	}
}

func TestRenew(t *testing.T) {
	inv := testInventory()
	opt := ecdsaOpts()
	b, _ := generated(t, inv, opt)
	old := b.leaves[leafID{Host: "cp1", Name: "apiserver"}]
	oldPeer := b.leaves[leafID{Host: "cp1", Name: "etcd-peer"}]

	changes, err := b.Renew(inv, inv.FirstControlPlane(), []string{"apiserver"}, opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 3 {
		t.Errorf("renew apiserver: %v, want 3 changes", changes)
	}
	renewed := b.leaves[leafID{Host: "cp1", Name: "apiserver"}]
	if renewed.Cert.SerialNumber.Cmp(old.Cert.SerialNumber) == 0 || string(renewed.KeyPEM) == string(old.KeyPEM) {
		t.Error("renewed apiserver keeps its serial or key; kubeadm renews with a new key")
	}
	if b.leaves[leafID{Host: "cp1", Name: "etcd-peer"}] != oldPeer {
		t.Error("renewing apiserver touched etcd-peer")
	}

	changes, err = b.Renew(inv, inv.FirstControlPlane(), []string{"all"}, opt)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range changes {
		if c.Name == "kubelet.conf" {
			t.Error("renew all includes kubelet.conf; kubeadm leaves it to kubelet rotation")
		}
	}
	// 3 control planes x 10 leaves (no kubelet.conf) + super-admin on cp1 + 2 workstation kubeconfigs.
	if len(changes) != 3*10+1+2 {
		t.Errorf("renew all: %d changes", len(changes))
	}
	if _, err := b.Renew(inv, inv.FirstControlPlane(), []string{"apiserverr"}, opt); err == nil || !strings.Contains(err.Error(), `unknown certificate "apiserverr"`) {
		t.Errorf("unknown name: %v", err)
	}
}

// opensslCA makes a user CA with openssl: an external CA that kubeforge did not create.
func opensslCA(t *testing.T, dir, base, cn string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, base)), 0o700); err != nil {
		t.Fatal(err)
	}
	args := []string{"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-subj", "/CN=" + cn, "-keyout", filepath.Join(dir, base+".key"), "-out", filepath.Join(dir, base+".crt"),
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,digitalSignature"}
	args = append(args, "-days", "3650")
	if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
		t.Fatalf("openssl req: %v: %s", err, out)
	}
}

// expiredCA writes a CA that expired on 2021-01-01 (openssl 3.0 cannot back-date).
func expiredCA(t *testing.T, dir string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "old-ca"},
		NotBefore: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	must(t, err)
	keyPEM, err := keyutil.MarshalPrivateKeyToPEM(key)
	must(t, err)
	must(t, os.MkdirAll(dir, 0o700))
	must(t, os.WriteFile(filepath.Join(dir, "ca.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "ca.key"), keyPEM, 0o600))
}

func TestExternalCAWithKeyIsUsedAsIs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	opensslCA(t, dir, "ca", "my-corp-ca")
	userCA, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))

	inv := testInventory()
	b, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	changes, err := Ensure(inv, inv.FirstControlPlane(), b, ecdsaOpts())
	if err != nil {
		t.Fatal(err)
	}
	if changes[0].Name != "ca" || changes[0].Action != ActionUnchanged {
		t.Errorf("user CA: %s", changes[0])
	}
	if err := b.Save(dir); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "ca.crt")); string(got) != string(userCA) {
		t.Error("the user's ca.crt was rewritten")
	}
	out, err := exec.Command("openssl", "verify", "-CAfile", filepath.Join(dir, "ca.crt"),
		filepath.Join(dir, "nodes/cp3/apiserver.crt")).CombinedOutput()
	if err != nil {
		t.Errorf("apiserver does not chain to the user CA: %v: %s", err, out)
	}
}

func TestExternalCAWithoutKeyAcceptedWhenLeavesExist(t *testing.T) {
	inv := testInventory()
	opt := ecdsaOpts()
	_, dir := generated(t, inv, opt)
	if err := os.Remove(filepath.Join(dir, "ca.key")); err != nil {
		t.Fatal(err)
	}
	b, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	changes, err := Ensure(inv, inv.FirstControlPlane(), b, opt)
	if err != nil {
		t.Fatalf("leaves-only external CA: %v", err)
	}
	if changes[0].Reason != "external CA: no key" {
		t.Errorf("ca change: %s", changes[0])
	}
	files, err := b.NodeFiles(inv, inv.FirstControlPlane(), inv.Host("cp1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if f.Path == "/etc/kubernetes/pki/ca.key" {
			t.Error("a control plane got ca.key that kubeforge does not have")
		}
	}
}

func TestEnsureRejectsBadInputs(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string) // on a generated PKI, or an empty dir when fresh
		fresh   bool
		want    string
	}{
		{
			name:    "expired user CA",
			fresh:   true,
			prepare: func(t *testing.T, dir string) { expiredCA(t, dir) },
			want:    "CA ca: " + "%DIR%/ca.crt expired on 2021-01-01T00:00:00Z",
		},
		{
			name: "leaves-only external CA missing a leaf",
			prepare: func(t *testing.T, dir string) {
				must(t, os.Remove(filepath.Join(dir, "ca.key")))
				must(t, os.Remove(filepath.Join(dir, "nodes/cp3/apiserver.crt")))
				must(t, os.Remove(filepath.Join(dir, "nodes/cp3/apiserver.key")))
			},
			want: "issue cp3/apiserver: %DIR%/nodes/cp3/apiserver.crt is missing, but CA ca has no key (external CA)",
		},
		{
			name: "CA missing while leaves it signed exist",
			prepare: func(t *testing.T, dir string) {
				must(t, os.Remove(filepath.Join(dir, "etcd/ca.crt")))
				must(t, os.Remove(filepath.Join(dir, "etcd/ca.key")))
			},
			want: "CA etcd-ca: %DIR%/etcd/ca.crt is missing but 12 certificates it signed exist",
		},
		{
			name: "CA key without certificate",
			prepare: func(t *testing.T, dir string) {
				must(t, os.Remove(filepath.Join(dir, "front-proxy-ca.crt")))
			},
			want: "CA front-proxy-ca: %DIR%/front-proxy-ca.key exists without %DIR%/front-proxy-ca.crt",
		},
		{
			name:    "sa.pub without sa.key",
			prepare: func(t *testing.T, dir string) { must(t, os.Remove(filepath.Join(dir, "sa.key"))) },
			want:    "service-account key: %DIR%/sa.pub exists without %DIR%/sa.key",
		},
		{
			name: "a certificate that is not a CA in place of the CA",
			prepare: func(t *testing.T, dir string) {
				for _, ext := range []string{".crt", ".key"} {
					data, _ := os.ReadFile(filepath.Join(dir, "nodes/cp1/front-proxy-client"+ext))
					must(t, os.WriteFile(filepath.Join(dir, "front-proxy-ca"+ext), data, 0o600))
				}
			},
			want: "CA front-proxy-ca: %DIR%/front-proxy-ca.crt is not a CA certificate",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv := testInventory()
			opt := ecdsaOpts()
			var dir string
			if tt.fresh {
				dir = filepath.Join(t.TempDir(), "pki")
			} else {
				_, dir = generated(t, inv, opt)
			}
			tt.prepare(t, dir)
			b, err := Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Ensure(inv, inv.FirstControlPlane(), b, opt)
			want := strings.ReplaceAll(tt.want, "%DIR%", dir)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Ensure error:\n got %v\nwant containing %q", err, want)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestLoadRejectsGarbage(t *testing.T) {
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "ca.crt"), []byte("not a cert"), 0o644))
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "parse certificate "+filepath.Join(dir, "ca.crt")) {
		t.Errorf("Load: %v", err)
	}
}

func TestLoadMissingDirIsEmpty(t *testing.T) {
	b, err := Load(filepath.Join(t.TempDir(), "nope"))
	if err != nil || b.CACert() != nil || len(b.Certificates()) != 0 {
		t.Errorf("Load missing dir: %v, %v", err, b)
	}
}

func TestCertificatesListsEveryCert(t *testing.T) {
	inv := testInventory()
	opt := ecdsaOpts()
	b, _ := generated(t, inv, opt)
	now := opt.Now()
	rows := b.CertificatesAt(now.Add(24 * time.Hour))
	if len(rows) != 3+len(expectedLeaves()) {
		t.Errorf("%d rows, want %d", len(rows), 3+len(expectedLeaves()))
	}
	for _, r := range rows {
		if r.IsCA != (r.CAName == "") {
			t.Errorf("%s: IsCA %v CAName %q", r.Name, r.IsCA, r.CAName)
		}
		want := 365*24*time.Hour - 24*time.Hour
		if r.IsCA {
			want = 10*365*24*time.Hour - 24*time.Hour
		}
		if r.Residual != want {
			t.Errorf("%s/%s: residual %s, want %s", r.Host, r.Name, r.Residual, want)
		}
	}
	if rows[3].Host != "" || rows[3].Name != "admin.conf" || rows[3].Subject != "CN=kubernetes-admin,O=kubeadm:cluster-admins" {
		t.Errorf("first leaf row: %+v", rows[3])
	}
}

func TestServerURL(t *testing.T) {
	tests := []struct{ endpoint, want, err string }{
		{"", "https://10.0.0.11:6443", ""},
		{"lb.example.com", "https://lb.example.com:6443", ""},
		{"lb.example.com:443", "https://lb.example.com:443", ""},
		{"10.1.2.3:8443", "https://10.1.2.3:8443", ""},
		{"fd00::1", "https://[fd00::1]:6443", ""},
		{"[fd00::1]:7443", "https://[fd00::1]:7443", ""},
		{"", "", "no control-plane host"}, // (validation refuses a bad endpoint before pki sees it)
	}
	for i, tt := range tests {
		inv := testInventory()
		inv.Cluster.ControlPlaneEndpoint = tt.endpoint
		if i == len(tests)-1 {
			inv.Hosts = nil
		}
		got, err := ServerURL(inv, inv.FirstControlPlane())
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: error %v, want %q", tt.endpoint, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%q: %q, %v; want %q", tt.endpoint, got, err, tt.want)
		}
	}
}

func TestAPIServerSANsFollowInventory(t *testing.T) {
	inv := testInventory()
	inv.Cluster.ControlPlaneEndpoint = "" // no endpoint SAN
	inv.Cluster.ServiceSubnet = "172.20.0.0/16"
	inv.Cluster.DNSDomain = "corp.internal"
	inv.Cluster.CertSANs = []string{"*.apps.example.org"}
	b, _ := generated(t, inv, ecdsaOpts())
	c := b.leaves[leafID{Host: "cp2", Name: "apiserver"}].Cert
	var ips []string
	for _, ip := range c.IPAddresses {
		ips = append(ips, ip.String())
	}
	// No endpoint and several control planes: the workers' node-local proxy passes TLS through from 127.0.0.1.
	if !slices.Equal(ips, []string{"172.20.0.1", "10.0.0.12", "127.0.0.1"}) {
		t.Errorf("IPs %v", ips)
	}
	wantDNS := []string{"*.apps.example.org", "cp2", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.corp.internal"}
	if !slices.Equal(c.DNSNames, wantDNS) {
		t.Errorf("DNS %v, want %v", c.DNSNames, wantDNS)
	}

	inv.Cluster.CertSANs = []string{"not a name!"}
	if _, err := Ensure(inv, inv.FirstControlPlane(), b, ecdsaOpts()); err == nil || !strings.Contains(err.Error(), `certSANs entry "not a name!"`) {
		t.Errorf("bad SAN: %v", err)
	}
	inv = testInventory()
	inv.Hosts[1].Address, inv.Hosts[1].InternalAddress = "cp2.example.com", ""
	if _, err := Ensure(inv, inv.FirstControlPlane(), b, ecdsaOpts()); err == nil || !strings.Contains(err.Error(), "host cp2: address \"cp2.example.com\" is not an IP address") {
		t.Errorf("hostname address: %v", err)
	}
	if _, err := Ensure(testInventory(), nil, b, Options{KeyType: "dsa"}); err == nil || !strings.Contains(err.Error(), `key type "dsa" is not supported`) {
		t.Errorf("bad key type: %v", err)
	}
}
