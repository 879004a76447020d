package inventory

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds Parse arbitrary files: it must not panic or hang, and it
// must either return an inventory that validates again or a
// *ValidationError with at least one error, each problem in the file and
// on one of its lines. The corpus: testdata/fuzz/FuzzLoad and the seeds below.
// A long run: make fuzz-inventory.
func FuzzLoad(f *testing.F) {
	example, err := os.ReadFile(filepath.Join("..", "examples", "cluster.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	for _, seed := range []string{
		head + oneCP,
		head + "cluster:\n  kubelet:\n    config:\n      maxPods: 200\n      evictionHard: {memory.available: 100Mi}\n" + oneCP,
		head + "ssh: &s\n  user: root\n  port: 2222\n  bastion: {address: jump, port: 22}\nhosts:\n  - {name: cp1, address: 10.0.0.1, roles: [control-plane], ssh: *s}\n",
		head + "hosts:\n  - &cp {name: cp1, address: 10.0.0.1, roles: [control-plane]}\n  - *cp\n",
		head + "cluster:\n  name: a\n  name: b\n" + oneCP,
		head + "hosts:\n  - name: a\n    address: 10.0.0.1\n   roles: [worker]\n",
		head + "cluster:\n  certSANs: [a, b\n" + oneCP,
		head + "hosts:\n  - {name: cp1, address: 10.0.0.1, port: 0, roles: [control-plane]}\n",
		"---",
		"%YAML 1.1\n---",
		"a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nd: [*c, *c]\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		inv, err := Parse(data, "fuzz.yaml")
		if err == nil {
			if inv == nil {
				t.Fatal("Parse returned neither an inventory nor an error")
			}
			if err := inv.Validate(); err != nil {
				t.Fatalf("a loaded inventory does not validate again: %v", err)
			}
			return
		}
		if inv != nil {
			t.Fatalf("Parse returned an inventory and the error %v", err)
		}
		var ve *ValidationError
		if !errors.As(err, &ve) {
			t.Fatalf("Parse error %T %v, want a *ValidationError", err, err)
		}
		if len(ve.Errors()) == 0 {
			t.Fatalf("a ValidationError without errors: %v", err)
		}
		lines := 1 // at most: YAML breaks lines at \r as well, and at NEL, LS and PS
		for _, brk := range []string{"\n", "\r", "\u0085", "\u2028", "\u2029"} {
			lines += bytes.Count(data, []byte(brk))
		}
		for _, p := range ve.Problems {
			if p.Message == "" || p.Line < 0 || p.Line > lines || filepath.Base(p.File) != "fuzz.yaml" {
				t.Errorf("problem %q: want a message, a line in 0..%d and the file fuzz.yaml", p, lines)
			}
		}
	})
}
