//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeforge/kubeforge/tasks"
	"github.com/kubeforge/kubeforge/test/harnesslib"
)

const restoreNS = "restore-me"

// makeWorkload creates the objects a restore must bring back: a namespace
// with a ConfigMap, a Secret and a Deployment of two pods.
func makeWorkload(ctx context.Context, t *testing.T, kc kubernetes.Interface) {
	t.Helper()
	if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: restoreNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.CoreV1().ConfigMaps(restoreNS).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "settings"},
		Data: map[string]string{"color": "blue", "size": "42"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.CoreV1().Secrets(restoreNS).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "token"},
		Data: map[string][]byte{"password": []byte("s3cr3t-restore")}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.AppsV1().Deployments(restoreNS).Create(ctx, pauseDeployment("restored", 2), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPodsRunning(ctx, t, kc, restoreNS, "app=restored", 2)
}

// deleteWorkload deletes the namespace and waits until it is gone.
func deleteWorkload(ctx context.Context, t *testing.T, kc kubernetes.Interface) {
	t.Helper()
	if err := kc.CoreV1().Namespaces().Delete(ctx, restoreNS, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := kc.CoreV1().Namespaces().Get(ctx, restoreNS, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Fatalf("namespace %s not deleted: %v", restoreNS, err)
	}
}

// checkWorkloadBack asserts the objects are back with the same content and
// the Deployment's pods run.
func checkWorkloadBack(ctx context.Context, t *testing.T, kc kubernetes.Interface) {
	t.Helper()
	cm, err := kc.CoreV1().ConfigMaps(restoreNS).Get(ctx, "settings", metav1.GetOptions{})
	if err != nil || cm.Data["color"] != "blue" || cm.Data["size"] != "42" {
		t.Errorf("ConfigMap after restore: %v %v", cm, err)
	}
	s, err := kc.CoreV1().Secrets(restoreNS).Get(ctx, "token", metav1.GetOptions{})
	if err != nil || string(s.Data["password"]) != "s3cr3t-restore" {
		t.Errorf("Secret after restore: %v", err)
	}
	waitPodsRunning(ctx, t, kc, restoreNS, "app=restored", 2)
}

// takeBackup runs `kubeforge backup` and returns the archive's path.
func takeBackup(ctx context.Context, t *testing.T, inv, state string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "backup.tar.gz")
	if code, _ := kubeforge(ctx, t, "backup", "-i", inv, "--state-dir", state, "-o", p); code != 0 {
		t.Fatalf("backup exited %d", code)
	}
	return p
}

// restoreRefusals: a damaged, a truncated, another cluster's (signed with
// the backup key), and a rewritten one signed with another key are each
// refused before any host is touched, and leave the state dir as it was.
func restoreRefusals(ctx context.Context, t *testing.T, c *harnesslib.Cluster, inv, state, archive string, watch harnesslib.Node) {
	t.Helper()
	good, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)*2/3] ^= 0x01
	key, err := tasks.LoadBackupKey(filepath.Join(state, "backup.key"))
	if err != nil {
		t.Fatal(err)
	}
	otherKeyFile := filepath.Join(dir, "other.key")
	if err := os.WriteFile(otherKeyFile, []byte(strings.Repeat("5a", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	otherKey, err := tasks.LoadBackupKey(otherKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	before := nodeState(ctx, t, c, watch)
	stateBefore := dirDigest(t, state)
	for _, tc := range []struct {
		name, want string
		data       []byte
	}{
		{"one-byte-changed", "cannot be restored", flipped},
		{"truncated", "cannot be restored", good[:len(good)/2]},
		{"other-cluster", "of another cluster", otherClusterArchive(t, good, key)},
		{"signed-by-another-key", "it was authenticated with backup key", otherClusterArchive(t, good, otherKey)},
	} {
		p := filepath.Join(dir, tc.name+".tar.gz")
		if err := os.WriteFile(p, tc.data, 0o600); err != nil {
			t.Fatal(err)
		}
		code, out := kubeforge(ctx, t, "restore", "-i", inv, "--state-dir", state, "--from", p, "--yes")
		if code == 0 || !strings.Contains(out, tc.want) {
			t.Errorf("restore of a %s archive: exit %d; want a refusal saying %q:\n%s", tc.name, code, tc.want, out)
		}
		if strings.Contains(out, "==> connect") {
			t.Errorf("restore of a %s archive connected to the hosts before refusing", tc.name)
		}
	}
	if after := nodeState(ctx, t, c, watch); after != before {
		t.Errorf("a refused restore changed %s", watch.Name)
	}
	if after := dirDigest(t, state); after != stateBefore {
		t.Errorf("a refused restore changed the state dir:\nbefore %s\nafter  %s", stateBefore, after)
	}
}

// dirDigest lists dir's files but its logs (every run writes those) with
// their modes and sha256.
func dirDigest(t *testing.T, dir string) string {
	t.Helper()
	var out strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() && (rel == "logs") {
			return filepath.SkipDir
		}
		fi, err := d.Info()
		if err != nil || !fi.Mode().IsRegular() || strings.HasSuffix(rel, ".lock") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		fmt.Fprintf(&out, "%s %v %x\n", rel, fi.Mode().Perm(), sum[:6])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// otherClusterArchive is the archive with another CA (its manifest's sums
// and sizes made to match, signed with backupKey): what a backup of another
// cluster looks like to restore.
func otherClusterArchive(t *testing.T, good []byte, backupKey *tasks.BackupKey) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubernetes"}, IsCA: true,
		BasicConstraintsValid: true, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	entries, order := readTarGz(t, good)
	entries["pki/ca.crt"] = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	var m map[string]any
	if err := json.Unmarshal(entries["manifest.json"], &m); err != nil {
		t.Fatal(err)
	}
	files := m["files"].(map[string]any)
	sum := sha256.Sum256(entries["pki/ca.crt"])
	files["pki/ca.crt"] = hex.EncodeToString(sum[:])
	m["sizes"].(map[string]any)["pki/ca.crt"] = len(entries["pki/ca.crt"])
	entries["manifest.json"], _ = json.Marshal(m)
	if entries["manifest.hmac"], err = backupKey.SignManifest(entries["manifest.json"]); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	gz := gzip.NewWriter(&out)
	tw := tar.NewWriter(gz)
	for _, name := range order {
		_ = tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(entries[name])), Typeflag: tar.TypeReg})
		_, _ = tw.Write(entries[name])
	}
	tw.Close()
	gz.Close()
	return out.Bytes()
}

