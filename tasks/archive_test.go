package tasks

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testKey makes a backup key file in dir.
func testKey(t *testing.T, dir string) *BackupKey {
	t.Helper()
	k, _, err := newBackupKey(filepath.Join(dir, "backup.key"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testSnapshot is a snapshot that carries a valid etcd checksum.
func testSnapshot() []byte {
	body := bytes.Repeat([]byte("etcd-page"), 512*4/9+1)[:512*4]
	sum := sha256.Sum256(body)
	return append(body, sum[:]...)
}

// testFiles are an archive's small entries (not a PKI pki.Load reads).
func testFiles() map[string][]byte {
	return map[string][]byte{
		"pki/ca.crt": []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), "pki/ca.key": []byte("key"),
		"pki/etcd/ca.crt": []byte("etcd ca"), "inventory.yaml": []byte("cluster: {}\n"),
	}
}

// writeTestArchive writes an archive as backup does, signed with key, and
// returns its path; mutate may change the manifest and files first.
func writeTestArchive(t *testing.T, dir string, key *BackupKey, files map[string][]byte, mutate func(m *BackupManifest, files map[string][]byte)) string {
	t.Helper()
	snap := testSnapshot()
	sf, err := os.Create(filepath.Join(dir, "snap"))
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	if _, err := sf.Write(snap); err != nil {
		t.Fatal(err)
	}
	ss := sha256.Sum256(snap)
	m := BackupManifest{Cluster: "c", ClusterID: "1", Revision: 7, KubernetesVersion: "v1.37.2", Time: time.Unix(0, 0).UTC(),
		Files: map[string]string{snapshotName: hex.EncodeToString(ss[:])}, Sizes: map[string]int64{snapshotName: int64(len(snap))}}
	for n, b := range files {
		s := sha256.Sum256(b)
		m.Files[n] = hex.EncodeToString(s[:])
		m.Sizes[n] = int64(len(b))
	}
	if mutate != nil {
		mutate(&m, files)
	}
	p := filepath.Join(dir, "backup.tar.gz")
	if _, err := writeArchive(p, m, key, files, sf, int64(len(snap))); err != nil {
		t.Fatal(err)
	}
	return p
}

// testArchive writes an archive of testFiles signed with the key file
// dir/backup.key, which it makes.
func testArchive(t *testing.T, dir string, mutate func(m *BackupManifest, files map[string][]byte)) (string, *BackupKey) {
	t.Helper()
	k := testKey(t, dir)
	return writeTestArchive(t, dir, k, testFiles(), mutate), k
}

// tarEntry is an entry of a crafted archive: size is what its header says.
type tarEntry struct {
	name string
	size int64
	data []byte
}

// craftArchive writes entries as a tar.gz whose headers may lie: an entry
// whose data is shorter than its header's size ends the stream there.
func craftArchive(t *testing.T, p string, entries []tarEntry) {
	t.Helper()
	var out bytes.Buffer
	gz := gzip.NewWriter(&out)
	tw := tar.NewWriter(gz)
	complete := true
	for _, e := range entries {
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o600, Size: e.size, Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
		if int64(len(e.data)) < e.size {
			complete = false
			break
		}
	}
	if complete {
		tw.Close()
	}
	gz.Close()
	if err := os.WriteFile(p, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// signedManifest is manifest.json for m and its manifest.hmac under key.
func signedManifest(t *testing.T, m BackupManifest, key *BackupKey) []tarEntry {
	t.Helper()
	mj, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	mac, err := key.SignManifest(mj)
	if err != nil {
		t.Fatal(err)
	}
	return []tarEntry{{"manifest.json", int64(len(mj)), mj}, {macName, int64(len(mac)), mac}}
}

// tree lists every file and directory under dir with its mode and, for a
// file, the sha256 of its content.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		v := fi.Mode().String()
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s := sha256.Sum256(b)
			v += " " + hex.EncodeToString(s[:])
		}
		out[rel] = v
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return out
}

func TestOpenArchiveChecksABackupWritingNothingUntilExtracted(t *testing.T) {
	dir := t.TempDir()
	p, key := testArchive(t, dir, nil)
	work := filepath.Join(dir, "work")
	a, err := OpenArchive(p, work, key, false)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.Manifest.Revision != 7 || string(a.Files["pki/ca.key"]) != "key" || len(a.SHA256) != 64 || a.KeyID != key.ID() || a.Unauthenticated != "" {
		t.Errorf("archive read as %+v", a)
	}
	if _, err := os.Stat(work); !os.IsNotExist(err) {
		t.Errorf("OpenArchive wrote to %s: %v", work, err)
	}
	if err := a.ExtractSnapshot(work); err != nil {
		t.Fatal(err)
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
		{name: "entry not as its manifest says", mutate: func(m *BackupManifest, files map[string][]byte) { files["pki/ca.key"] = []byte("kez") }, want: "pki/ca.key has sha256"},
		{name: "entry of another size than its manifest says", mutate: func(m *BackupManifest, files map[string][]byte) { files["pki/ca.key"] = []byte("other") }, want: "pki/ca.key is 5 bytes in the archive, manifest.json says 3"},
		{name: "entry listed but absent", mutate: func(m *BackupManifest, files map[string][]byte) {
			m.Files["pki/extra.key"] = strings.Repeat("0", 64)
			m.Sizes["pki/extra.key"] = 1
		}, want: "missing"},
		{name: "entry not listed", mutate: func(m *BackupManifest, files map[string][]byte) { files["pki/x.crt"] = []byte("x") }, want: "not in manifest.json"},
		{name: "no CA", mutate: func(m *BackupManifest, files map[string][]byte) {
			delete(files, "pki/ca.crt")
			delete(m.Files, "pki/ca.crt")
			delete(m.Sizes, "pki/ca.crt")
		}, want: "no cluster CA"},
		{name: "not gzip", damage: func(t *testing.T, p string) { os.WriteFile(p, []byte("plain text"), 0o600) }, want: "not a gzip stream"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p, key := testArchive(t, dir, tc.mutate)
			if tc.damage != nil {
				tc.damage(t, p)
			}
			a, err := OpenArchive(p, filepath.Join(dir, "work"), key, false)
			var ae *ErrArchive
			if !errors.As(err, &ae) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("OpenArchive: %v; want an ErrArchive saying %q", err, tc.want)
			}
			if a != nil {
				t.Errorf("a damaged archive was returned")
			}
			if _, err := os.Stat(filepath.Join(dir, "work")); !os.IsNotExist(err) {
				t.Errorf("a refused archive wrote to the work dir: %v", err)
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

func TestOpenArchiveRefusesAManifestItsKeyDidNotSign(t *testing.T) {
	for _, tc := range []struct {
		name     string
		make     func(t *testing.T, dir string) (archive string, key *BackupKey)
		allow    bool
		want     string // "" : opened
		tampered bool   // a MAC of this key that does not match: no flag helps, so none is suggested
	}{
		{name: "signed by the key", make: func(t *testing.T, dir string) (string, *BackupKey) { return testArchive(t, dir, nil) }},
		{name: "rewritten with the sums recomputed, signed by another key", make: func(t *testing.T, dir string) (string, *BackupKey) {
			key := testKey(t, dir)
			other := testKey(t, t.TempDir())
			files := testFiles()
			files["pki/ca.crt"] = []byte("-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n")
			return writeTestArchive(t, dir, other, files, nil), key
		}, want: "it was authenticated with backup key"},
		{name: "manifest changed after signing", make: func(t *testing.T, dir string) (string, *BackupKey) {
			p, key := testArchive(t, dir, nil)
			entries := readArchiveEntries(t, p)
			var m BackupManifest
			if err := json.Unmarshal(entries[0].data, &m); err != nil {
				t.Fatal(err)
			}
			m.Revision = 8
			entries[0].data, _ = json.Marshal(m)
			entries[0].size = int64(len(entries[0].data))
			craftArchive(t, p, entries)
			return p, key
		}, want: "does not match its MAC", tampered: true},
		{name: "manifest changed after signing: refused even with --allow-unauthenticated", make: func(t *testing.T, dir string) (string, *BackupKey) {
			p, key := testArchive(t, dir, nil)
			entries := readArchiveEntries(t, p)
			entries[0].data = append(entries[0].data[:len(entries[0].data):len(entries[0].data)], ' ')
			entries[0].size = int64(len(entries[0].data))
			craftArchive(t, p, entries)
			return p, key
		}, allow: true, want: "does not match its MAC", tampered: true},
		{name: "no MAC (an older kubeforge's archive)", make: withoutMAC, want: "carries no MAC"},
		{name: "no MAC, allowed", make: withoutMAC, allow: true},
		{name: "no key file", make: func(t *testing.T, dir string) (string, *BackupKey) {
			p, _ := testArchive(t, dir, nil)
			k, err := LoadBackupKey(filepath.Join(dir, "absent.key"))
			if err != nil {
				t.Fatal(err)
			}
			return p, k
		}, want: "there is no key file at"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p, key := tc.make(t, dir)
			a, err := OpenArchive(p, filepath.Join(dir, "work"), key, tc.allow)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if tc.allow && (a.KeyID != "" || a.Unauthenticated == "") {
					t.Errorf("an archive without a MAC opened as authenticated: %+v", a)
				}
				return
			}
			var ae *ErrArchive
			if !errors.As(err, &ae) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("OpenArchive: %v; want a refusal saying %q", err, tc.want)
			}
			// The refusal says which key file it used and how to give another.
			hints := []string{key.Path, "--backup-key", BackupKeyEnv, "--allow-unauthenticated"}
			if tc.tampered {
				hints = []string{key.Path, "changed after it was written"}
			}
			for _, w := range hints {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("the refusal does not say %q: %v", w, err)
				}
			}
		})
	}
}

// withoutMAC is a signed archive with its manifest.hmac removed: what an
// older kubeforge wrote.
func withoutMAC(t *testing.T, dir string) (string, *BackupKey) {
	p, key := testArchive(t, dir, nil)
	entries := readArchiveEntries(t, p)
	craftArchive(t, p, append(entries[:1], entries[2:]...))
	return p, key
}

// readArchiveEntries reads an archive's entries in order.
func readArchiveEntries(t *testing.T, p string) []tarEntry {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var out []tarEntry
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, tarEntry{h.Name, h.Size, b})
	}
}

