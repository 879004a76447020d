package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// wantCert is one row of the expected PKI, written from kubeadm 1.37's
// phases/certs/certlist.go, pkiutil.GetAPIServerAltNames/getAltNames and
// phases/kubeconfig getKubeConfigSpecsBase.
type wantCert struct {
	file   string // under the pki dir
	ca     string // CA file under the pki dir
	cn     string
	org    []string
	usages []x509.ExtKeyUsage
	dns    []string
	ips    []string
}

var (
	srv    = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	cli    = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	srvCli = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
)

func expectedLeaves() []wantCert {
	cps := []struct{ name, ip string }{{"cp1", "10.0.0.11"}, {"cp2", "10.0.0.12"}, {"cp3", "10.0.0.13"}}
	var out []wantCert
	for _, cp := range cps {
		d := "nodes/" + cp.name + "/"
		out = append(out,
			wantCert{file: d + "apiserver.crt", ca: "ca.crt", cn: "kube-apiserver", usages: srv,
				dns: []string{cp.name, "kubernetes", "kubernetes.default", "kubernetes.default.svc",
					"kubernetes.default.svc.cluster.local", "k8s.example.com", "api.example.org"},
				ips: []string{"10.96.0.1", cp.ip, "203.0.113.7"}},
			wantCert{file: d + "apiserver-kubelet-client.crt", ca: "ca.crt", cn: "kube-apiserver-kubelet-client", usages: cli},
			wantCert{file: d + "front-proxy-client.crt", ca: "front-proxy-ca.crt", cn: "front-proxy-client", usages: cli},
			wantCert{file: d + "etcd/server.crt", ca: "etcd/ca.crt", cn: cp.name, usages: srvCli,
				dns: []string{cp.name, "localhost"}, ips: []string{cp.ip, "127.0.0.1", "::1"}},
			wantCert{file: d + "etcd/peer.crt", ca: "etcd/ca.crt", cn: cp.name, usages: srvCli,
				dns: []string{cp.name, "localhost"}, ips: []string{cp.ip, "127.0.0.1", "::1"}},
			wantCert{file: d + "etcd/healthcheck-client.crt", ca: "etcd/ca.crt", cn: "kube-etcd-healthcheck-client", usages: cli},
			wantCert{file: d + "apiserver-etcd-client.crt", ca: "etcd/ca.crt", cn: "kube-apiserver-etcd-client", usages: cli},
			wantCert{file: d + "kubeconfig/admin.crt", ca: "ca.crt", cn: "kubernetes-admin", org: []string{"kubeadm:cluster-admins"}, usages: cli},
			wantCert{file: d + "kubeconfig/controller-manager.crt", ca: "ca.crt", cn: "system:kube-controller-manager", usages: cli},
			wantCert{file: d + "kubeconfig/scheduler.crt", ca: "ca.crt", cn: "system:kube-scheduler", usages: cli},
			wantCert{file: d + "kubeconfig/kubelet.crt", ca: "ca.crt", cn: "system:node:" + cp.name, org: []string{"system:nodes"}, usages: cli},
		)
	}
	out = append(out,
		wantCert{file: "nodes/cp1/kubeconfig/super-admin.crt", ca: "ca.crt", cn: "kubernetes-super-admin", org: []string{"system:masters"}, usages: cli},
		wantCert{file: "workstation/kubeconfig/admin.crt", ca: "ca.crt", cn: "kubernetes-admin", org: []string{"kubeadm:cluster-admins"}, usages: cli},
		wantCert{file: "workstation/kubeconfig/super-admin.crt", ca: "ca.crt", cn: "kubernetes-super-admin", org: []string{"system:masters"}, usages: cli},
	)
	return out
}

func checkKeyType(t *testing.T, name string, c *x509.Certificate, keyType string) {
	t.Helper()
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		if keyType != KeyTypeRSA || k.N.BitLen() != 2048 {
			t.Errorf("%s: RSA %d-bit key, want %s", name, k.N.BitLen(), keyType)
		}
	case *ecdsa.PublicKey:
		if keyType != KeyTypeECDSA || k.Curve != elliptic.P256() {
			t.Errorf("%s: ECDSA %s key, want %s", name, k.Curve.Params().Name, keyType)
		}
	default:
		t.Errorf("%s: key type %T", name, k)
	}
}

