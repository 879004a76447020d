//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubeforge/kubeforge/tasks"
	"github.com/kubeforge/kubeforge/test/harnesslib"
)

// dryRunPlan runs `up --dry-run --output json` and returns the plan it printed.
func dryRunPlan(ctx context.Context, t *testing.T, inv, state string) *tasks.Plan {
	t.Helper()
	return dryRun(ctx, t, "up", "-i", inv, "--state-dir", state)
}

// dryRun runs a kubeforge command with --dry-run --output json and returns
// the plan it printed.
func dryRun(ctx context.Context, t *testing.T, args ...string) *tasks.Plan {
	t.Helper()
	code, out := kubeforge(ctx, t, append(args, "--dry-run", "--output", "json")...)
	if code != 0 {
		t.Fatalf("%s --dry-run exited %d", args[0], code)
	}
	p := planOf(out)
	if p == nil {
		t.Fatalf("%s --dry-run printed no plan", args[0])
	}
	return p
}

// planOf is the plan in the output of a command run with --dry-run --output
// json, or nil.
func planOf(out string) *tasks.Plan {
	for _, l := range strings.Split(out, "\n") {
		var e struct {
			Type string
			Plan *tasks.Plan
		}
		if json.Unmarshal([]byte(l), &e) == nil && e.Type == "plan" && e.Plan != nil {
			return e.Plan
		}
	}
	return nil
}

// teardownMatchesChanges asserts that what a reset or removal did is what
// its dry run planned, host by host: the Node deleted, the etcd member
// removed, and every line of the host's reset.
func teardownMatchesChanges(t *testing.T, p *tasks.Plan, changes map[string][]tasks.Change) {
	t.Helper()
	// A plan line says "remove /etc/kubernetes", the change "removed /etc/kubernetes": compare what is acted on.
	verbs := map[string]bool{"stop": true, "stopped": true, "and": true, "disable": true, "disabled": true, "remove": true, "removed": true,
		"unmount": true, "unmounted": true, "delete": true, "deleted": true}
	object := func(line string) string {
		var out []string
		for _, w := range strings.Fields(line) {
			switch {
			case verbs[w]:
			case strings.Trim(w, "0123456789") == "":
				out = append(out, "N") // a count of containers can move between the plan and the run
			default:
				out = append(out, w)
			}
		}
		return strings.Join(out, " ")
	}
	planned, done := map[string]bool{}, map[string]bool{}
	for _, td := range p.Teardown {
		for _, l := range td.Reset {
			planned[td.Host+": "+object(l)] = true
		}
		if td.Node != "" {
			planned[td.Host+": node"] = true
		}
		if td.EtcdMember != "" {
			planned[td.Host+": member "+td.EtcdMember] = true
		}
	}
	for host, cs := range changes {
		for _, c := range cs {
			switch {
			case c.Kind == tasks.ChangeHost:
				done[host+": "+object(c.What)] = true
			case c.Kind == tasks.ChangeNode && c.What == "deleted node":
				done[host+": node"] = true
			case c.Kind == tasks.ChangeEtcd:
				done[host+": "+object(c.What)] = true
			}
		}
	}
	sameSets(t, "teardown plan and run", planned, done)
	if len(planned) == 0 {
		t.Errorf("the teardown plan is empty")
	}
}