func TestOpenArchiveRefusesEntriesLargerThanTheManifestSays(t *testing.T) {
	snap := testSnapshot()
	sum := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	inv := []byte("cluster: {name: c}\n")
	files := testFiles()
	manifest := func(mutate func(m *BackupManifest)) BackupManifest {
		m := BackupManifest{Cluster: "c", KubernetesVersion: "v1.37.2", Files: map[string]string{snapshotName: sum(snap)},
			Sizes: map[string]int64{snapshotName: int64(len(snap))}}
		for n, b := range files {
			m.Files[n], m.Sizes[n] = sum(b), int64(len(b))
		}
		if mutate != nil {
			mutate(&m)
		}
		return m
	}
	small := func(skip string) []tarEntry {
		var out []tarEntry
		for _, n := range []string{"inventory.yaml", "pki/ca.crt", "pki/ca.key", "pki/etcd/ca.crt"} {
			if n != skip {
				out = append(out, tarEntry{n, int64(len(files[n])), files[n]})
			}
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		entries func(key *BackupKey) []tarEntry
		want    string
	}{
		{name: "an entry larger than the manifest says, its sha256 recomputed", entries: func(key *BackupKey) []tarEntry {
			// The sum matches the larger content: only the size gives it away.
			m := manifest(func(m *BackupManifest) { m.Files["inventory.yaml"] = sum(inv) })
			e := append(signedManifest(t, m, key), tarEntry{"inventory.yaml", int64(len(inv)), inv})
			return append(e, small("inventory.yaml")...)
		}, want: "inventory.yaml is 19 bytes in the archive, manifest.json says 12"},
		{name: "a snapshot whose header claims a terabyte", entries: func(key *BackupKey) []tarEntry {
			e := append(signedManifest(t, manifest(nil), key), small("")...)
			return append(e, tarEntry{snapshotName, 1 << 40, snap})
		}, want: "etcd/snapshot.db is 1099511627776 bytes in the archive, manifest.json says 2080"},
		{name: "entries that would not fit the free disk", entries: func(key *BackupKey) []tarEntry {
			m := manifest(func(m *BackupManifest) { m.Sizes[snapshotName] = 1 << 60 })
			e := append(signedManifest(t, m, key), small("")...)
			return append(e, tarEntry{snapshotName, 1 << 60, snap})
		}, want: "bytes free"},
		{name: "a small entry the manifest says is huge", entries: func(key *BackupKey) []tarEntry {
			m := manifest(func(m *BackupManifest) { m.Sizes["inventory.yaml"] = 1 << 30 })
			return append(signedManifest(t, m, key), tarEntry{"inventory.yaml", 1 << 30, inv})
		}, want: "says inventory.yaml is 1073741824 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			key := testKey(t, dir)
			p := filepath.Join(dir, "crafted.tar.gz")
			craftArchive(t, p, tc.entries(key))
			work := filepath.Join(dir, "work")
			_, err := OpenArchive(p, work, key, false)
			var ae *ErrArchive
			if !errors.As(err, &ae) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("OpenArchive: %v; want a refusal saying %q", err, tc.want)
			}
			if _, err := os.Stat(work); !os.IsNotExist(err) {
				t.Errorf("a refused archive wrote to the work dir: %v", err)
			}
		})
	}
}

