package inventory

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The marker "#<" at the end of a line marks the line a problem must be reported at.
const marker = "#<"

// markedLine returns the 1-based line of the marker in doc, or 0.
func markedLine(t *testing.T, doc string) int {
	t.Helper()
	for i, l := range strings.Split(doc, "\n") {
		if strings.Contains(l, marker) {
			return i + 1
		}
	}
	return 0
}

const head = "apiVersion: kubeforge.io/v1alpha1\nkind: Cluster\n"

const oneCP = "hosts:\n  - {name: cp1, address: 10.0.0.1, roles: [control-plane]}\n"

// writeFiles creates a directory with an identity file, a manifest, a plain
// file and a directory, and returns its path.
func writeFiles(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, mode := range map[string]os.FileMode{"id_test": 0o600, "cni.yaml": 0o644, "plain.txt": 0o644} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "somedir"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// errorAtMarker loads doc from dir and expects an error whose message
// contains want at the line marked with marker; it returns that problem.
func errorAtMarker(t *testing.T, dir, doc, want string) *Problem {
	t.Helper()
	inv, err := parseIn(t, dir, doc)
	var ve *ValidationError
	if !errors.As(err, &ve) || inv != nil {
		t.Fatalf("Load() = %v, %v; want a *ValidationError", inv, err)
	}
	line := markedLine(t, doc)
	for i, p := range ve.Problems {
		if !p.Warning && strings.Contains(p.Message, want) {
			if p.Line != line {
				t.Errorf("problem %q at line %d, want %d", p.Message, p.Line, line)
			}
			return &ve.Problems[i]
		}
	}
	t.Errorf("no error containing %q; got:\n%v", want, err)
	return nil
}

func parseIn(t *testing.T, dir, doc string) (*Inventory, error) {
	t.Helper()
	path := filepath.Join(dir, "inventory.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return Load(path)
}

func TestLoadReportsEachProblemWithItsLine(t *testing.T) {
	t.Setenv("KF_TEST_PASSWORD", "x")
	cases := []struct {
		name string
		doc  string
		want string // a substring of the message of the problem on the marked line
		hint string // a substring of its hint ("" to skip)
	}{
		{"yaml syntax error at the faulty line", head + "hosts:\n  - name: a\n    address: 10.0.0.1\n   roles: [worker] " + marker + "\n", "YAML syntax error", "indentation"},
		{"tab indentation", head + "cluster:\n\tname: x " + marker + "\n", "YAML syntax error", ""},
		{"empty file", "", "empty", "examples/cluster.yaml"},
		{"only comments", "# nothing here\n", "empty", ""},
		{"not a mapping", "- a " + marker + "\n- b\n", "must be a YAML mapping", ""},
		{"two documents", head + oneCP + "--- " + marker + "\n" + head, "more than one YAML document", ""},
		{"wrong apiVersion", "apiVersion: v1 " + marker + "\nkind: Cluster\n" + oneCP, `unsupported apiVersion "v1"`, "kubeforge.io/v1alpha1"},
		{"missing apiVersion points at the document", "kind: Cluster " + marker + "\n" + oneCP, "apiVersion is missing", ""},
		{"wrong kind", "apiVersion: kubeforge.io/v1alpha1\nkind: Deployment " + marker + "\n" + oneCP, `unsupported kind "Deployment"`, "kind: Cluster"},
		{"unknown field with suggestion", head + "cluster:\n  podSubnett: 10.0.0.0/16 " + marker + "\n" + oneCP, `unknown field "podSubnett"`, `did you mean "podSubnet"`},
		{"unknown field lists valid fields", head + "cluster:\n  cni:\n    flavour: x " + marker + "\n" + oneCP, `unknown field "flavour"`, "valid fields here: plugin, manifest"},
		{"password in clear is rejected", head + "ssh:\n  password: hunter2 " + marker + "\n" + oneCP, `unknown field "password"`, "passwordEnv"},
		{"password in clear on a host", head + "hosts:\n  - name: cp1\n    address: 10.0.0.1\n    roles: [control-plane]\n    ssh:\n      password: x " + marker + "\n", `unknown field "password"`, "passwordEnv"},
		{"duplicate yaml key", head + "cluster:\n  name: a\n  name: b " + marker + "\n" + oneCP, `mapping key "name" already defined at line 4`, ""},
		{"value of the wrong type", head + "ssh:\n  port: twenty-two " + marker + "\n" + oneCP, `"twenty-two" is not a whole number`, ""},
		{"malformed duration", head + "ssh:\n  connectTimeout: 10 parsecs " + marker + "\n" + oneCP, `invalid duration "10 parsecs"`, ""},
		{"duplicate host names", head + "hosts:\n  - {name: cp1, address: 10.0.0.1, roles: [control-plane]}\n  - {name: cp1, address: 10.0.0.2, roles: [worker]} " + marker + "\n", `duplicate host name "cp1" (also used by the host at line 4)`, "unique"},
		{"duplicate addresses", head + "hosts:\n  - {name: cp1, address: 10.0.0.1, roles: [control-plane]}\n  - {name: w1, address: 10.0.0.1, roles: [worker]} " + marker + "\n", `duplicate address 10.0.0.1:22 (also used by host "cp1" at line 4)`, ""},
		{"same address different port is fine but node IPs clash", head + "hosts:\n  - {name: cp1, address: 127.0.0.1, port: 2201, roles: [control-plane]}\n  - {name: w1, address: 127.0.0.1, port: 2202, roles: [worker]} " + marker + "\n", `node IP 127.0.0.1 is also the node IP of host "cp1"`, "internalAddress"},
		{"no control plane", head + "hosts: " + marker + "\n  - {name: w1, address: 10.0.0.1, roles: [worker]}\n", "no control plane", "control-plane"},
		{"no hosts", head + "hosts: [] " + marker + "\n", "no hosts", ""},
		{"malformed pod subnet", head + "cluster:\n  podSubnet: 10.244.0.0/33 " + marker + "\n" + oneCP, `malformed pod subnet "10.244.0.0/33"`, "10.244.0.0/16"},
		{"malformed service subnet", head + "cluster:\n  serviceSubnet: banana " + marker + "\n" + oneCP, `malformed service subnet "banana"`, ""},
		{"overlapping subnets", head + "cluster:\n  podSubnet: 10.96.0.0/16\n  serviceSubnet: 10.96.0.0/12 " + marker + "\n" + oneCP, "service subnet 10.96.0.0/12 overlaps pod subnet 10.96.0.0/16", "disjoint"},
		{"service subnet too small", head + "cluster:\n  serviceSubnet: 10.96.0.0/29 " + marker + "\n" + oneCP, "service subnet 10.96.0.0/29 is too small: it has 8 addresses, the minimum is 10", ""},
		{"service subnet too large", head + "cluster:\n  serviceSubnet: 10.96.0.0/11 " + marker + "\n" + oneCP, "mask must be >= 12", "/12"},
		{"ipv6 service subnet too large", head + "cluster:\n  serviceSubnet: fd00::/100 " + marker + "\n" + oneCP, "mask must be >= 108", ""},
		{"dual stack needs two families", head + "cluster:\n  podSubnet: 10.244.0.0/16,10.245.0.0/16 " + marker + "\n" + oneCP, "two of different IP families", ""},
		{"pod subnet smaller than a node range", head + "cluster:\n  podSubnet: 10.244.0.0/25 " + marker + "\n" + oneCP, "smaller than one node's pod range (/24)", ""},
		{"invalid address", head + "hosts:\n  - name: cp1\n    address: not_a_host! " + marker + "\n    roles: [control-plane]\n", `invalid address "not_a_host!"`, ""},
		{"internal address must be an IP", head + "hosts:\n  - name: cp1\n    address: node1.example.com\n    internalAddress: node1.internal " + marker + "\n    roles: [control-plane]\n", `invalid internalAddress "node1.internal"`, ""},
		{"node name not RFC 1123", head + "hosts:\n  - name: Control_Plane1 " + marker + "\n    address: 10.0.0.1\n    roles: [control-plane]\n", `host name "Control_Plane1" is not a valid node name`, "RFC 1123"},
		{"host without name", head + "hosts:\n  - address: 10.0.0.1 " + marker + "\n    roles: [control-plane]\n", "host #1 has no name", ""},
		{"host without roles", head + "hosts:\n  - {name: cp1, address: 10.0.0.1, roles: [control-plane]}\n  - {name: w1, address: 10.0.0.2} " + marker + "\n", "host w1 has no roles", ""},
		{"unsupported kubernetes version", head + "cluster:\n  kubernetesVersion: v1.34.4 " + marker + "\n" + oneCP, `unsupported Kubernetes version "v1.34.4"`, "v1.35.x, v1.36.x and v1.37.x"},
		{"unknown role", head + "hosts:\n  - name: cp1\n    address: 10.0.0.1\n    roles:\n      - control-plane\n      - etcd " + marker + "\n", `unknown role "etcd"`, "control-plane or worker"},
		{"unreadable identity file", head + "ssh:\n  identityFiles:\n    - id_test\n    - missing_key " + marker + "\n" + oneCP, "cannot read identity file: stat ", "relative to the inventory"},
		{"unreadable per-host identity file", head + "hosts:\n  - name: cp1\n    address: 10.0.0.1\n    roles: [control-plane]\n    ssh:\n      identityFiles: [nope] " + marker + "\n", "no such file", ""},
		{"dns address without a node ip", head + "hosts:\n  - name: cp1\n    address: cp1.example.com " + marker + "\n    roles: [control-plane]\n", `address "cp1.example.com" is a DNS name`, "internalAddress"},
		{"unknown kubelet config field", head + "cluster:\n  kubelet:\n    config:\n      maxPodz: 50 " + marker + "\n" + oneCP, `unknown KubeletConfiguration field "maxPodz"`, "did you mean maxPods?"},
		{"kubelet config value of the wrong type", head + "cluster:\n  kubelet:\n    config:\n      maxPods: many " + marker + "\n" + oneCP, "kubelet.config.maxPods: a string value where KubeletConfiguration wants int32", ""},
		{"extraArgs name with dashes", head + "cluster:\n  apiServer:\n    extraArgs:\n      --audit-log-maxage: \"30\" " + marker + "\n" + oneCP, `invalid extraArgs name "--audit-log-maxage"`, "without dashes: audit-log-maxage"},
		{"extraArgs name with a space", head + "cluster:\n  etcd:\n    extraArgs:\n      \"quota backend\": x " + marker + "\n" + oneCP, `invalid extraArgs name "quota backend"`, ""},
		{"a number too large for a port", head + "ssh:\n  port: 99999999999999999999 " + marker + "\n" + oneCP, "99999999999999999999 is not a whole number in range", ""},
		{"port 0 written out", head + "ssh:\n  port: 0 " + marker + "\n" + oneCP, "invalid port 0", "between 1 and 65535"},
		{"roles not a list, and no second message", head + "hosts:\n  - {name: cp1, address: 10.0.0.1, roles: control-plane} " + marker + "\n", `"control-plane" is not a list of roles`, "roles: [control-plane]"},
		{"invalid utf-8 has its line", head + "cluster:\n  name: \"a\xffb\" " + marker + "\n" + oneCP, "invalid UTF-8 (byte 0xff) at column 11", "UTF-8"},
		{"a control character has its line", head + "cluster:\n  name: \"a\x01b\" " + marker + "\n" + oneCP, `control character '\x01' at column 11`, ""},
		{"an alias to no anchor", head + "cluster:\n  name: *nope " + marker + "\n" + oneCP, "alias *nope refers to no anchor", "&nope"},
		{"an alias brings a mapping where a string goes: the alias's line", head + "ssh: &s\n  user: root\ncluster:\n  name: *s " + marker + "\n" + oneCP, "a mapping is not a string", ""},
		{"a look-alike letter is shown escaped", head + "cluster:\n  name: pr\u043ed " + marker + "\n" + oneCP, `invalid cluster name "pr\u043ed"`, ""},
		{"a field at the wrong level", head + "podSubnet: 10.0.0.0/16 " + marker + "\n" + oneCP, `unknown field "podSubnet"`, "podSubnet belongs under cluster:"},
		{"a field's short name", head + "cluster:\n  version: v1.37.2 " + marker + "\n" + oneCP, `unknown field "version"`, `did you mean "kubernetesVersion"?`},
		{"a short name of several fields", head + "cluster:\n  subnet: 10.0.0.0/16 " + marker + "\n" + oneCP, `unknown field "subnet"`, "did you mean one of podSubnet, serviceSubnet?"},
		{"a feature gate that is not a bool", head + "cluster:\n  featureGates: {ImageVolume: yes-please} " + marker + "\n" + oneCP, `"yes-please" is not true or false`, "true or false"},
		{"certSANs not a list", head + "cluster:\n  certSANs: api.example.com " + marker + "\n" + oneCP, `"api.example.com" is not a list`, "YAML list"},
		{"identityFiles not a list", head + "ssh:\n  identityFiles: ~/.ssh/id_ed25519 " + marker + "\n" + oneCP, "is not a list", ""},
		{"a negative validity", head + "cluster:\n  certificateValidity: -5h " + marker + "\n" + oneCP, "must be positive", "8760h"},
		{"a validity in years", head + "cluster:\n  certificateValidity: 1y " + marker + "\n" + oneCP, `invalid duration "1y"`, ""},
		{"a host port out of range", head + "hosts:\n  - {name: cp1, address: 10.0.0.1, roles: [control-plane], port: 70000} " + marker + "\n", "invalid port 70000", ""},
		{"the only control plane marked remove", head + "hosts:\n  - {name: cp1, address: 10.0.0.1, roles: [control-plane], remove: true} " + marker + "\n", "every control plane is marked remove: true", "add the new one before removing the last"},
		{"an endpoint with a scheme", head + "cluster:\n  controlPlaneEndpoint: https://api.example.com:6443 " + marker + "\n" + oneCP, "must not have a scheme", "host[:port]"},
		{"an upper-case DNS domain", head + "cluster:\n  dnsDomain: Cluster.Local " + marker + "\n" + oneCP, `invalid dnsDomain "Cluster.Local"`, ""},
		{"an internal address that is no IP", head + "hosts:\n  - {name: cp1, address: 10.0.0.1, internalAddress: 10.0.0.300, roles: [control-plane]} " + marker + "\n", `invalid internalAddress "10.0.0.300"`, ""},
		{"an address with a trailing space", head + "hosts:\n  - {name: cp1, address: \"10.0.0.1 \", roles: [control-plane]} " + marker + "\n", `invalid address "10.0.0.1 "`, ""},
		{"a bastion without address", head + "ssh:\n  bastion: {address: \"\", user: root} " + marker + "\n" + oneCP, "bastion has no address", "jump host"},
		{"an unknown CNI plugin", head + "cluster:\n  cni: {plugin: calico} " + marker + "\n" + oneCP, `unsupported cni.plugin "calico"`, "manifest"},
		{"hosts as a mapping", head + "hosts:\n  cp1: {address: 10.0.0.1} " + marker + "\n", "a mapping is not a list", "- name:"},
		{"a label key with a space", head + "hosts:\n  - {name: cp1, address: 10.0.0.1, roles: [control-plane], labels: {\"bad key!\": x}} " + marker + "\n", `invalid label key "bad key!"`, ""},
		{"bad taint effect", head + "hosts:\n  - name: cp1\n    address: 10.0.0.1\n    roles: [control-plane]\n    taints:\n      - key: a\n        effect: NoWay " + marker + "\n", `invalid taint effect "NoWay"`, "NoSchedule"},
		{"bad taint key", head + "hosts:\n  - name: cp1\n    address: 10.0.0.1\n    roles: [control-plane]\n    taints:\n      - key: -bad- " + marker + "\n        effect: NoSchedule\n", `invalid taint key "-bad-"`, ""},
		{"bad label key", head + "hosts:\n  - name: cp1\n    address: 10.0.0.1\n    roles: [control-plane]\n    labels:\n      ok: yes-fine\n      a/b/c: x " + marker + "\n", `invalid label key "a/b/c"`, ""},
		{"bad label value", head + "hosts:\n  - name: cp1\n    address: 10.0.0.1\n    roles: [control-plane]\n    labels:\n      tier: \"not ok\" " + marker + "\n", `invalid value "not ok" for label "tier"`, ""},
		{"endpoint with a scheme", head + "cluster:\n  controlPlaneEndpoint: https://api.example.com " + marker + "\n" + oneCP, "must not have a scheme", "host[:port]"},
		{"endpoint with a bad port", head + "cluster:\n  controlPlaneEndpoint: api.example.com:99999 " + marker + "\n" + oneCP, `port "99999"`, ""},
		{"bastion without address", head + "ssh:\n  bastion: " + marker + "\n    user: jump\n" + oneCP, "bastion has no address", ""},
		{"bad key type", head + "cluster:\n  keyType: dsa " + marker + "\n" + oneCP, `unsupported keyType "dsa"`, "rsa or ecdsa"},
		{"unknown cni plugin", head + "cluster:\n  cni:\n    plugin: calico " + marker + "\n" + oneCP, `unsupported cni.plugin "calico"`, "flannel"},
		{"flannel on an IPv6 pod subnet", head + "cluster:\n  podSubnet: fd00:10:244::/56\n  cni:\n    plugin: flannel " + marker + "\n" + oneCP, "IPv4 podSubnet only", "bridge"},
		{"cni manifest plugin without manifest", head + "cluster:\n  cni:\n    plugin: manifest " + marker + "\n" + oneCP, "needs cni.manifest", ""},
		{"cni manifest unreadable", head + "cluster:\n  cni:\n    plugin: manifest\n    manifest: calico.yaml " + marker + "\n" + oneCP, "cannot read cni.manifest", ""},
		{"artifacts not a directory", head + "cluster:\n  artifacts: plain.txt " + marker + "\n" + oneCP, "is not a directory", "docs/inventory.md"},
		{"artifacts missing", head + "cluster:\n  artifacts: nothing-here " + marker + "\n" + oneCP, "no such file", ""},
		{"bad cgroup driver", head + "cluster:\n  kubelet:\n    cgroupDriver: cgroupv2 " + marker + "\n" + oneCP, `unsupported kubelet.cgroupDriver "cgroupv2"`, ""},
		{"bad dns domain", head + "cluster:\n  dnsDomain: Cluster_Local " + marker + "\n" + oneCP, `invalid dnsDomain "Cluster_Local"`, ""},
		{"bad cert SAN", head + "cluster:\n  certSANs: [api.example.com, \"not valid\"] " + marker + "\n" + oneCP, `invalid certificate SAN "not valid"`, ""},
		{"bad runtime endpoint", head + "cluster:\n  containerRuntimeEndpoint: /run/containerd/containerd.sock " + marker + "\n" + oneCP, "invalid containerRuntimeEndpoint", "unix://"},
		{"password env holds a value, not a name", head + "ssh:\n  passwordEnv: \"my secret\" " + marker + "\n" + oneCP, `invalid environment variable name`, "NAME"},
		{"bad port", head + "hosts:\n  - name: cp1\n    address: 10.0.0.1\n    port: 70000 " + marker + "\n    roles: [control-plane]\n", "invalid port 70000", ""},
		{"bad image repository", head + "cluster:\n  imageRepository: https://registry.k8s.io " + marker + "\n" + oneCP, `invalid imageRepository`, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeFiles(t)
			inv, err := parseIn(t, dir, tc.doc)
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Load() = %v, %v; want a *ValidationError", inv, err)
			}
			if inv != nil {
				t.Errorf("Load() returned an inventory with errors")
			}
			line := markedLine(t, tc.doc)
			for _, p := range ve.Problems {
				if p.Warning || !strings.Contains(p.Message, tc.want) {
					continue
				}
				if p.Line != line {
					t.Errorf("problem %q at line %d, want line %d", p.Message, p.Line, line)
				}
				if !strings.Contains(p.Hint, tc.hint) {
					t.Errorf("problem %q has hint %q, want it to contain %q", p.Message, p.Hint, tc.hint)
				}
				if p.File != filepath.Join(dir, "inventory.yaml") {
					t.Errorf("problem file = %q", p.File)
				}
				return
			}
			t.Errorf("no error containing %q; got:\n%v", tc.want, err)
		})
	}
}