func TestEnsureIssuesKubeadmCertificates(t *testing.T) {
	for _, keyType := range []string{KeyTypeECDSA, KeyTypeRSA} {
		t.Run(keyType, func(t *testing.T) {
			inv := testInventory()
			opt := Options{KeyType: keyType, Now: fixedNow()}
			now := opt.Now()
			_, dir := generated(t, inv, opt)

			cas := map[string]string{"ca.crt": "kubernetes", "etcd/ca.crt": "etcd-ca", "front-proxy-ca.crt": "front-proxy-ca"}
			for file, cn := range cas {
				c := readCert(t, filepath.Join(dir, file))
				if !c.IsCA || c.Subject.CommonName != cn || c.Subject.String() != c.Issuer.String() {
					t.Errorf("%s: IsCA=%v subject %q issuer %q, want self-signed CA CN=%s", file, c.IsCA, c.Subject, c.Issuer, cn)
				}
				if err := c.CheckSignatureFrom(c); err != nil {
					t.Errorf("%s: not self-signed: %v", file, err)
				}
				if c.KeyUsage&x509.KeyUsageCertSign == 0 {
					t.Errorf("%s: no CertSign key usage", file)
				}
				if !c.NotBefore.Equal(now.Add(-5*time.Minute)) || !c.NotAfter.Equal(now.Add(10*365*24*time.Hour)) {
					t.Errorf("%s: validity %s..%s, want 10 years from now-5m", file, c.NotBefore, c.NotAfter)
				}
				checkKeyType(t, file, c, keyType)
			}

			for _, w := range expectedLeaves() {
				c := readCert(t, filepath.Join(dir, w.file))
				ca := readCert(t, filepath.Join(dir, w.ca))
				roots := x509.NewCertPool()
				roots.AddCert(ca)
				if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: w.usages, CurrentTime: now}); err != nil {
					t.Errorf("%s: does not chain to %s for %v: %v", w.file, w.ca, w.usages, err)
				}
				if c.IsCA {
					t.Errorf("%s: is a CA", w.file)
				}
				if c.Subject.CommonName != w.cn || !slices.Equal(c.Subject.Organization, w.org) {
					t.Errorf("%s: subject CN=%q O=%q, want CN=%q O=%q", w.file, c.Subject.CommonName, c.Subject.Organization, w.cn, w.org)
				}
				if !slices.Equal(c.ExtKeyUsage, w.usages) {
					t.Errorf("%s: ext key usages %v, want %v", w.file, c.ExtKeyUsage, w.usages)
				}
				if c.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment {
					t.Errorf("%s: key usage %v, want digitalSignature|keyEncipherment", w.file, c.KeyUsage)
				}
				gotDNS := slices.Clone(c.DNSNames)
				wantDNS := slices.Clone(w.dns)
				sort.Strings(gotDNS)
				sort.Strings(wantDNS)
				if !slices.Equal(gotDNS, wantDNS) {
					t.Errorf("%s: DNS SANs %v, want %v", w.file, gotDNS, wantDNS)
				}
				var gotIPs []string
				for _, ip := range c.IPAddresses {
					gotIPs = append(gotIPs, ip.String())
				}
				wantIPs := slices.Clone(w.ips)
				sort.Strings(gotIPs)
				sort.Strings(wantIPs)
				if !slices.Equal(gotIPs, wantIPs) {
					t.Errorf("%s: IP SANs %v, want %v", w.file, gotIPs, wantIPs)
				}
				if !c.NotBefore.Equal(now.Add(-5*time.Minute)) || !c.NotAfter.Equal(now.Add(365*24*time.Hour)) {
					t.Errorf("%s: validity %s..%s, want 8760h from now-5m", w.file, c.NotBefore, c.NotAfter)
				}
				checkKeyType(t, w.file, c, keyType)
			}

			// Nothing more than the table: every leaf file is expected.
			want := map[string]bool{}
			for _, w := range expectedLeaves() {
				want[w.file] = true
			}
			for rel, st := range snapshot(t, dir) {
				if strings.HasSuffix(rel, ".crt") && !want[rel] && cas[rel] == "" {
					t.Errorf("unexpected certificate %s", rel)
				}
				_ = st
			}
			for _, w := range expectedLeaves() {
				runOpenSSL(t, dir, w, keyType)
			}
		})
	}
}