func TestExtractSnapshotRefusesAnArchiveChangedSinceItWasChecked(t *testing.T) {
	dir := t.TempDir()
	p, key := testArchive(t, dir, nil)
	a, err := OpenArchive(p, filepath.Join(dir, "work"), key, false)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	// Swapped for one whose snapshot header claims more than was checked.
	entries := readArchiveEntries(t, p)
	last := &entries[len(entries)-1]
	last.size = 1 << 40
	craftArchive(t, p, entries)
	work := filepath.Join(dir, "work")
	err = a.ExtractSnapshot(work)
	var ae *ErrArchive
	if !errors.As(err, &ae) || !strings.Contains(err.Error(), "changed since it was checked") {
		t.Fatalf("ExtractSnapshot: %v; want a refusal", err)
	}
	if left, _ := os.ReadDir(work); len(left) > 0 || a.Snapshot != "" {
		t.Errorf("a refused extraction left %v (%q)", left, a.Snapshot)
	}
}

func TestFitsComparesWithTheFreeSpaceOfTheNearestExistingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "not", "yet")
	if err := fits(dir, 1); err != nil {
		t.Errorf("1 byte: %v", err)
	}
	if err := fits(dir, 1<<62); err == nil || !strings.Contains(err.Error(), "bytes free") {
		t.Errorf("4 EiB: %v; want a refusal", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("fits made %s", dir)
	}
}

func TestEtcdChecksumHoldsHoweverTheSnapshotIsCut(t *testing.T) {
	snap := testSnapshot()
	for _, chunk := range []int{1, 7, 31, 32, 33, 64, 500, len(snap)} {
		e := &etcdChecksum{h: sha256.New()}
		for b := snap; len(b) > 0; {
			n := min(chunk, len(b))
			e.Write(b[:n])
			b = b[n:]
		}
		if err := e.check(int64(len(snap))); err != nil {
			t.Errorf("in chunks of %d: %v", chunk, err)
		}
		snap[100] ^= 1
		e = &etcdChecksum{h: sha256.New()}
		e.Write(snap)
		if err := e.check(int64(len(snap))); err == nil {
			t.Errorf("a changed byte passed")
		}
		snap[100] ^= 1
	}
}
