package manifests

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kubeforge/kubeforge/internal/nodefile"
	"github.com/kubeforge/kubeforge/inventory"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// exampleInventory is a 3 control-plane + 2 worker cluster built in code.
func exampleInventory() *inventory.Inventory {
	return &inventory.Inventory{
		APIVersion: inventory.APIVersion,
		Kind:       inventory.Kind,
		Cluster: inventory.Cluster{
			Name:                 "demo",
			KubernetesVersion:    "v1.37.2",
			ControlPlaneEndpoint: "k8s.example.test:6443",
			PodSubnet:            "10.244.0.0/16",
			ServiceSubnet:        "10.96.0.0/12",
			DNSDomain:            "cluster.local",
			CertSANs:             []string{"k8s.example.test", "192.0.2.10"},
			CertificateValidity:  inventory.Duration{Duration: 8760 * time.Hour},
			Kubelet: inventory.Kubelet{
				CgroupDriver: "systemd",
				ResolvConf:   "/etc/kubeforge/resolv.conf",
			},
		},
		Hosts: []*inventory.Host{
			{Name: "cp1", Address: "192.0.2.11", InternalAddress: "10.0.0.11", Roles: []inventory.Role{inventory.RoleControlPlane}},
			{Name: "cp2", Address: "10.0.0.12", Roles: []inventory.Role{inventory.RoleControlPlane}},
			{Name: "cp3", Address: "10.0.0.13", Roles: []inventory.Role{inventory.RoleControlPlane}},
			{Name: "w1", Address: "10.0.0.21", Roles: []inventory.Role{inventory.RoleWorker}},
			{Name: "w2", Address: "10.0.0.22", Roles: []inventory.Role{inventory.RoleWorker},
				Taints: []inventory.Taint{{Key: "dedicated", Value: "gpu", Effect: "NoSchedule"}}},
		},
	}
}

// golden compares got with testdata/name.golden, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read golden file (run go test ./manifests -update to create it): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from %s (run with -update if the change is intended):\n%s", name, p, firstDiff(string(want), string(got)))
	}
}

// firstDiff shows the first differing line of two texts.
func firstDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return "line " + strconv.Itoa(i+1) + ":\n  want: " + wl + "\n  got:  " + gl
		}
	}
	return "(no line differs)"
}

// joinFiles concatenates files with a header naming each path and mode.
func joinFiles(files []nodefile.File) []byte {
	var b bytes.Buffer
	for _, f := range files {
		b.WriteString("# " + f.Path + " " + f.Mode.String() + "\n")
		b.Write(f.Data)
		if len(f.Data) > 0 && f.Data[len(f.Data)-1] != '\n' {
			b.WriteString("\n")
		}
	}
	return b.Bytes()
}