// runOpenSSL has openssl, an independent reader, verify the chain and print the text.
func runOpenSSL(t *testing.T, dir string, w wantCert, keyType string) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatalf("openssl is required: %v", err)
	}
	cert := filepath.Join(dir, w.file)
	out, err := exec.Command("openssl", "verify", "-CAfile", filepath.Join(dir, w.ca), cert).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": OK") {
		t.Errorf("openssl verify %s: %v: %s", w.file, err, out)
	}
	text, err := exec.Command("openssl", "x509", "-noout", "-text", "-in", cert).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl x509 %s: %v: %s", w.file, err, text)
	}
	s := string(text)
	wantSubject := "CN = " + w.cn
	if len(w.org) > 0 {
		wantSubject = "O = " + w.org[0] + ", CN = " + w.cn
	}
	if !strings.Contains(s, "Subject: "+wantSubject+"\n") {
		t.Errorf("openssl %s: no %q in\n%s", w.file, "Subject: "+wantSubject, s)
	}
	for _, d := range w.dns {
		if !strings.Contains(s, "DNS:"+d) {
			t.Errorf("openssl %s: SAN DNS:%s missing", w.file, d)
		}
	}
	for _, ip := range w.ips {
		want := "IP Address:" + strings.ToUpper(ip)
		if net.ParseIP(ip).To4() == nil {
			want = "IP Address:0:0:0:0:0:0:0:1" // openssl's spelling of ::1
		}
		if !strings.Contains(s, want) {
			t.Errorf("openssl %s: SAN %s missing", w.file, want)
		}
	}
	usage := "TLS Web Client Authentication"
	if slices.Contains(w.usages, x509.ExtKeyUsageServerAuth) {
		usage = "TLS Web Server Authentication"
	}
	if !strings.Contains(s, usage) || !strings.Contains(s, "CA:FALSE") {
		t.Errorf("openssl %s: want %q and CA:FALSE", w.file, usage)
	}
	wantKey := "Public-Key: (256 bit)"
	if keyType == KeyTypeRSA {
		wantKey = "Public-Key: (2048 bit)"
	}
	if !strings.Contains(s, wantKey) {
		t.Errorf("openssl %s: want %q", w.file, wantKey)
	}
}

func TestKeyEnciphermentFollowsTheVersionsKubeadm(t *testing.T) {
	const ds, ke, cs = x509.KeyUsageDigitalSignature, x509.KeyUsageKeyEncipherment, x509.KeyUsageCertSign
	for _, tc := range []struct {
		keyType, version string
		leaf             x509.KeyUsage // the CA has CertSign as well
	}{
		{KeyTypeRSA, "v1.37.2", ds | ke},
		{KeyTypeECDSA, "v1.37.2", ds | ke},
		{KeyTypeECDSA, "v1.35.4", ds | ke},
		// kubeadm v1.38 sets keyEncipherment on RSA keys only.
		{KeyTypeRSA, "v1.38.0-beta.0", ds | ke},
		{KeyTypeECDSA, "v1.38.0-beta.0", ds},
	} {
		t.Run(tc.keyType+" "+tc.version, func(t *testing.T) {
			inv := testInventory()
			inv.Cluster.KubernetesVersion = tc.version
			_, dir := generated(t, inv, Options{KeyType: tc.keyType, Now: fixedNow()})
			for file, want := range map[string]x509.KeyUsage{
				"ca.crt": tc.leaf | cs, "etcd/ca.crt": tc.leaf | cs, "front-proxy-ca.crt": tc.leaf | cs,
				"nodes/cp1/apiserver.crt": tc.leaf, "nodes/cp1/etcd/peer.crt": tc.leaf, "workstation/kubeconfig/admin.crt": tc.leaf,
			} {
				if got := readCert(t, filepath.Join(dir, file)).KeyUsage; got != want {
					t.Errorf("%s: key usage %b, want %b", file, got, want)
				}
			}
		})
	}
}