func TestLoadReportsEveryProblemAtOnceInLineOrder(t *testing.T) {
	doc := head + `cluster:
  kubernetesVersion: v1.30.0
  podSubnet: 10.96.0.0/16
  keyType: dsa
ssh:
  password: secret
hosts:
  - {name: cp1, address: 10.0.0.1, roles: [control-plane]}
  - {name: cp1, address: 10.0.0.1, roles: [boss]}
`
	dir := t.TempDir()
	_, err := parseIn(t, dir, doc)
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Load() error = %v, want *ValidationError", err)
	}
	want := []struct {
		line int
		msg  string
	}{
		{4, "unsupported Kubernetes version"},
		{5, "overlaps pod subnet"}, // serviceSubnet is not written: the problem points at podSubnet
		{6, "keyType"},
		{8, `unknown field "password"`},
		{11, "duplicate host name"},
		{11, "duplicate address"},
		{11, `unknown role "boss"`},
	}
	if len(ve.Problems) != len(want) {
		t.Errorf("got %d problems, want %d:\n%s", len(ve.Problems), len(want), err)
	}
	for i, w := range want {
		if i >= len(ve.Problems) {
			break
		}
		if p := ve.Problems[i]; p.Line != w.line || !strings.Contains(p.Message, w.msg) {
			t.Errorf("problem %d = line %d %q, want line %d %q", i, p.Line, p.Message, w.line, w.msg)
		}
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(ve.Problems) {
		t.Fatalf("Error() has %d lines for %d problems:\n%s", len(lines), len(ve.Problems), err)
	}
	wantFirst := filepath.Join(dir, "inventory.yaml") + `:4: cluster.kubernetesVersion: unsupported Kubernetes version "v1.30.0" (hint: kubeforge supports v1.35.x, v1.36.x and v1.37.x; for example v1.37.2)`
	if lines[0] != wantFirst {
		t.Errorf("Error() first line = %q, want %q", lines[0], wantFirst)
	}
}

