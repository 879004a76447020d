package inventory

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
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
		more  int    // errors after it, all on the same line (0 for most)
	}{
		{"a kubelet config key in the wrong case, which render refuses",
			head + "cluster:\n  kubelet:\n    config:\n      maxpods: 200 " + marker + "\n" + oneCP,
			"cluster.kubelet.config.maxpods", `unknown KubeletConfiguration field "maxpods"`, "case-sensitive: write maxPods", 0},
		{"a nested kubelet config key in the wrong case",
			head + "cluster:\n  kubelet:\n    config:\n      authentication:\n        webhook:\n          cacheTtl: 2m " + marker + "\n" + oneCP,
			"cluster.kubelet.config.authentication.webhook.cacheTtl", `unknown KubeletConfiguration field "authentication.webhook.cacheTtl"`, "write cacheTTL", 0},
		{"a kubelet config kind, which render refuses",
			head + "cluster:\n  kubelet:\n    config:\n      kind: Other " + marker + "\n" + oneCP,
			"cluster.kubelet.config.kind", `"kind" cannot be overridden`, "", 0},
		{"a nested kubelet config value of the wrong type",
			head + "cluster:\n  kubelet:\n    config:\n      authentication:\n        webhook:\n          cacheTTL: 5 " + marker + "\n" + oneCP,
			"cluster.kubelet.config.authentication.webhook.cacheTTL", "a number value where KubeletConfiguration wants string", "", 0},
		{"a relative etcd data dir",
			head + "cluster:\n  etcd:\n    extraArgs:\n      data-dir: etcd-data " + marker + "\n" + oneCP,
			"cluster.etcd.extraArgs.data-dir", `invalid etcd data-dir "etcd-data"`, "absolute", 0},
		{"an etcd data dir with a blank",
			head + "cluster:\n  etcd:\n    extraArgs:\n      data-dir: /var/lib/my etcd " + marker + "\n" + oneCP,
			"cluster.etcd.extraArgs.data-dir", `invalid etcd data-dir`, "without blanks", 0},
		{"an etcd data dir that is a system directory",
			head + "cluster:\n  etcd:\n    extraArgs:\n      data-dir: /var/lib " + marker + "\n" + oneCP,
			"cluster.etcd.extraArgs.data-dir", `invalid etcd data-dir "/var/lib"`, "reset removes it whole", 0},
		{"an etcd data dir inside the kubelet's",
			head + "cluster:\n  etcd:\n    extraArgs:\n      data-dir: /var/lib/kubelet/etcd " + marker + "\n" + oneCP,
			"cluster.etcd.extraArgs.data-dir", `invalid etcd data-dir`, "not in /var/lib/kubelet", 0},
		{"a host's port written as 0",
			head + "hosts:\n  - name: cp1\n    address: 10.0.0.1\n    port: 0 " + marker + "\n    roles: [control-plane]\n",
			"hosts[0].port", "invalid port 0: port must be 1-65535", "leave port out", 0},
		{"a host's port written as 0 in flow style",
			head + "hosts:\n  - {name: cp1, address: 10.0.0.1, port: 0, roles: [control-plane]} " + marker + "\n",
			"hosts[0].port", "port must be 1-65535", "", 0},
		{"a host's ssh port written as 0x0",
			head + "hosts:\n  - name: cp1\n    address: 10.0.0.1\n    roles: [control-plane]\n    ssh:\n      port: 0x0 " + marker + "\n",
			"hosts[0].ssh.port", "port must be 1-65535", "", 0},
		{"the ssh port written as 0",
			head + "ssh:\n  port: 0 " + marker + "\n" + oneCP,
			"ssh.port", "port must be 1-65535", "", 0},
		{"a bastion's port written as 0",
			head + "ssh:\n  bastion:\n    address: jump.example.com\n    port: 0 " + marker + "\n" + oneCP,
			"ssh.bastion.port", "port must be 1-65535", "", 0},
		{"a host's bastion port written as 0",
			head + "hosts:\n  - name: cp1\n    address: 10.0.0.1\n    roles: [control-plane]\n    ssh:\n      bastion: {address: jump, port: 0} " + marker + "\n",
			"hosts[0].ssh.bastion.port", "port must be 1-65535", "", 0},
		{"a top-level key written twice, and nothing about what is present",
			"apiVersion: kubeforge.io/v1alpha1\napiVersion: kubeforge.io/v1alpha1 " + marker + "\nkind: Cluster\n" + oneCP,
			"apiVersion", `mapping key "apiVersion" already defined at line 1`, "once", 0},
		{"hosts written twice",
			head + oneCP + "hosts: " + marker + "\n  - {name: w1, address: 10.0.0.2, roles: [worker]}\n",
			"hosts", `mapping key "hosts" already defined at line 3`, "", 0},
		{"a host's key written twice, and nothing about the host",
			head + "hosts:\n  - name: cp1\n    address: 10.0.0.1\n    roles: [control-plane]\n    address: 10.0.0.2 " + marker + "\n",
			"hosts[0].address", `mapping key "address" already defined at line 5`, "", 0},
		{"a label written twice",
			head + "hosts:\n  - name: cp1\n    address: 10.0.0.1\n    roles: [control-plane]\n    labels:\n      a: x\n      \"a\": y " + marker + "\n",
			"hosts[0].labels.a", `mapping key "a" already defined at line 8`, "", 0},
		{"a host repeated through an alias, at the alias",
			head + "hosts:\n  - &cp {name: cp1, address: 10.0.0.1, roles: [control-plane]}\n  - {name: cp2, address: 10.0.0.2, roles: [control-plane]}\n  - *cp " + marker + "\n",
			"hosts[2].name", `duplicate host name "cp1" (also used by the host at line 4)`, "unique", 1},
		{"an aliased block with a bad value, at the alias",
			head + "ssh: &s\n  user: root\nhosts:\n  - name: cp1\n    address: 10.0.0.1\n    roles: [control-plane]\n    ssh:\n      bastion: *s " + marker + "\n",
			"hosts[0].ssh.bastion", "bastion has no address", "", 0},
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
			if len(errs) != 1+tc.more {
				t.Fatalf("got %d errors, want %d:\n%v", len(errs), 1+tc.more, err)
			}
			for _, p := range errs[1:] {
				if p.Line != markedLine(t, tc.doc) {
					t.Errorf("problem %q, want it on line %d", p, markedLine(t, tc.doc))
				}
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

// An unknown field's hint names the field the writer meant: a synonym other
// tools use before a near spelling, which can be another field.
func TestUnknownFieldHintNamesTheMeantField(t *testing.T) {
	host := "  - name: cp1\n    address: 10.0.0.1\n    roles: [control-plane]\n"
	cases := []struct {
		name, doc, field, hint string
	}{
		{"bastion host is address, not port", head + "ssh:\n  bastion:\n    address: j\n    host: jump.example.com " + marker + "\n" + oneCP, "ssh.bastion.host", `did you mean "address"?`},
		{"hostname is address", head + "hosts:\n" + host + "    hostname: cp1.example.com " + marker + "\n", "hosts[0].hostname", `did you mean "address"?`},
		{"ip is address", head + "hosts:\n" + host + "    ip: 10.0.0.1 " + marker + "\n", "hosts[0].ip", `did you mean "address"?`},
		{"key is identityFiles", head + "ssh:\n  key: ~/.ssh/id_ed25519 " + marker + "\n" + oneCP, "ssh.key", `did you mean "identityFiles"?`},
		{"identityFile is identityFiles", head + "ssh:\n  identityFile: ~/.ssh/id_ed25519 " + marker + "\n" + oneCP, "ssh.identityFile", `did you mean "identityFiles"?`},
		{"IdentityFile as in ssh_config", head + "ssh:\n  IdentityFile: ~/.ssh/id_ed25519 " + marker + "\n" + oneCP, "ssh.IdentityFile", `did you mean "identityFiles"?`},
		{"a swap of two letters", head + "ssh:\n  prot: 22 " + marker + "\n" + oneCP, "ssh.prot", `did you mean "port"?`},
		{"username is user", head + "ssh:\n  username: debian " + marker + "\n" + oneCP, "ssh.username", `did you mean "user"?`},
		{"a typo", head + "cluster:\n  podSubnett: 10.0.0.0/16 " + marker + "\n" + oneCP, "cluster.podSubnett", `did you mean "podSubnet"?`},
		{"host in ssh is a host's address", head + "ssh:\n  host: x " + marker + "\n" + oneCP, "ssh.host", `did you mean "address"? it belongs under each item of hosts:`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc), "inventory.yaml")
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Parse = %v, want a *ValidationError", err)
			}
			for _, p := range ve.Problems {
				if strings.HasPrefix(p.Message, "unknown field") {
					if p.Field != tc.field || p.Line != markedLine(t, tc.doc) || !strings.Contains(p.Hint, tc.hint) {
						t.Errorf("problem %q; want field %s at line %d with a hint containing %q", p, tc.field, markedLine(t, tc.doc), tc.hint)
					}
					return
				}
			}
			t.Errorf("no unknown field problem in:\n%v", err)
		})
	}
}

