package main

import (
	"bytes"
	"strings"
	"testing"
)

// cpJSON is a control plane's `kube-bench run --json`, cut down from a real run on the harness: an automated
// FAIL, an automated PASS, a manual check kube-bench reports as WARN, a manual one it reports as PASS (a title
// without a marker, scored false), a skipped one, and an automated one kube-bench does not score (cis-1.10's
// policies 5.1.x: the CIS title says Automated, kube-bench's scored says false), which warned.
const cpJSON = `{"Controls":[
 {"id":"1","version":"cis-1.12","text":"Control Plane Security Configuration","node_type":"master","tests":[
  {"section":"1.2","desc":"API Server","results":[
   {"test_number":"1.2.15","test_desc":"Ensure that the --profiling argument is set to false (Automated)",
    "audit":"/bin/ps -ef | grep kube-apiserver | grep -v grep","type":"","status":"FAIL","scored":true,
    "expected_result":"'--profiling' is equal to 'false'",
    "remediation":"Edit the API server pod specification file\nand set --profiling=false"},
   {"test_number":"1.2.1","test_desc":"Ensure that the --anonymous-auth argument is set to false (Manual)",
    "audit":"/bin/ps -ef | grep kube-apiserver","type":"","status":"WARN","scored":false,"remediation":"anon"},
   {"test_number":"1.2.2","test_desc":"Ensure that the --token-auth-file parameter is not set (Automated)",
    "audit":"/bin/ps -ef | grep kube-apiserver","type":"","status":"PASS","scored":true,"remediation":"token"}]}],
  "total_pass":1,"total_fail":1,"total_warn":1,"total_info":0},
 {"id":"5","version":"cis-1.12","text":"Kubernetes Policies","node_type":"policies","tests":[
  {"section":"5.1","desc":"RBAC","results":[
   {"test_number":"5.1.1","test_desc":"Ensure that the cluster-admin role is only used where required (Automated)",
    "audit":"kubectl get clusterrolebindings","type":"","status":"WARN","scored":false,"remediation":"bindings"},
   {"test_number":"5.1.2","test_desc":"Minimize access to secrets","audit":"kubectl auth can-i",
    "type":"","status":"PASS","scored":false,"remediation":"secrets"},
   {"test_number":"5.1.9","test_desc":"Minimize access to create persistent volumes (Automated)","audit":"",
    "type":"skip","status":"INFO","scored":true,"remediation":"pv"}]}]},
 {"id":"2","version":"cis-1.12","text":"Etcd Node Configuration","node_type":"etcd","tests":[
  {"section":"2","desc":"Etcd","results":[
   {"test_number":"2.1","test_desc":"Ensure that the --cert-file and --key-file arguments are set (Automated)",
    "audit":"/bin/ps -ef | grep etcd","type":"","status":"PASS","scored":true,"remediation":"etcd"}]}]}]}`

// workerJSON is a worker's run: an automated WARN (kube-bench could not read the file) and a FAIL read from a
// config file (AuditConfig).
const workerJSON = `{"Controls":[
 {"id":"4","version":"cis-1.12","text":"Worker Node Security Configuration","node_type":"node","tests":[
  {"section":"4.1","desc":"Worker Node Configuration Files","results":[
   {"test_number":"4.1.9","test_desc":"If the kubelet config.yaml configuration file is being used validate permissions set to 600 or more restrictive (Automated)",
    "audit":"/bin/sh -c 'stat -c permissions=%a /var/lib/kubelet/config.yaml'","type":"","status":"FAIL","scored":true,
    "expected_result":"permissions has permissions 644, expected 600 or more restrictive","remediation":"chmod 600 /var/lib/kubelet/config.yaml"},
   {"test_number":"4.2.1","test_desc":"Ensure that the --anonymous-auth argument is set to false (Automated)",
    "audit":"/bin/ps -fC kubelet\nsecond line","AuditConfig":"/bin/cat /var/lib/kubelet/config.yaml","type":"","status":"WARN","scored":true,
    "remediation":"set authentication: anonymous: enabled to false"}]}]}]}`

func summarise(t *testing.T, results ...hostResult) string {
	t.Helper()
	var b bytes.Buffer
	if err := writeSummary(&b, results); err != nil {
		t.Fatalf("writeSummary: %v", err)
	}
	return b.String()
}

func mustParse(t *testing.T, host, data string) hostResult {
	t.Helper()
	r, err := parseResult(host, []byte(data))
	if err != nil {
		t.Fatalf("parseResult(%s): %v", host, err)
	}
	return r
}

