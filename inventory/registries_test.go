package inventory

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCertKey writes a self-signed certificate and its key (PEM) to dir.
func testCertKey(t *testing.T, dir, name string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for file, b := range map[string]*pem.Block{name + ".crt": {Type: "CERTIFICATE", Bytes: der}, name + ".key": {Type: "EC PRIVATE KEY", Bytes: kder}} {
		if err := os.WriteFile(filepath.Join(dir, file), pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRegistryProblemsHaveTheirLine: each bad cluster.registries setting is
// an error at its own line, and no message shows the credentials.
func TestRegistryProblemsHaveTheirLine(t *testing.T) {
	dir := t.TempDir()
	testCertKey(t, dir, "ca")
	testCertKey(t, dir, "client")
	testCertKey(t, dir, "other")
	for name, data := range map[string]string{"creds": "puller:s3cret-pass\n", "badcreds": "s3cret-pass-without-user\n", "notpem.crt": "hello\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("KF_TEST_MIRROR_CREDS", "puller:s3cret-pass")
	t.Setenv("KF_TEST_MIRROR_BAD", "s3cret-pass")
	reg := func(mirror string) string {
		return "  registries:\n    registry.k8s.io:\n      mirrors:\n        - " + mirror + "\n"
	}
	cases := []struct{ name, cluster, want string }{
		{"url without scheme", reg("url: mirror.local:5000 " + marker), "invalid mirror url"},
		{"ftp url", reg("url: ftp://mirror.local " + marker), "invalid mirror url"},
		{"url with a query", reg("url: https://mirror.local/?a=b " + marker), "invalid mirror url"},
		{"credentials in the url", reg("url: https://puller:s3cret-pass@mirror.local " + marker), "mirror url has credentials in it"},
		{"plain http", reg("url: http://mirror.local:5000 " + marker), "is plain http"},
		{"no url", reg("insecure: true " + marker), "mirror url is missing"},
		{"missing ca file", reg("url: https://mirror.local\n          ca: nowhere.crt " + marker), "cannot read mirror ca"},
		{"ca that is no certificate", reg("url: https://mirror.local\n          ca: notpem.crt " + marker), "holds no PEM certificate"},
		{"certificate without key", reg("url: https://mirror.local\n          clientCertificate: client.crt " + marker), "needs its key"},
		{"key of another certificate", reg("url: https://mirror.local\n          clientCertificate: client.crt " + marker + "\n          clientKey: other.key"), "does not match"},
		{"unknown field", reg("url: https://mirror.local\n          cacert: ca.crt " + marker), `unknown field "cacert"`},
		{"env not set", reg("url: https://mirror.local\n          credentials:\n            env: KF_TEST_UNSET " + marker), "KF_TEST_UNSET (the mirror's credentials) is not set"},
		{"env and file", reg("url: https://mirror.local\n          credentials: {env: KF_TEST_MIRROR_CREDS, file: creds} " + marker), "both an environment variable and a file"},
		{"credentials without user", reg("url: https://mirror.local\n          credentials: " + marker + "\n            file: badcreds"), "not one line of user:password"},
		{"env credentials without user", reg("url: https://mirror.local\n          credentials: " + marker + "\n            env: KF_TEST_MIRROR_BAD"), "not one line of user:password"},
		{"upstream with a scheme", "  registries:\n    https://registry.k8s.io: " + marker + "\n      mirrors:\n        - url: https://m.local\n", "invalid registry"},
		{"upstream with a path", "  registries:\n    registry.k8s.io/foo: " + marker + "\n      mirrors:\n        - url: https://m.local\n", "is neither an IP address nor a DNS name"},
		{"no mirrors", "  registries:\n    docker.io: {} " + marker + "\n", "has no mirrors"},
		{"a mirror twice", reg("url: https://m.local\n        - url: https://m.local/other " + marker), "listed twice"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := head + "cluster:\n" + tc.cluster + oneCP
			errorAtMarker(t, dir, doc, tc.want)
			if _, err := parseIn(t, dir, doc); err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
	t.Run("good values load, files and credentials read once", func(t *testing.T) {
		inv, err := parseIn(t, dir, head+`cluster:
  registries:
    registry.k8s.io:
      mirrors:
        - url: https://mirror.local:5000
          ca: ca.crt
          clientCertificate: client.crt
          clientKey: client.key
          credentials: {env: KF_TEST_MIRROR_CREDS}
    docker.io:
      mirrors:
        - url: http://10.0.0.9:5000
          insecure: true
          credentials: {file: creds}
`+oneCP)
		if err != nil {
			t.Fatal(err)
		}
		if got := inv.RegistryNames(); strings.Join(got, " ") != "docker.io registry.k8s.io" {
			t.Errorf("RegistryNames() = %v", got)
		}
		m := inv.Cluster.Registries["registry.k8s.io"].Mirrors[0]
		if m.CAData == nil || m.CertData == nil || m.KeyData == nil || m.Auth != "puller:s3cret-pass" {
			t.Errorf("the mirror's files and credentials were not read: ca %d cert %d key %d auth set %t", len(m.CAData), len(m.CertData), len(m.KeyData), m.Auth != "")
		}
		if m.CA != filepath.Join(dir, "ca.crt") {
			t.Errorf("ca = %s; want it relative to the inventory's directory", m.CA)
		}
		if d := inv.Cluster.Registries["docker.io"].Mirrors[0]; d.Auth != "puller:s3cret-pass" {
			t.Errorf("the credentials file was not read (trailing newline dropped)")
		}
		if s := m.String(); strings.Contains(s, "s3cret") {
			t.Errorf("a mirror prints its password: %s", s)
		}
	})
}
