package tasks

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testArchive writes an archive as backup does, with a snapshot that carries a
// valid etcd checksum, and returns its path.
func testArchive(t *testing.T, dir string, mutate func(m *BackupManifest, files map[string][]byte)) string {
	t.Helper()
	body := bytes.Repeat([]byte("etcd-page"), 512*4/9+1)[:512*4]
	sum := sha256.Sum256(body)
	snap := append(body, sum[:]...)
	sf, err := os.Create(filepath.Join(dir, "snap"))
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	if _, err := sf.Write(snap); err != nil {
		t.Fatal(err)
	}
	ss := sha256.Sum256(snap)
	files := map[string][]byte{
		"pki/ca.crt": []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), "pki/ca.key": []byte("key"),
		"pki/etcd/ca.crt": []byte("etcd ca"), "inventory.yaml": []byte("cluster: {}\n"),
	}
	m := BackupManifest{Cluster: "c", ClusterID: "1", Revision: 7, KubernetesVersion: "v1.37.2", Time: time.Unix(0, 0).UTC(),
		Files: map[string]string{snapshotName: hex.EncodeToString(ss[:])}}
	for n, b := range files {
		s := sha256.Sum256(b)
		m.Files[n] = hex.EncodeToString(s[:])
	}
	if mutate != nil {
		mutate(&m, files)
	}
	p := filepath.Join(dir, "backup.tar.gz")
	if _, err := writeArchive(p, m, files, sf, int64(len(snap))); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestOpenArchiveAcceptsABackupAndExtractsTheSnapshot(t *testing.T) {
	dir := t.TempDir()
	a, err := OpenArchive(testArchive(t, dir, nil), filepath.Join(dir, "work"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.Manifest.Revision != 7 || string(a.Files["pki/ca.key"]) != "key" || len(a.SHA256) != 64 {
		t.Errorf("archive read as %+v", a)
	}
	fi, err := os.Stat(a.Snapshot)
	if err != nil || fi.Size() != 512*4+sha256.Size || fi.Mode().Perm() != 0o600 {
		t.Fatalf("snapshot %v %v", fi, err)
	}
	a.Close()
	if _, err := os.Stat(a.Snapshot); !os.IsNotExist(err) {
		t.Errorf("Close left the snapshot: %v", err)
	}
}

func TestOpenArchiveRefusesDamage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, p string)
		mutate func(m *BackupManifest, files map[string][]byte)
		want   string
	}{
		{name: "one byte changed", damage: func(t *testing.T, p string) { flipByte(t, p, 0.6) }, want: "cannot be restored"},
		{name: "truncated", damage: func(t *testing.T, p string) { truncate(t, p, 0.7) }, want: "truncated"},
		{name: "cut at the end", damage: func(t *testing.T, p string) { truncate(t, p, 0.99) }, want: "cannot be restored"},
		{name: "entry not as its manifest says", mutate: func(m *BackupManifest, files map[string][]byte) { files["pki/ca.key"] = []byte("other") }, want: "pki/ca.key has sha256"},
		{name: "entry listed but absent", mutate: func(m *BackupManifest, files map[string][]byte) { m.Files["pki/extra.key"] = strings.Repeat("0", 64) }, want: "missing"},
		{name: "entry not listed", mutate: func(m *BackupManifest, files map[string][]byte) { files["pki/x.crt"] = []byte("x") }, want: "not in manifest.json"},
		{name: "no CA", mutate: func(m *BackupManifest, files map[string][]byte) {
			delete(files, "pki/ca.crt")
			delete(m.Files, "pki/ca.crt")
		}, want: "no cluster CA"},
		{name: "not gzip", damage: func(t *testing.T, p string) { os.WriteFile(p, []byte("plain text"), 0o600) }, want: "not a gzip stream"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := testArchive(t, dir, tc.mutate)
			if tc.damage != nil {
				tc.damage(t, p)
			}
			a, err := OpenArchive(p, filepath.Join(dir, "work"))
			var ae *ErrArchive
			if !errors.As(err, &ae) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("OpenArchive: %v; want an ErrArchive saying %q", err, tc.want)
			}
			if a != nil {
				t.Errorf("a damaged archive was returned")
			}
			if left, _ := filepath.Glob(filepath.Join(dir, "work", "*")); len(left) > 0 {
				t.Errorf("a refused archive left %v", left)
			}
		})
	}
}

func flipByte(t *testing.T, p string, at float64) {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[int(float64(len(b))*at)] ^= 0x55
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func truncate(t *testing.T, p string, at float64) {
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, int64(float64(fi.Size())*at)); err != nil {
		t.Fatal(err)
	}
}
