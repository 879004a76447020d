//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"gopkg.in/yaml.v3"

	"github.com/kubeforge/kubeforge/pki"
	"github.com/kubeforge/kubeforge/test/harnesslib"
)

// stateKeys are the encryption keys in the state dir, in order.
func stateKeys(t testing.TB, state string) []pki.EncryptionKey {
	t.Helper()
	b, err := pki.Load(filepath.Join(state, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	return b.EncryptionKeys()
}

// notUnder lists, read from etcd itself, the objects under prefix (such as
// /registry/secrets/) whose stored value does not start with want.
func notUnder(ctx context.Context, t testing.TB, state string, n harnesslib.Node, prefix, want string) (bad []string, total int) {
	t.Helper()
	cli := etcdClient(t, state, n)
	defer cli.Close()
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("etcd get %s: %v", prefix, err)
	}
	for _, kv := range resp.Kvs {
		if !strings.HasPrefix(string(kv.Value), want) {
			bad = append(bad, string(kv.Key))
		}
	}
	return bad, len(resp.Kvs)
}

// clientOf is a cluster-admin client of n's own API server.
func clientOf(t testing.TB, state string, n harnesslib.Node) kubernetes.Interface {
	t.Helper()
	cfg := restConfig(t, state)
	cfg.Host = "https://" + n.Address + ":6443"
	cfg.QPS, cfg.Burst = 500, 500 // checkAudit makes a few thousand requests
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return kc
}

// checkEncryptedAtRest: a Secret (and each resource listed in resources)
// made after up is stored in etcd under the cluster's first key, read with
// etcd's client, and its value is not there in the clear; every object of
// those resources is under that key.
func checkEncryptedAtRest(ctx context.Context, t *testing.T, state string, n harnesslib.Node, provider string, resources ...string) {
	t.Helper()
	keys := stateKeys(t, state)
	if len(keys) != 2 || keys[0].Provider != provider || keys[1].Provider != pki.Identity {
		t.Fatalf("state dir keys %v; want a %s key then identity", keys, provider)
	}
	kc := clientFor(t, state)
	const value = "plain-text-canary-3141"
	name := fmt.Sprintf("at-rest-%d", time.Now().UnixNano())
	if _, err := kc.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name},
		Data: map[string][]byte{"v": []byte(value)}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cli := etcdClient(t, state, n)
	resp, err := cli.Get(ctx, "/registry/secrets/default/"+name)
	cli.Close()
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("etcd get the new Secret: %v (%d keys)", err, len(resp.Kvs))
	}
	stored := string(resp.Kvs[0].Value)
	if !strings.HasPrefix(stored, keys[0].Prefix()) || strings.Contains(stored, value) {
		t.Errorf("the new Secret is stored as %.60q...; want it to start with %q and hide its value", stored, keys[0].Prefix())
	}
	for _, r := range resources {
		if bad, total := notUnder(ctx, t, state, n, "/registry/"+r+"/", keys[0].Prefix()); len(bad) > 0 || total == 0 {
			t.Errorf("%d of %d %s in etcd not under %s (first: %v)", len(bad), total, r, keys[0], bad)
		}
	}
}

// checkAudit: a write to a Secret through control plane n's API server is in
// n's audit log (metadata only: not its value), and the log has rotated at
// maxSize MB, keeping at most maxBackup old files.
func checkAudit(ctx context.Context, t *testing.T, c *harnesslib.Cluster, state string, n harnesslib.Node, maxSize, maxBackup int) {
	t.Helper()
	kc := clientOf(t, state, n)
	const value = "audit-canary-2718"
	name := fmt.Sprintf("audited-%d", time.Now().UnixNano())
	if _, err := kc.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name},
		Data: map[string][]byte{"v": []byte(value)}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Enough requests for the log to pass maxSize (a metadata event is about 1 KB).
	for i := 0; i < maxSize*1500; i++ {
		if _, err := kc.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	dir := "/var/log/kubernetes/audit"
	const sep = "--kubeforge-e2e--"
	out := MustSSH(ctx, t, c, n, "root", "sleep 2; grep -h '\"name\":\""+name+"\"' "+dir+"/audit*.log | grep '\"verb\":\"create\"'; echo "+sep+
		"; grep -l "+value+" "+dir+"/* || true; echo "+sep+"; ls -l "+dir)
	parts := strings.Split(out, sep+"\n")
	if len(parts) != 3 {
		t.Fatalf("unexpected output:\n%s", out)
	}
	if !strings.Contains(parts[0], `"level":"Metadata"`) || !strings.Contains(parts[0], `"resource":"secrets"`) {
		t.Errorf("%s's audit log has no metadata event for the Secret's create:\n%s", n.Name, parts[0])
	}
	if strings.TrimSpace(parts[1]) != "" {
		t.Errorf("the Secret's value is in the audit log: %s", parts[1])
	}
	var rotated int
	for _, line := range strings.Split(parts[2], "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.HasPrefix(f[8], "audit") {
			continue
		}
		size, _ := strconv.Atoi(f[4])
		if size > (maxSize+1)<<20 {
			t.Errorf("%s is %d bytes: over maxSize %d MB", f[8], size, maxSize)
		}
		if f[8] != "audit.log" {
			rotated++
		}
	}
	if rotated == 0 || rotated > maxBackup {
		t.Errorf("%d rotated audit logs; want 1 to %d:\n%s", rotated, maxBackup, parts[2])
	}
}