func TestWarningsDoNotFailLoad(t *testing.T) {
	t.Setenv("KF_UNSET_FOR_TEST", "")
	os.Unsetenv("KF_UNSET_FOR_TEST")
	doc := head + `ssh:
  passwordEnv: KF_UNSET_FOR_TEST
hosts: ` + marker + `
  - {name: cp1, address: 10.0.0.1, roles: [control-plane]}
  - {name: cp2, address: 10.0.0.2, roles: [control-plane]}
`
	inv, err := parseIn(t, t.TempDir(), doc)
	if err != nil {
		t.Fatalf("Load() error = %v, want only warnings", err)
	}
	var even, env bool
	for _, w := range inv.Warnings {
		if !w.Warning {
			t.Errorf("warning %v has Warning=false", w)
		}
		if strings.Contains(w.Message, "2 control planes is an even number") && w.Line == markedLine(t, doc) {
			even = true
		}
		if strings.Contains(w.Message, "KF_UNSET_FOR_TEST is not set") && w.Line == 4 {
			env = true
		}
	}
	if !even || !env {
		t.Errorf("warnings = %v; want the even control planes (line %d) and the unset variable (line 4)", inv.Warnings, markedLine(t, doc))
	}
	if !strings.Contains(inv.Warnings[0].String(), "warning: ") {
		t.Errorf("String() of a warning = %q, want a \"warning: \" prefix", inv.Warnings[0].String())
	}
}

