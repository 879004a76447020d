package playbooks

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/kubeforge/kubeforge/inventory"
)

var update = flag.Bool("update", false, "rewrite the golden plans")

// TestPlansMatchGolden pins each playbook's plan for the example inventory:
// a change to a playbook shows up as a diff here.
func TestPlansMatchGolden(t *testing.T) {
	inv, err := inventory.Load("../examples/cluster.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for name, build := range map[string]func(*inventory.Inventory) Playbook{
		"up":        Up,
		"scale":     Scale,
		"reset":     Reset(inventory.SelectAll),
		"preflight": Preflight,
		"render":    Render,
		"remove":    Remove,
	} {
		t.Run(name, func(t *testing.T) {
			got := build(inv).Plan(inv)
			path := filepath.Join("testdata", name+".plan.golden")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./playbooks -update)", err)
			}
			if got != string(want) {
				t.Errorf("plan changed:\n--- got\n%s\n--- want\n%s", got, want)
			}
		})
	}
}