func TestSummaryCountsAutomatedChecksByResultAndManualOnesApart(t *testing.T) {
	out := summarise(t, mustParse(t, "node1", cpJSON), mustParse(t, "node2", workerJSON))
	// section, name, host, pass, fail, warn, manual, info
	want := [][]string{
		{"1", "control", "plane", "node1", "1", "1", "0", "1", "0"},
		{"2", "etcd", "node1", "1", "0", "0", "0", "0"},
		{"4", "node", "node2", "0", "1", "1", "0", "0"},
		{"5", "policies", "node1", "0", "0", "1", "1", "1"},
		{"total", "2", "2", "2", "2", "1"},
	}
	var rows [][]string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && (f[0] == "total" || len(f[0]) == 1 && f[0] >= "1" && f[0] <= "9") {
			rows = append(rows, f)
		}
	}
	if len(rows) != len(want) {
		t.Fatalf("table rows = %q, want %d rows in section order\n%s", rows, len(want), out)
	}
	for i := range want {
		if strings.Join(rows[i], " ") != strings.Join(want[i], " ") {
			t.Errorf("row %d = %q, want %q", i, rows[i], want[i])
		}
	}
}

func TestSummaryListsEveryAutomatedFailureAndWarningOnly(t *testing.T) {
	out := summarise(t, mustParse(t, "node1", cpJSON), mustParse(t, "node2", workerJSON))
	_, list, ok := strings.Cut(out, "Automated checks that FAIL or WARN: 4\n")
	if !ok {
		t.Fatalf("no count of 4 findings in\n%s", out)
	}
	for _, want := range []string{
		"FAIL 1.2.15 [node1] Ensure that the --profiling argument is set to false (Automated)",
		"  audit:       /bin/ps -ef | grep kube-apiserver | grep -v grep",
		"  expected:    '--profiling' is equal to 'false'",
		"  remediation: Edit the API server pod specification file\n               and set --profiling=false",
		"FAIL 4.1.9 [node2] If the kubelet config.yaml",
		"WARN 4.2.1 [node2] Ensure that the --anonymous-auth argument is set to false (Automated)",
		"  audit:       /bin/ps -fC kubelet ...", // a multi-line audit shows its first line
		"  config:      /bin/cat /var/lib/kubelet/config.yaml",
		"WARN 5.1.1 [node1] Ensure that the cluster-admin role is only used where required (Automated)",
	} {
		if !strings.Contains(list, want) {
			t.Errorf("findings lack %q:\n%s", want, list)
		}
	}
	for _, manualOrPassed := range []string{"1.2.1", "1.2.2", "5.1.2", "5.1.9", "2.1"} {
		if strings.Contains(list, " "+manualOrPassed+" [") {
			t.Errorf("findings list %s, which is manual, skipped or passed:\n%s", manualOrPassed, list)
		}
	}
	if i, j := strings.Index(list, "1.2.15"), strings.Index(list, "4.1.9"); i > j {
		t.Errorf("findings not in benchmark order (1.2.15 at %d, 4.1.9 at %d)", i, j)
	}
}

func TestParseResultRejectsWhatIsNotKubeBenchJSON(t *testing.T) {
	for name, data := range map[string]string{
		"not json":      "kube-bench: error: unable to determine benchmark version",
		"no controls":   `{"Controls":[],"Totals":{}}`,
		"another shape": `{"items":[]}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := parseResult("node1", []byte(data)); err == nil {
				t.Errorf("parseResult(%q) = nil error, want one", data)
			}
		})
	}
}

func TestManualFollowsTheCISTitleThenKubeBenchsType(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    benchCheck
		want bool
	}{
		{"title says Manual though scored", benchCheck{Text: "Ensure x (Manual)", Scored: true}, true},
		{"title says Automated though unscored", benchCheck{Text: "Ensure x (Automated) ", Scored: false}, false},
		{"kube-bench type manual", benchCheck{Text: "Ensure x (Automated)", Type: "manual", Scored: true}, true},
		{"no marker, unscored", benchCheck{Text: "Ensure x"}, true},
		{"no marker, scored", benchCheck{Text: "Ensure x", Scored: true}, false},
	} {
		if got := tc.c.manual(); got != tc.want {
			t.Errorf("%s: manual() = %v, want %v", tc.name, got, tc.want)
		}
	}
}