func TestWarningsAreReportedAlongsideErrors(t *testing.T) {
	doc := head + `cluster:
  keyType: dsa
hosts:
  - {name: cp1, address: 10.0.0.1, roles: [control-plane]}
  - {name: cp2, address: 10.0.0.2, roles: [control-plane]}
`
	_, err := parseIn(t, t.TempDir(), doc)
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Load() error = %v", err)
	}
	if len(ve.Errors()) != 1 || len(ve.Problems) != 2 {
		t.Errorf("got %d errors and %d problems, want 1 error and an even-control-planes warning:\n%s", len(ve.Errors()), len(ve.Problems), err)
	}
}

func TestExampleLoadsWithoutProblems(t *testing.T) {
	inv, err := Load(filepath.Join("..", "examples", "cluster.yaml"))
	if err != nil {
		t.Fatalf("examples/cluster.yaml: %v", err)
	}
	if len(inv.Warnings) > 0 {
		t.Errorf("examples/cluster.yaml has warnings: %v", inv.Warnings)
	}
	if got := len(inv.ControlPlanes()); got != 3 {
		t.Errorf("control planes = %d, want 3", got)
	}
	if got := len(inv.Workers()); got != 2 {
		t.Errorf("workers = %d, want 2", got)
	}
	for _, h := range inv.Hosts {
		if h.Line == 0 {
			t.Errorf("host %s has no line", h.Name)
		}
	}
}