// lastChanges reads what the last run changed (<state>/logs/changes.json).
func lastChanges(t *testing.T, state string) map[string][]tasks.Change {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(state, "logs", "changes.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string][]tasks.Change
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// planMatchesChanges asserts that the files the run wrote (or removed, as a
// registry's files) are exactly those the plan listed, host by host, and that
// every kubelet restart was planned.
func planMatchesChanges(t *testing.T, p *tasks.Plan, changes map[string][]tasks.Change) {
	t.Helper()
	planned, done := map[string]bool{}, map[string]bool{}
	for _, h := range p.Hosts {
		for _, f := range append(append([]tasks.FilePlan(nil), h.Files...), h.Later...) {
			planned[h.Host+":"+f.Path] = true
		}
		for _, r := range h.Restarts {
			if r.What == "kubelet" {
				planned[h.Host+":restart kubelet"] = true
			}
		}
	}
	for host, cs := range changes {
		for _, c := range cs {
			switch {
			case c.Kind == tasks.ChangeFile:
				done[host+":"+c.What] = true
			case c.Kind == tasks.ChangeHost && strings.HasPrefix(c.What, "removed /"):
				done[host+":"+strings.TrimPrefix(c.What, "removed ")] = true
			case c.Kind == tasks.ChangeRestart && c.What == "kubelet":
				done[host+":restart kubelet"] = true
			}
		}
	}
	sameSets(t, "plan and run", planned, done)
}

// sameSets fails t when planned and done differ, listing both sides.
func sameSets(t *testing.T, what string, planned, done map[string]bool) {
	t.Helper()
	var missing, extra []string
	for k := range done {
		if !planned[k] {
			extra = append(extra, k)
		}
	}
	for k := range planned {
		if !done[k] {
			missing = append(missing, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing)+len(extra) > 0 {
		t.Errorf("%s differ:\n  planned, not done: %v\n  done, not planned: %v", what, missing, extra)
	}
}

// TestPlanAccuracy: on fresh hosts, on a converged cluster and after drift
// (a file edited on a host, a certificate re-issued), what `up` writes is
// what `up --dry-run` planned just before, file by file.
func TestPlanAccuracy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	c, state := startCluster(ctx, t, "kfplan", "172.31.245.0/24", 3, 1)
	inv := subsetInventory(t, c, "node1", "node2") // node3 is the host added at the end
	step := func(name string) *tasks.Plan {
		t.Helper()
		p := dryRunPlan(ctx, t, inv, state)
		mustUp(ctx, t, c, state, "-i", inv)
		planMatchesChanges(t, p, lastChanges(t, state))
		t.Logf("%s: plan and run agree", name)
		return p
	}
	step("fresh hosts")
	if p := step("converged"); !p.Empty() {
		t.Errorf("the plan of a converged cluster is not empty: %+v", p.Hosts)
	}
	// Drift: a file edited on the worker.
	MustSSH(ctx, t, c, c.Nodes[1], "root", "echo '# edited by hand' >> /var/lib/kubelet/config.yaml")
	p := step("a file edited on a host")
	if h := planHost(p, "node2"); h == nil || len(h.Files) != 1 || h.Files[0].Reason != "content differs" {
		t.Errorf("plan for node2 after an edit: %+v", h)
	}
	// Drift: a certificate re-issued (then the API server must serve it).
	if code, _ := kubeforge(ctx, t, "certs", "renew", "apiserver", "-i", c.Inventory, "--state-dir", state); code != 0 {
		t.Fatal("certs renew failed")
	}
	stopWatch := watchKeys(ctx, t, c, c.Nodes[0], "certs renew and up")
	p = step("a certificate re-issued")
	stopWatch()
	var restarts []string
	for _, r := range planHost(p, "node1").Restarts {
		restarts = append(restarts, r.What)
	}
	if !strings.Contains(strings.Join(restarts, ","), "static pod kube-apiserver") {
		t.Errorf("renewing the API server certificate plans no API server restart: %v", restarts)
	}
	want := readSerial(t, filepath.Join(state, "nodes", "node1", "etc", "kubernetes", "pki", "apiserver.crt"))
	served := MustSSH(ctx, t, c, c.Nodes[0], "root", "for i in $(seq 60); do s=$(echo | openssl s_client -connect "+c.Nodes[0].Address+":6443 2>/dev/null | openssl x509 -noout -serial) && [ \"$s\" = 'serial="+want+"' ] && break; sleep 1; done; echo $s")
	if !strings.Contains(served, want) {
		t.Errorf("the API server serves %q; want the renewed certificate %s", strings.TrimSpace(served), want)
	}
	// Drift: a host added (once the restarted API server is ready: the plan reads Nodes through it).
	waitAPIReady(ctx, t, state)
	inv = c.Inventory
	p = step("a host added")
	if h := planHost(p, "node3"); h == nil || h.Role != "join" || strings.Join(p.JoinNodes, ",") != "node3" {
		t.Errorf("plan after adding node3: joins %v, node3 %+v", p.JoinNodes, h)
	}
	// As kubeadm: the joined kubelet's bootstrap kubeconfig is gone, etcd's data dir is private.
	MustSSH(ctx, t, c, c.Nodes[2], "root", "test -s /etc/kubernetes/kubelet.conf && test ! -e /etc/kubernetes/bootstrap-kubelet.conf")
	if mode := strings.TrimSpace(MustSSH(ctx, t, c, c.Nodes[0], "root", "stat -c %a /var/lib/etcd")); mode != "700" {
		t.Errorf("/var/lib/etcd has mode %s; want 700", mode)
	}
}

// waitAPIReady waits until the cluster's API server answers /readyz "ok".
func waitAPIReady(ctx context.Context, t *testing.T, state string) {
	t.Helper()
	kc := clientFor(t, state)
	err := wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		body, err := kc.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && strings.TrimSpace(string(body)) == "ok", nil
	})
	if err != nil {
		t.Fatalf("the API server is not ready: %v", err)
	}
}

func planHost(p *tasks.Plan, name string) *tasks.HostPlan {
	for _, h := range p.Hosts {
		if h.Host == name {
			return h
		}
	}
	return nil
}

var serialRE = regexp.MustCompile(`serial=([0-9A-F]+)`)

// readSerial returns the serial number (hex, as openssl prints it) of the first readable certificate file.
func readSerial(t *testing.T, paths ...string) string {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		out, err := execOutput("openssl", "x509", "-noout", "-serial", "-in", p)
		if err != nil {
			t.Fatal(err)
		}
		if m := serialRE.FindStringSubmatch(out); m != nil {
			return m[1]
		}
	}
	t.Fatalf("no certificate in %v", paths)
	return ""
}