// checkKeyRotation: `secrets rotate-key` killed with SIGKILL at the end of
// step (and run again) moves every Secret to a new key and drops the old one
// everywhere; up then changes nothing. With restore, a backup taken before
// the rotation then restores with its Secrets readable (the workload of
// makeWorkload), and the up after the restore moves them to the new key again.
func checkKeyRotation(ctx context.Context, t *testing.T, c *harnesslib.Cluster, inv, state string, cps []harnesslib.Node, step string, restore bool) {
	t.Helper()
	var archive string
	if restore {
		archive = takeBackup(ctx, t, inv, state)
	}
	old := stateKeys(t, state)[0]
	rotateInterrupted(ctx, t, c, inv, state, cps, step, old)
	keys := stateKeys(t, state)
	out := mustUp(ctx, t, c, state, "-i", inv)
	if !strings.Contains(out, "No changes") {
		t.Errorf("up after the key rotation changed something:\n%s", out)
	}
	if !restore {
		return
	}
	code, out := kubeforge(ctx, t, "restore", "-i", inv, "--state-dir", state, "--from", archive, "--yes")
	if code != 0 {
		t.Fatalf("restore of the backup taken before the rotation exited %d:\n%s", code, out)
	}
	checkWorkloadBack(ctx, t, clientFor(t, state))
	if got := stateKeys(t, state); len(got) != 2 || got[0].Name != keys[0].Name {
		t.Errorf("after the restore and its up the keys are %v; want %v", got, keys)
	}
	if bad, total := notUnder(ctx, t, state, cps[0], "/registry/secrets/", keys[0].Prefix()); len(bad) > 0 {
		t.Errorf("after the restore and its up %d of %d Secrets are not under %s: %v", len(bad), total, keys[0], bad)
	}
}

// rotateInterrupted runs `secrets rotate-key` killed with SIGKILL at the end
// of step, runs it again, and checks the rotation from old is complete.
func rotateInterrupted(ctx context.Context, t *testing.T, c *harnesslib.Cluster, inv, state string, cps []harnesslib.Node, step string, old pki.EncryptionKey) {
	t.Helper()
	args := []string{"secrets", "rotate-key", "-i", inv, "--state-dir", state}
	if !interrupted(ctx, t, interruption{Step: step, Event: "step-end", Signal: syscall.SIGKILL}, args...) {
		t.Fatalf("rotate-key never reached the end of %s", step)
	}
	start := time.Now()
	code, out := kubeforge(ctx, t, args...)
	if code != 0 {
		t.Fatalf("rotate-key after SIGKILL at the end of %s exited %d:\n%s", step, code, out)
	}
	t.Logf("rotate-key resumed after SIGKILL at the end of %s: %s", step, time.Since(start).Round(time.Millisecond))
	keys := stateKeys(t, state)
	if len(keys) != 2 || keys[0].Name == old.Name || keys[1].Provider != pki.Identity {
		t.Fatalf("keys after the rotation: %v; want a new key then identity", keys)
	}
	if _, err := os.Stat(filepath.Join(state, "encryption-rotation.json")); err == nil {
		t.Errorf("the rotation is still marked under way")
	}
	if bad, total := notUnder(ctx, t, state, cps[0], "/registry/secrets/", keys[0].Prefix()); len(bad) > 0 || total == 0 {
		t.Errorf("%d of %d Secrets not under the new key %s: %v", len(bad), total, keys[0], bad)
	}
	for _, n := range cps {
		if cfg := MustSSH(ctx, t, c, n, "root", "cat "+pki.EncryptionConfigPath); strings.Contains(cfg, old.Name) || !strings.Contains(cfg, keys[0].Name) {
			t.Errorf("%s's encryption config still names the old key %s or lacks the new %s", n.Name, old.Name, keys[0].Name)
		}
	}
}

// rotationSteps are the step boundaries of `secrets rotate-key` that change
// something: the matrix (KUBEFORGE_ROTATE_MATRIX) kills it after each.
var rotationSteps = []string{"encryption/key", "encryption/add", "encryption/promote", "encryption/use", "encryption/rewrite", "encryption/drop", "encryption/finish"}