func TestLoadOfMissingFileFailsWithPathError(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) error = %v, want one wrapping os.ErrNotExist", err)
	}
}

func TestAnInheritedBadValueIsReportedOnce(t *testing.T) {
	doc := head + "hosts:\n  - name: cp1\n    address: 10.0.0.1\n    roles: [control-plane]\n    ssh:\n      user: \"bad user\" " + marker + "\n"
	_, err := parseIn(t, t.TempDir(), doc)
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Load() error = %v", err)
	}
	if len(ve.Problems) != 1 || ve.Problems[0].Line != markedLine(t, doc) || ve.Problems[0].Field != "hosts[0].ssh.user" {
		t.Errorf("problems = %v, want one at hosts[0].ssh.user line %d", ve.Problems, markedLine(t, doc))
	}
}

// A value that cannot be decoded gets one message, naming its field: none
// about what it left empty ("no roles", "no control plane").
func TestADecodeErrorHasNoFollowOnMessages(t *testing.T) {
	doc := head + "hosts:\n  - {name: cp1, address: 10.0.0.1, roles: control-plane}\n"
	_, err := Parse([]byte(doc), "inventory.yaml")
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Parse = %v, want a ValidationError", err)
	}
	if len(ve.Problems) != 1 || ve.Problems[0].Field != "hosts[0].roles" {
		t.Errorf("problems %v; want one, on hosts[0].roles", ve.Problems)
	}
}

