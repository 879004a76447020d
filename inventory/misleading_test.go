package inventory

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// Inventories that used to pass validation, or drew false or misplaced
// messages: each must fail with exactly one error, on the marked line, naming
// the field.
func TestMisleadingInventoriesGetExactlyTheirProblem(t *testing.T) {
	cases := []struct {
		name  string
		doc   string
		field string // the problem's field
		want  string // a substring of its message
		hint  string // a substring of its hint
	}{
		{"a kubelet config key in the wrong case, which render refuses",
			head + "cluster:\n  kubelet:\n    config:\n      maxpods: 200 " + marker + "\n" + oneCP,
			"cluster.kubelet.config.maxpods", `unknown KubeletConfiguration field "maxpods"`, "case-sensitive: write maxPods"},
		{"a nested kubelet config key in the wrong case",
			head + "cluster:\n  kubelet:\n    config:\n      authentication:\n        webhook:\n          cacheTtl: 2m " + marker + "\n" + oneCP,
			"cluster.kubelet.config.authentication.webhook.cacheTtl", `unknown KubeletConfiguration field "authentication.webhook.cacheTtl"`, "write cacheTTL"},
		{"a kubelet config kind, which render refuses",
			head + "cluster:\n  kubelet:\n    config:\n      kind: Other " + marker + "\n" + oneCP,
			"cluster.kubelet.config.kind", `"kind" cannot be overridden`, ""},
		{"a nested kubelet config value of the wrong type",
			head + "cluster:\n  kubelet:\n    config:\n      authentication:\n        webhook:\n          cacheTTL: 5 " + marker + "\n" + oneCP,
			"cluster.kubelet.config.authentication.webhook.cacheTTL", "a number value where KubeletConfiguration wants string", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := parseIn(t, dir, tc.doc)
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Load() = %v, want a *ValidationError", err)
			}
			errs := ve.Errors()
			if len(errs) != 1 {
				t.Fatalf("got %d errors, want 1:\n%v", len(errs), err)
			}
			p := errs[0]
			if p.Line != markedLine(t, tc.doc) || p.Field != tc.field || !strings.Contains(p.Message, tc.want) || !strings.Contains(p.Hint, tc.hint) {
				t.Errorf("problem %q\nwant line %d, field %s, message with %q, hint with %q", p, markedLine(t, tc.doc), tc.field, tc.want, tc.hint)
			}
			if p.File != filepath.Join(dir, "inventory.yaml") {
				t.Errorf("problem file = %q", p.File)
			}
		})
	}
}