// convergeThreeControlPlanes runs the observed-state checks on a converged
// 3+1 cluster: reordering the file changes nothing; a control plane reset
// (the endpoint's one) rejoins with `up` and etcd has 3 voters again.
func convergeThreeControlPlanes(ctx context.Context, t *testing.T, c *harnesslib.Cluster, state string) {
	t.Helper()
	reordered := filepath.Join(c.Dir, "reordered.yaml")
	if err := os.WriteFile(reordered, []byte(reorderHosts(t, c.Inventory, []int{2, 3, 1, 0})), 0o600); err != nil {
		t.Fatal(err)
	}
	if p := dryRunPlan(ctx, t, reordered, state); !p.Empty() || p.Init != "" {
		t.Errorf("reordering the hosts of a converged cluster plans changes: init=%q joins=%v hosts=%+v", p.Init, p.JoinCP, p.Hosts)
	}
	before := nodeState(ctx, t, c, c.Nodes[0])
	out := mustUp(ctx, t, c, state, "-i", reordered)
	if !strings.Contains(out, "No changes") {
		t.Errorf("up of the reordered inventory changed something")
	}
	if after := nodeState(ctx, t, c, c.Nodes[0]); after != before {
		t.Errorf("node1 changed after the reordered up")
	}
	// Reset the control plane the endpoint is on: reset takes its etcd member
	// out first (2 voters stay, quorum kept); up rejoins it.
	rp := dryRun(ctx, t, "reset", "-i", c.Inventory, "--state-dir", state, "--hosts", "node1")
	if len(rp.Teardown) != 1 || rp.Teardown[0].Host != "node1" || rp.Teardown[0].EtcdMember == "" {
		t.Errorf("reset --dry-run --hosts node1 plans %+v; want node1 torn down and its etcd member removed", rp.Teardown)
	}
	if code, _ := kubeforge(ctx, t, "reset", "-i", c.Inventory, "--state-dir", state, "--hosts", "node1", "--yes"); code != 0 {
		t.Fatal("reset --hosts node1 failed")
	}
	teardownMatchesChanges(t, rp, lastChanges(t, state))
	// The reset removed etcd's data where the inventory put it, and nothing was ever made at the default.
	MustSSH(ctx, t, c, c.Nodes[0], "root", "test ! -e "+customEtcdDir+" && test ! -e /var/lib/etcd")
	if voters, learners := etcdMembers(ctx, t, state, c.Nodes[1]); voters != 2 || learners != 0 {
		t.Errorf("after reset --hosts node1 etcd has %d voters, %d learners; want 2 and 0 (the member removed before the wipe)", voters, learners)
	}
	p := dryRunPlan(ctx, t, c.Inventory, state)
	if p.Init != "" || strings.Join(p.JoinCP, ",") != "node1" {
		t.Errorf("after reset --hosts node1 the plan is init=%q joins=%v etcd=%+v; want node1 to rejoin", p.Init, p.JoinCP, p.Etcd)
	}
	mustUp(ctx, t, c, state)
	checkWhole(ctx, t, c, state, 3)
	// A backup of the whole cluster (issue: backup and restore).
	checkBackup(ctx, t, c, state, 3)
	// A control plane reset while its member stays (as an older kubeforge or a
	// reinstall leaves it): up removes the stale voter and the host rejoins.
	MustSSH(ctx, t, c, c.Nodes[2], "root", "test -d "+customEtcdDir+"/member && test ! -e /var/lib/etcd && systemctl stop kubelet; crictl rm -fa >/dev/null 2>&1; ctr -n k8s.io tasks ls -q | xargs -r -n1 ctr -n k8s.io tasks kill -s SIGKILL; sleep 2; rm -rf "+customEtcdDir)
	p = dryRunPlan(ctx, t, c.Inventory, state)
	if strings.Join(p.JoinCP, ",") != "node3" || len(p.Etcd) != 1 || p.Etcd[0].Action != "remove" || p.Etcd[0].Host != "node3" {
		t.Errorf("with node3's etcd data gone the plan is joins=%v etcd=%+v; want its stale member removed and node3 to rejoin", p.JoinCP, p.Etcd)
	}
	mustUp(ctx, t, c, state)
	checkWhole(ctx, t, c, state, 3)
	// Converged on the non-default values: the next plan is empty; the API server serves the extra SAN; pods
	// and Services take their addresses from the custom subnets.
	if p := dryRunPlan(ctx, t, c.Inventory, state); !p.Empty() {
		t.Errorf("a converged cluster with non-default values plans changes: init=%q joins=%v etcd=%+v hosts=%+v", p.Init, p.JoinCP, p.Etcd, p.Hosts)
	}
	if out := MustSSH(ctx, t, c, c.Nodes[0], "root", "echo | openssl s_client -connect "+c.Nodes[0].Address+":6443 2>/dev/null | openssl x509 -noout -ext subjectAltName"); !strings.Contains(out, "DNS:"+customSAN) {
		t.Errorf("the API server's certificate lacks %s:\n%s", customSAN, out)
	}
	kc := clientFor(t, state)
	if svc, err := kc.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{}); err != nil || !strings.HasPrefix(svc.Spec.ClusterIP, "10.128.") {
		t.Errorf("the kubernetes Service is not in %s: %v %v", customServiceSubnet, svc, err)
	}
	if nodes, err := kc.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err == nil {
		for _, n := range nodes.Items {
			if !strings.HasPrefix(n.Spec.PodCIDR, "10.240.") {
				t.Errorf("%s has pod CIDR %q; want one of %s", n.Name, n.Spec.PodCIDR, customPodSubnet)
			}
		}
	}
}

// reorderHosts returns the inventory with its hosts in the given order.
func reorderHosts(t *testing.T, path string, order []int) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	head, hosts, ok := strings.Cut(string(b), "hosts:\n")
	if !ok {
		t.Fatal("no hosts: in the inventory")
	}
	var items []string
	for _, part := range regexp.MustCompile(`(?m)^  - name:`).Split(hosts, -1)[1:] {
		items = append(items, "  - name:"+part)
	}
	if len(items) != len(order) {
		t.Fatalf("%d hosts, %d in the order", len(items), len(order))
	}
	out := head + "hosts:\n"
	for _, i := range order {
		out += items[i]
	}
	return out
}

// interruptedJoin is where TestThreeControlPlanes stops its first up: in the
// middle of node2's control-plane join (its etcd learner added).
var interruptedJoin = interruption{Step: "control-plane/join", Event: "host-start", Host: "node2", Delay: 3 * time.Second, Signal: syscall.SIGKILL}

func execOutput(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