// bigInventory is an inventory of n workers (4 lines each) plus one control
// plane; with bad > 0 the host line bad is indented wrongly.
func bigInventory(n, bad int) []byte {
	var b strings.Builder
	b.WriteString(head + "hosts:\n  - {name: cp, address: 10.0.0.1, roles: [control-plane]}\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  - name: w%d\n    address: 10.%d.%d.%d\n    roles: [worker]\n\n", i, 1+i/62500, i/250%250, i%250+1)
	}
	lines := strings.SplitAfter(b.String(), "\n")
	if bad > 0 {
		lines[bad-1] = "   roles: [worker]\n"
	}
	return []byte(strings.Join(lines, ""))
}

// A syntax error deep in a large file is reported at its own line.
func TestSyntaxErrorLineInALargeFile(t *testing.T) {
	data := bigInventory(1500, 5503)
	_, err := Parse(data, "big.yaml")
	var ve *ValidationError
	if !errors.As(err, &ve) || len(ve.Problems) != 1 || ve.Problems[0].Line != 5503 {
		t.Fatalf("Parse = %v; want one syntax error at line 5503", err)
	}
}

// A subnet with host bits set and a role listed twice load, with a warning each.
func TestHostBitsAndRepeatedRolesWarn(t *testing.T) {
	doc := head + "cluster:\n  podSubnet: 10.244.0.1/16\nhosts:\n  - {name: cp1, address: 10.0.0.1, roles: [control-plane, control-plane]}\n"
	inv, err := parseIn(t, t.TempDir(), doc)
	if err != nil {
		t.Fatal(err)
	}
	var bits, twice bool
	for _, w := range inv.Warnings {
		bits = bits || (strings.Contains(w.Message, "has host bits set: it is read as 10.244.0.0/16") && w.Line == 4)
		twice = twice || (strings.Contains(w.Message, `role "control-plane" is listed twice`) && w.Line == 6)
	}
	if !bits || !twice {
		t.Errorf("warnings %v; want host bits (line 4) and a repeated role (line 6)", inv.Warnings)
	}
}

