package pki

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	certutil "k8s.io/client-go/util/cert"

	"github.com/kubeforge/kubeforge/inventory"
)

var (
	cpRole     = []inventory.Role{inventory.RoleControlPlane}
	workerRole = []inventory.Role{inventory.RoleWorker}
)

// testInventory is 3 control planes and 2 workers.
func testInventory() *inventory.Inventory {
	return &inventory.Inventory{
		APIVersion: inventory.APIVersion,
		Kind:       inventory.Kind,
		Cluster: inventory.Cluster{
			Name:                 "test",
			ControlPlaneEndpoint: "k8s.example.com:6443",
			ServiceSubnet:        "10.96.0.0/12",
			DNSDomain:            "cluster.local",
			CertSANs:             []string{"api.example.org", "203.0.113.7"},
		},
		Hosts: []*inventory.Host{
			{Name: "cp1", Address: "192.0.2.11", InternalAddress: "10.0.0.11", Roles: cpRole},
			{Name: "cp2", Address: "10.0.0.12", Roles: cpRole},
			{Name: "cp3", Address: "10.0.0.13", Roles: cpRole},
			{Name: "w1", Address: "10.0.0.21", Roles: workerRole},
			{Name: "w2", Address: "10.0.0.22", Roles: workerRole},
		},
	}
}

// fixedNow is a clock at the start of the test (openssl checks against the real clock).
func fixedNow() func() time.Time {
	now := time.Now().UTC().Truncate(time.Second)
	return func() time.Time { return now }
}

func ecdsaOpts() Options { return Options{KeyType: KeyTypeECDSA, Now: fixedNow()} }

// generated runs Ensure on an empty bundle and saves it to a new directory.
func generated(t *testing.T, inv *inventory.Inventory, opt Options) (*Bundle, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	b, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Ensure(inv, inv.FirstControlPlane(), b, opt); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if err := b.Save(dir); err != nil {
		t.Fatalf("Save: %v", err)
	}
	return b, dir
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	certs, err := certutil.CertsFromFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return certs[0]
}

// snapshot maps every file under dir to its content and modification time.
type fileState struct {
	data  string
	mtime time.Time
	mode  os.FileMode
}

func snapshot(t *testing.T, dir string) map[string]fileState {
	t.Helper()
	out := map[string]fileState{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if fi.IsDir() {
			out[rel+"/"] = fileState{mode: fi.Mode().Perm()}
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out[rel] = fileState{data: string(data), mtime: fi.ModTime(), mode: fi.Mode().Perm()}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