// A file over MaxFileSize is refused before any parse; one a little smaller
// is read.
func TestAFileOverTheSizeLimitIsRefused(t *testing.T) {
	dir := t.TempDir()
	comment := []byte("# padding\n")
	over := append(bytes.Repeat(comment, MaxFileSize/len(comment)+1), head+oneCP...)
	_, err := parseIn(t, dir, string(over))
	var ve *ValidationError
	if !errors.As(err, &ve) || len(ve.Problems) != 1 || !strings.Contains(ve.Problems[0].Message, "larger than 16 MiB") {
		t.Errorf("Load(%d bytes) = %v; want one problem: larger than 16 MiB", len(over), err)
	}
	under := append(bytes.Repeat(comment, (MaxFileSize-1000)/len(comment)), head+oneCP...)
	if _, err := parseIn(t, dir, string(under)); err != nil {
		t.Errorf("Load(%d bytes) = %v; want it loaded", len(under), err)
	}
}

// An identity file that is a FIFO is refused, not opened (which would wait
// for a writer forever).
func TestAFIFOIdentityFileIsRefusedWithoutOpening(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	doc := head + "ssh:\n  identityFiles: [fifo] " + marker + "\n" + oneCP
	done := make(chan error, 1)
	go func() { _, err := parseIn(t, dir, doc); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "is not a regular file") {
			t.Errorf("Load = %v; want the identity file refused as not a regular file", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Load is still waiting on the FIFO after 10 s")
	}
}

// Aliases that expand a short file into a huge one ("billion laughs") are
// refused quickly, with a message that says so.
func TestAliasesThatExpandTooMuchAreRefused(t *testing.T) {
	var b strings.Builder
	b.WriteString(head + "cluster:\n  kubelet:\n    config:\n      x0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n")
	for i := 1; i < 9; i++ {
		fmt.Fprintf(&b, "      x%d: &a%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*a%d, ", i-1), 10), ", "))
	}
	b.WriteString(oneCP)
	_, err := Parse([]byte(b.String()), "laughs.yaml")
	var ve *ValidationError
	if !errors.As(err, &ve) || len(ve.Problems) != 1 || !strings.Contains(ve.Problems[0].Message, "aliases expand to too much") {
		t.Errorf("Parse = %v; want one problem: the aliases expand to too much", err)
	}
}