// firstFailingPrefix is the slow definition of a syntax error's line: the
// first n such that yaml.v3 fails to parse the first n lines with problem.
func firstFailingPrefix(data []byte, problem string) int {
	lines := bytes.SplitAfter(data, []byte("\n"))
	for n := 1; n <= len(lines); n++ {
		if yamlv3Fails(bytes.Join(lines[:n], nil), problem) {
			return n
		}
	}
	return 0
}

// The quick way to find a syntax error's line (a few yaml.v2 parses) agrees
// with the definition: the first line at which a prefix of the file fails.
func TestSyntaxErrorLineIsTheFirstFailingPrefix(t *testing.T) {
	docs := []string{
		head + "hosts:\n  - name: a\n    address: 10.0.0.1\n   roles: [worker]\n",
		head + "cluster:\n  certSANs: [a, b\n  name: x\nhosts: []\n",
		head + "cluster:\n  featureGates: {A: true\n\n\n# a comment\nhosts: []\n",
		head + "cluster:\n  name: 'unclosed\nhosts: []\n",
		head + "cluster:\n  name: \"unclosed\n\nhosts: []\n",
		head + "cluster:\n\tname: x\n",
		head + "cluster:\n  name: a: b\n",
		head + "hosts:\n  - a\n  b: c\n",
		head + "hosts:\n- a\nb\n",
		head + "cluster: ]\n",
		head + "cluster:\n  name: x\n name: y\n",
		head + "cluster:\n  kubelet:\n    config:\n      a: |\n    b\n   c: d\n",
		head + "hosts:\n  - {name: a, address: b\n  - {name: c}\n",
		head + "cluster: !!map\n  ? [a\n",
		head + "hosts:\n  - name: a\n  roles: [x]\n  - name: b\n",
		head + "cluster:\n  name: @x\n",
		head + "cluster:\n  name: `x\n",
		head + "hosts:\n  - name: a\n    - b\n",
		head + "%YAML 1.1\n%YAML 1.1\n",
		head + "cluster:\n  name: \"\\q\"\n",
		"[a, b\n\n\n",
	}
	for i, doc := range docs {
		_, err := Parse([]byte(doc), "x.yaml")
		var ve *ValidationError
		if !errors.As(err, &ve) || len(ve.Problems) == 0 {
			t.Errorf("doc %d: Parse = %v, want a syntax error", i, err)
			continue
		}
		p := ve.Problems[0]
		problem := strings.TrimPrefix(p.Message, "YAML syntax error: ")
		problem, _, _ = strings.Cut(problem, " (in the block that starts at line")
		want := firstFailingPrefix([]byte(doc), problem)
		if p.Line != want || want == 0 {
			t.Errorf("doc %d %q: line %d (%v), want %d, the first failing prefix", i, doc, p.Line, p, want)
		}
	}
}
