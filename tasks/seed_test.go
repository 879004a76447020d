package tasks

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/kubeforge/kubeforge/internal/nodefile"
	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/manifests"
	"github.com/kubeforge/kubeforge/pki"
)

// seedInventory is two control planes and a worker with no
// controlPlaneEndpoint: the file lists cp1 first.
const seedInventory = `apiVersion: kubeforge.io/v1alpha1
kind: Cluster
cluster:
  name: c
  kubernetesVersion: v1.37.2
hosts:
  - {name: cp1, address: 10.0.0.1, roles: [control-plane]}
  - {name: cp2, address: 10.0.0.2, roles: [control-plane]}
  - {name: w1, address: 10.0.0.3, roles: [worker]}
`

func TestObservedSeedIsPassedOnAndTheInventoryStaysAsLoaded(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(path, []byte(seedInventory), 0o600); err != nil {
		t.Fatal(err)
	}
	load := func() *inventory.Inventory {
		inv, err := inventory.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		return inv
	}
	inv, want := load(), load()
	if !reflect.DeepEqual(inv, want) {
		t.Fatal("two loads of one file differ: the comparison below would prove nothing")
	}

	env := NewEnv(inv, filepath.Join(dir, "state"), slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	if err := os.MkdirAll(env.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cp2URL := pki.LocalServerURL(inv.Host("cp2"))
	for _, h := range env.Hosts(inv.Hosts) {
		// The kubelets use cp2 (an earlier run initialised the cluster there), but no etcd
		// member answers and none holds data: a new cluster, on the seed the hosts name.
		h.Facts = &Facts{CgroupV2: true, Listening: map[int]bool{}, KubeletServer: cp2URL}
	}
	ctx := context.Background()
	for _, step := range []LocalFunc{ChooseSeed, EnsureCerts, DecideRoles} {
		if err := step(ctx, env); err != nil {
			t.Fatal(err)
		}
	}
	if got := env.Seed().Name; got != "cp2" {
		t.Fatalf("seed = %s; want cp2, where the kubelets point (the file's first is cp1)", got)
	}
	if env.Plan.Seed != "cp2" || env.Plan.Init != "cp2" {
		t.Errorf("plan seed %q, init %q; want cp2 for both", env.Plan.Seed, env.Plan.Init)
	}
	if got := serverIn(t, env.AdminKubeconfigPath()); got != cp2URL {
		t.Errorf("the workstation's admin.conf names %s; want the seed's %s", got, cp2URL)
	}
	if got := env.serverURL(); got != cp2URL {
		t.Errorf("API server URL (cluster-info, the run's clients) = %s; want %s", got, cp2URL)
	}
	for _, h := range env.Hosts(inv.Hosts) {
		files, err := env.NodeFiles(h)
		if err != nil {
			t.Fatal(err)
		}
		super := slices.ContainsFunc(files, func(f nodefile.File) bool { return f.Path == "/etc/kubernetes/super-admin.conf" })
		if want := h.Name == "cp2"; super != want {
			t.Errorf("%s: super-admin.conf %v; want %v (on the seed only)", h.Name, super, want)
		}
		ca := slices.ContainsFunc(files, func(f nodefile.File) bool { return f.Path == "/etc/kubernetes/pki/ca.key" })
		if ca != h.IsControlPlane() {
			t.Errorf("%s: ca.key %v; want it on the control planes only", h.Name, ca)
		}
	}
	if _, err := manifests.ClusterObjects(env.Inv, env.clusterParams()); err != nil {
		t.Fatal(err)
	}

	if !reflect.DeepEqual(inv, want) {
		t.Errorf("observing and planning changed the inventory:\n got %+v\nwant %+v", inv, want)
	}
	if got := inv.FirstControlPlane().Name; got != "cp1" {
		t.Errorf("FirstControlPlane() = %s after the run; want cp1, the file's first", got)
	}
}
