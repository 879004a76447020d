//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/kubeforge/kubeforge/tasks"
	"github.com/kubeforge/kubeforge/test/harnesslib"
)

// checkBackup runs `kubeforge backup` on a running cluster and checks the
// archive: mode 0600, its manifest's MAC under the state dir's backup key
// (made 0600 by the first backup), every entry's sha256 and size as its
// manifest says, a snapshot whose etcd checksum holds, the cluster's etcd
// ID and members.
func checkBackup(ctx context.Context, t *testing.T, c *harnesslib.Cluster, state string, members int) {
	t.Helper()
	dir := t.TempDir()
	if code, _ := kubeforge(ctx, t, "backup", "-i", c.Inventory, "--state-dir", state, "-o", dir); code != 0 {
		t.Fatalf("backup exited %d", code)
	}
	archives, _ := filepath.Glob(filepath.Join(dir, "*.tar.gz"))
	if len(archives) != 1 {
		t.Fatalf("backup wrote %v; want one archive", archives)
	}
	if fi, err := os.Stat(archives[0]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("archive mode %v (%v); want 0600: it holds the CA keys", fi.Mode().Perm(), err)
	}
	f, err := os.Open(archives[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var m tasks.BackupManifest
	var manifest, mac []byte
	entries := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		switch h.Name {
		case "manifest.json":
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			manifest = b
			continue
		case "manifest.hmac":
			mac = b
			continue
		}
		entries[h.Name] = b
	}
	if len(m.Files) == 0 || len(m.Files) != len(entries) {
		t.Fatalf("manifest lists %d files, the archive holds %d", len(m.Files), len(entries))
	}
	for name, want := range m.Files {
		sum := sha256.Sum256(entries[name])
		if hex.EncodeToString(sum[:]) != want || m.Sizes[name] != int64(len(entries[name])) {
			t.Errorf("%s: sha256 or size differs from the manifest", name)
		}
	}
	keyPath := filepath.Join(state, "backup.key")
	if fi, err := os.Stat(keyPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("backup key %s: %v %v; want mode 0600", keyPath, fi, err)
	}
	key, err := tasks.LoadBackupKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if want, err := key.SignManifest(manifest); err != nil || !bytes.Equal(want, mac) {
		t.Errorf("manifest.hmac is not the MAC of manifest.json under %s (%v)", keyPath, err)
	}
	secret, _ := os.ReadFile(keyPath)
	for name, b := range entries {
		if bytes.Contains(b, bytes.TrimSpace(secret)) {
			t.Errorf("%s holds the backup key", name)
		}
	}
	snap := entries["etcd/snapshot.db"]
	if n := len(snap); n < 1024 || (n-sha256.Size)%512 != 0 {
		t.Fatalf("snapshot of %d bytes", n)
	}
	if sum := sha256.Sum256(snap[:len(snap)-sha256.Size]); !bytes.Equal(sum[:], snap[len(snap)-sha256.Size:]) {
		t.Error("the snapshot's etcd checksum does not hold")
	}
	for _, p := range []string{"pki/ca.key", "pki/etcd/ca.key", "inventory.yaml"} {
		if entries[p] == nil {
			t.Errorf("the archive has no %s", p)
		}
	}
	_, _, id := etcdMembership(ctx, t, state, c.Nodes[0])
	if m.ClusterID != strconv.FormatUint(id, 16) || len(m.Members) != members || m.Revision <= 0 || m.KubernetesVersion == "" {
		t.Errorf("manifest: cluster %s (etcd says %x), members %v (want %d), revision %d, version %q",
			m.ClusterID, id, m.Members, members, m.Revision, m.KubernetesVersion)
	}
}