// TestKeyRotationConverges (make e2e-rotate-matrix): on a 2+1 cluster,
// a rotation killed with SIGKILL after each of its steps, then run again,
// completes; a SIGKILL in the middle of a control plane's roll too; a backup
// taken before a rotation restores with its Secrets readable.
func TestKeyRotationConverges(t *testing.T) {
	if os.Getenv("KUBEFORGE_ROTATE_MATRIX") == "" {
		t.Skip("the key-rotation matrix runs with make e2e-rotate-matrix (KUBEFORGE_ROTATE_MATRIX=1)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Hour)
	defer cancel()
	c, state := startCluster(ctx, t, "kfrot", "172.31.220.0/24", 3, 2)
	mustUp(ctx, t, c, state)
	cps := c.Nodes[:2]
	makeWorkload(ctx, t, clientFor(t, state))
	for _, step := range rotationSteps {
		t.Run("SIGKILL after "+step, func(t *testing.T) {
			rotateInterrupted(ctx, t, c, c.Inventory, state, cps, step, stateKeys(t, state)[0])
		})
	}
	t.Run("a backup from before a rotation restores readable", func(t *testing.T) {
		checkKeyRotation(ctx, t, c, c.Inventory, state, cps, "encryption/rewrite", true)
	})
	t.Run("SIGKILL 5s into encryption/use on node2", func(t *testing.T) {
		old := stateKeys(t, state)[0]
		args := []string{"secrets", "rotate-key", "-i", c.Inventory, "--state-dir", state}
		if !interrupted(ctx, t, interruption{Step: "encryption/use", Event: "host-start", Host: "node2", Delay: 5 * time.Second, Signal: syscall.SIGKILL}, args...) {
			t.Fatal("rotate-key never reached encryption/use on node2")
		}
		if code, out := kubeforge(ctx, t, args...); code != 0 {
			t.Fatalf("rotate-key after the kill exited %d:\n%s", code, out)
		}
		if got := stateKeys(t, state); got[0].Name == old.Name {
			t.Errorf("the key did not change")
		}
	})
	checkEncryptedAtRest(ctx, t, state, c.Nodes[0], "secretbox", "secrets")
	if out := mustUp(ctx, t, c, state); !strings.Contains(out, "No changes") {
		t.Errorf("up after the rotations changed something:\n%s", out)
	}
}

// TestEncryptionTurnedOnForARunningCluster (make e2e-rotate-matrix): a
// cluster made with encryption off holds Secrets in the clear; up with it on,
// killed with SIGKILL after the new key's promotion and run again, ends with
// every Secret under the key (read from etcd) and the workload's Secret
// readable; the next up changes nothing.
func TestEncryptionTurnedOnForARunningCluster(t *testing.T) {
	if os.Getenv("KUBEFORGE_ROTATE_MATRIX") == "" {
		t.Skip("runs with make e2e-rotate-matrix (KUBEFORGE_ROTATE_MATRIX=1)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	c, state := startCluster(ctx, t, "kfenc", "172.31.219.0/24", 2, 1)
	scalar := func(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Value: v} }
	off := rewriteInventory(t, c.Inventory, filepath.Join(c.Dir, "inventory-off.yaml"), func(root *yaml.Node) {
		cluster := mapValue(root, "cluster")
		cluster.Content = append(cluster.Content, scalar("encryption"), &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{scalar("enabled"), scalar("false")}})
	})
	mustUp(ctx, t, c, state, "-i", off)
	if keys := stateKeys(t, state); len(keys) != 0 {
		t.Fatalf("encryption off, yet the state dir has keys %v", keys)
	}
	kc := clientFor(t, state)
	makeWorkload(ctx, t, kc)
	if bad, total := notUnder(ctx, t, state, c.Nodes[0], "/registry/secrets/", "k8s:enc:"); len(bad) != total || total == 0 {
		t.Fatalf("encryption off: %d of %d Secrets in the clear; want all", len(bad), total)
	}
	if p := dryRunPlan(ctx, t, c.Inventory, state); len(p.Encryption) == 0 {
		t.Errorf("up --dry-run that turns encryption on says nothing about it: %+v", p)
	}
	args := []string{"up", "-i", c.Inventory, "--state-dir", state}
	if !interrupted(ctx, t, interruption{Step: "encryption/promote", Event: "step-end", Signal: syscall.SIGKILL}, args...) {
		t.Fatal("up never reached the end of encryption/promote")
	}
	mustUp(ctx, t, c, state)
	keys := stateKeys(t, state)
	if len(keys) != 2 || keys[0].Provider != "secretbox" || keys[1].Provider != pki.Identity {
		t.Fatalf("keys after turning encryption on: %v", keys)
	}
	if bad, total := notUnder(ctx, t, state, c.Nodes[0], "/registry/secrets/", keys[0].Prefix()); len(bad) > 0 {
		t.Errorf("%d of %d Secrets not under %s after turning encryption on: %v", len(bad), total, keys[0], bad)
	}
	checkWorkloadBack(ctx, t, clientFor(t, state))
	if out := mustUp(ctx, t, c, state); !strings.Contains(out, "No changes") {
		t.Errorf("up after turning encryption on changed something:\n%s", out)
	}
}