func readTarGz(t *testing.T, data []byte) (map[string][]byte, []string) {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	entries := map[string][]byte{}
	var order []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return entries, order
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		entries[h.Name] = b
		order = append(order, h.Name)
	}
}

// restoreConverges restores from archive, first killed (SIGKILL) right after
// the data was placed, then run again to the end; it returns the output.
func restoreConverges(ctx context.Context, t *testing.T, inv, state, archive string) string {
	t.Helper()
	args := []string{"restore", "-i", inv, "--state-dir", state, "--from", archive, "--yes"}
	if !interrupted(ctx, t, interruption{Step: "restore/etcd", Event: "step-end", Signal: syscall.SIGKILL}, args...) {
		t.Fatal("the first restore never reached the end of restore/etcd")
	}
	start := time.Now()
	code, out := kubeforge(ctx, t, args...)
	t.Logf("restore resumed after SIGKILL: %s", time.Since(start).Round(time.Millisecond))
	if code != 0 {
		t.Fatalf("restore exited %d", code)
	}
	if !strings.Contains(out, "resumed") || !strings.Contains(out, "restored data in place already") {
		t.Errorf("the second restore did not resume the first (same token, data kept):\n%s", out)
	}
	return out
}

// checkRestoreInPlace: objects made, backup, the namespace deleted; damaged
// archives refused; a restore killed after its data step and run again
// brings the objects back on a whole cluster.
func checkRestoreInPlace(ctx context.Context, t *testing.T, c *harnesslib.Cluster, inv, state string, nodes []harnesslib.Node, cps int) string {
	t.Helper()
	kc := clientFor(t, state)
	makeWorkload(ctx, t, kc)
	archive := takeBackup(ctx, t, inv, state)
	deleteWorkload(ctx, t, kc)
	restoreRefusals(ctx, t, c, inv, state, archive, nodes[0])
	stopWatch := watchKeys(ctx, t, c, nodes[0], "restore")
	out := restoreConverges(ctx, t, inv, state, archive)
	stopWatch()
	if !strings.Contains(out, "No changes") {
		t.Errorf("the up after an in-place restore changed something:\n%s", out)
	}
	kc = clientFor(t, state)
	checkWorkloadBack(ctx, t, kc)
	checkNodesWhole(ctx, t, state, nodes, cps)
	return archive
}

// restoreOntoNewHosts: a backup, then every control plane destroyed and made
// again from the image at its address (new host keys, nothing installed);
// restore rebuilds them, the objects are back and the worker, untouched,
// rejoins by itself.
func restoreOntoNewHosts(ctx context.Context, t *testing.T, c *harnesslib.Cluster, state string, cps int) {
	t.Helper()
	archive := takeBackup(ctx, t, c.Inventory, state)
	worker := c.Nodes[cps]
	before := nodeState(ctx, t, c, worker)
	var names []string
	for _, n := range c.Nodes[:cps] {
		names = append(names, n.Name)
	}
	inv, err := os.ReadFile(c.Inventory)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := harnesslib.Reinstall(ctx, c.Dir, names, TestLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	*c = *c2
	// The hosts are new, the inventory is the user's: keep it as it was (the harness writes its own defaults).
	if err := os.WriteFile(c.Inventory, inv, 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	code, out := kubeforge(ctx, t, "restore", "-i", c.Inventory, "--state-dir", state, "--from", archive, "--yes")
	t.Logf("restore onto %d new control planes: %s", cps, time.Since(start).Round(time.Millisecond))
	if code != 0 {
		t.Fatalf("restore onto new hosts exited %d", code)
	}
	if !strings.Contains(out, "install the control plane (new host)") {
		t.Errorf("the restore plan did not say the control planes are new:\n%s", out)
	}
	if after := nodeState(ctx, t, c, worker); after != before {
		t.Errorf("the restore onto new control planes touched the worker %s:\nbefore %s\nafter  %s", worker.Name, before, after)
	}
	kc := clientFor(t, state)
	checkWorkloadBack(ctx, t, kc)
	checkNodesWhole(ctx, t, state, c.Nodes, cps)
}

// pauseDeployment is a Deployment of n pause pods labelled app=name.
func pauseDeployment(name string, n int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{Replicas: &n, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10.2", ImagePullPolicy: corev1.PullIfNotPresent}}}}}}
}
