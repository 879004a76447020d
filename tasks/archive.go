package tasks

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Archive is a backup archive that passed every check: its manifest (and
// the MAC over it), its small entries (PKI, inventory), read into memory,
// and its etcd snapshot, read through and checked but not written anywhere
// until ExtractSnapshot.
type Archive struct {
	Path     string
	SHA256   string // of the archive file
	Manifest BackupManifest
	Files    map[string][]byte // every entry but the snapshot
	// KeyID is the backup key whose MAC over the manifest matched; "" when
	// the archive was opened without authentication (Unauthenticated says why).
	KeyID           string
	Unauthenticated string
	Snapshot        string // local path of the extracted snapshot, after ExtractSnapshot
	snapshotSize    int64
}

// ErrArchive is a backup archive that cannot be restored: damaged,
// truncated, not a kubeforge backup, or not authenticated by the backup key.
type ErrArchive struct {
	Path   string
	Reason string
}

func (e *ErrArchive) Error() string {
	return fmt.Sprintf("the backup %s cannot be restored: %s; no host was touched", e.Path, e.Reason)
}

// maxSmallEntry bounds the entries read into memory (the manifest, PKI
// files, the inventory).
const maxSmallEntry = 16 << 20

// OpenArchive reads the archive at p and checks it completely before anything
// uses it, writing nothing: manifest.json first; then manifest.hmac, the MAC
// of the manifest under key (an archive without one, or made with another
// key, is refused unless allowUnauthenticated; one whose MAC under this key
// does not match was changed, and is always refused); every other entry's size
// and sha256 against the manifest, nothing missing and nothing extra; a gzip
// stream that ends where it should; and the checksum etcd appended to the
// snapshot. An archive whose entries would not fit the free space of dir,
// where ExtractSnapshot writes the snapshot, is refused before it is read.
func OpenArchive(p, dir string, key *BackupKey, allowUnauthenticated bool) (*Archive, error) {
	bad := func(format string, args ...any) error {
		return &ErrArchive{Path: p, Reason: fmt.Sprintf(format, args...)}
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, &ErrArchive{Path: p, Reason: err.Error()}
	}
	defer f.Close()
	whole := sha256.New()
	gz, err := gzip.NewReader(io.TeeReader(f, whole))
	if err != nil {
		return nil, bad("not a gzip stream (%v)", err)
	}
	a := &Archive{Path: p, Files: map[string][]byte{}}
	unauthenticated := func(why string) error {
		if allowUnauthenticated {
			a.Unauthenticated = why
			return nil
		}
		return bad("%s. Give the backup key this cluster's backups were made with: --backup-key FILE, or %s=FILE "+
			"(the key file used was %s); to restore an archive you trust without this check, pass --allow-unauthenticated",
			why, BackupKeyEnv, key)
	}
	var manifest []byte // manifest.json, exactly as written
	tr := tar.NewReader(gz)
	seen := map[string]bool{}
	for i := 0; ; i++ {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, bad("truncated or damaged after %d entries (%v)", i, err)
		}
		name := hdr.Name
		if hdr.Typeflag != tar.TypeReg || name != path.Clean(name) || strings.HasPrefix(name, "/") || strings.HasPrefix(name, "..") {
			return nil, bad("unexpected entry %q", name)
		}
		if seen[name] {
			return nil, bad("entry %s appears twice", name)
		}
		seen[name] = true
		if i == 0 {
			if name != "manifest.json" {
				return nil, bad("its first entry is %s, not manifest.json: it was not written by kubeforge backup", name)
			}
			if hdr.Size > maxSmallEntry {
				return nil, bad("manifest.json is %d bytes", hdr.Size)
			}
			if manifest, err = io.ReadAll(tr); err != nil {
				return nil, bad("read manifest.json: %v", err)
			}
			if err := json.Unmarshal(manifest, &a.Manifest); err != nil {
				return nil, bad("manifest.json: %v", err)
			}
			if err := a.Manifest.check(); err != nil {
				return nil, bad("manifest.json: %v", err)
			}
			continue
		}
		if i == 1 {
			if name == macName {
				if hdr.Size > maxSmallEntry {
					return nil, bad("%s is %d bytes", macName, hdr.Size)
				}
				b, err := io.ReadAll(tr)
				if err != nil {
					return nil, bad("read %s: %v", macName, err)
				}
				if err := key.checkManifest(manifest, b); errors.Is(err, errTampered) {
					return nil, bad("%v", err)
				} else if err != nil {
					if err := unauthenticated(err.Error()); err != nil {
						return nil, err
					}
				} else {
					a.KeyID = key.ID()
				}
				if err := fits(dir, a.Manifest.total()); err != nil {
					return nil, bad("%v", err)
				}
				continue
			}
			if err := unauthenticated("it carries no MAC (" + macName + "): it was written by a kubeforge before backups were authenticated, or its MAC was removed"); err != nil {
				return nil, err
			}
			if err := fits(dir, a.Manifest.total()); err != nil {
				return nil, bad("%v", err)
			}
		}
		want, listed := a.Manifest.Files[name]
		if !listed {
			return nil, bad("entry %s is not in manifest.json", name)
		}
		if err := a.Manifest.checkSize(name, hdr.Size); err != nil {
			return nil, bad("%v", err)
		}
		sum := sha256.New()
		if name == snapshotName {
			etcd := &etcdChecksum{h: sha256.New()}
			if _, err := io.Copy(io.MultiWriter(sum, etcd), tr); err != nil {
				return nil, bad("%s: truncated (%v)", name, err)
			}
			if err := checkSum(name, sum, want); err != nil {
				return nil, bad("%v", err)
			}
			if err := etcd.check(hdr.Size); err != nil {
				return nil, bad("%s: %v", name, err)
			}
			a.snapshotSize = hdr.Size
			continue
		}
		b, err := io.ReadAll(io.TeeReader(tr, sum))
		if err != nil {
			return nil, bad("truncated in %s (%v)", name, err)
		}
		if err := checkSum(name, sum, want); err != nil {
			return nil, bad("%v", err)
		}
		a.Files[name] = b
	}
	if !seen["manifest.json"] {
		return nil, bad("empty archive")
	}
	var missing []string
	for name := range a.Manifest.Files {
		if !seen[name] {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return nil, bad("entries listed in manifest.json are missing (truncated?): %s", strings.Join(missing, ", "))
	}
	// The gzip trailer (CRC and length) is checked once the stream is read to its end.
	if _, err := io.Copy(io.Discard, gz); err != nil {
		return nil, bad("truncated or damaged gzip stream (%v)", err)
	}
	if _, err := io.Copy(io.Discard, f); err != nil {
		return nil, bad("%v", err)
	}
	if a.Files["pki/ca.crt"] == nil || a.Files["pki/etcd/ca.crt"] == nil {
		return nil, bad("it holds no cluster CA (pki/ca.crt, pki/etcd/ca.crt)")
	}
	a.SHA256 = hex.EncodeToString(whole.Sum(nil))
	return a, nil
}

// checkSum compares the sha256 of an entry with the manifest's.
func checkSum(name string, sum hash.Hash, want string) error {
	if got := hex.EncodeToString(sum.Sum(nil)); got != want {
		return fmt.Errorf("entry %s has sha256 %s, manifest.json says %s: the archive was changed or damaged", name, short(got), short(want))
	}
	return nil
}

// check reports a manifest that lists no snapshot, or whose sizes do not
// cover exactly its files (an archive written before sizes were recorded
// has none).
func (m *BackupManifest) check() error {
	if len(m.Files) == 0 || m.Files[snapshotName] == "" {
		return fmt.Errorf("it lists no etcd snapshot")
	}
	if m.Sizes == nil {
		return nil
	}
	for name := range m.Files {
		n, ok := m.Sizes[name]
		if !ok || n < 0 {
			return fmt.Errorf("it gives no size for %s", name)
		}
		if name != snapshotName && n > maxSmallEntry {
			return fmt.Errorf("it says %s is %d bytes", name, n)
		}
	}
	if len(m.Sizes) != len(m.Files) {
		return fmt.Errorf("it gives sizes of entries it does not list")
	}
	return nil
}

// checkSize refuses an entry whose tar header says another size than the
// manifest (or, in an archive without sizes, a small entry too large to
// read into memory), before a byte of it is read.
func (m *BackupManifest) checkSize(name string, size int64) error {
	if want, ok := m.Sizes[name]; ok && size != want {
		return fmt.Errorf("entry %s is %d bytes in the archive, manifest.json says %d: the archive was changed or damaged", name, size, want)
	}
	if name != snapshotName && size > maxSmallEntry {
		return fmt.Errorf("entry %s is %d bytes", name, size)
	}
	return nil
}

// total is the bytes the manifest says the entries hold (0 without sizes).
func (m *BackupManifest) total() int64 {
	var n int64
	for _, s := range m.Sizes {
		n += s
	}
	return n
}

// fits refuses need bytes where the file system of dir (or of its nearest
// existing parent) has less free space.
func fits(dir string, need int64) error {
	for {
		if _, err := os.Stat(dir); err == nil || !errors.Is(err, fs.ErrNotExist) || filepath.Dir(dir) == dir {
			break
		}
		dir = filepath.Dir(dir)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("free space of %s: %w", dir, err)
	}
	free := uint64(st.Bavail) * uint64(st.Bsize)
	if need > 0 && uint64(need) > free {
		return fmt.Errorf("it holds %d bytes, and %s has only %d bytes free: make room, or restore from a workstation with more space", need, dir, free)
	}
	return nil
}

// etcdChecksum hashes what is written to it but the last sha256.Size bytes,
// which it keeps: the checksum etcd appends to a snapshot.
type etcdChecksum struct {
	h    hash.Hash
	tail []byte
}

func (e *etcdChecksum) Write(p []byte) (int, error) {
	if len(p) >= sha256.Size {
		e.h.Write(e.tail)
		e.h.Write(p[:len(p)-sha256.Size])
		e.tail = append(e.tail[:0], p[len(p)-sha256.Size:]...)
		return len(p), nil
	}
	b := append(e.tail, p...) // fewer than 2*sha256.Size bytes
	if len(b) > sha256.Size {
		e.h.Write(b[:len(b)-sha256.Size])
		b = b[len(b)-sha256.Size:]
	}
	e.tail = append(e.tail[:0:0], b...)
	return len(p), nil
}

// check checks the size bytes written: the checksum at their end holds
// (the check `etcdutl snapshot restore` makes).
func (e *etcdChecksum) check(size int64) error {
	if size < sha256.Size || (size-sha256.Size)%512 != 0 {
		return fmt.Errorf("%d bytes: no checksum at its end", size)
	}
	if !bytes.Equal(e.h.Sum(nil), e.tail) {
		return fmt.Errorf("its checksum does not match its content")
	}
	return nil
}

// ExtractSnapshot writes the snapshot to a private (0600) temporary file in
// dir; Close removes it. It reads the archive again and checks the snapshot
// again as it writes it (its header's size against the manifest before a
// byte is written, the free space of dir, its sha256, etcd's checksum), so an
// archive changed since OpenArchive leaves nothing behind.
func (a *Archive) ExtractSnapshot(dir string) (err error) {
	bad := func(format string, args ...any) error {
		return &ErrArchive{Path: a.Path, Reason: fmt.Sprintf(format, args...)}
	}
	f, err := os.Open(a.Path)
	if err != nil {
		return &ErrArchive{Path: a.Path, Reason: err.Error()}
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return bad("not a gzip stream (%v)", err)
	}
	tr := tar.NewReader(gz)
	for {
		hdr, err := tr.Next()
		if err != nil {
			return bad("changed since it was checked: no %s (%v)", snapshotName, err)
		}
		if hdr.Name != snapshotName {
			continue
		}
		if hdr.Size != a.snapshotSize {
			return bad("changed since it was checked: %s is %d bytes, it was %d", snapshotName, hdr.Size, a.snapshotSize)
		}
		if err := fits(dir, hdr.Size); err != nil {
			return bad("%v", err)
		}
		return a.writeSnapshot(dir, tr, hdr.Size)
	}
}

// writeSnapshot copies size bytes of r to a temporary file in dir, checked.
func (a *Archive) writeSnapshot(dir string, r io.Reader, size int64) (err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("extract the snapshot: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".restore-snapshot-*")
	if err != nil {
		return fmt.Errorf("extract the snapshot: %w", err)
	}
	defer func() {
		tmp.Close()
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	sum, etcd := sha256.New(), &etcdChecksum{h: sha256.New()}
	n, err := io.Copy(io.MultiWriter(tmp, sum, etcd), io.LimitReader(r, size))
	if err != nil {
		return &ErrArchive{Path: a.Path, Reason: fmt.Sprintf("%s: truncated (%v)", snapshotName, err)}
	}
	if n != size {
		return &ErrArchive{Path: a.Path, Reason: fmt.Sprintf("%s: %d of %d bytes", snapshotName, n, size)}
	}
	if err := checkSum(snapshotName, sum, a.Manifest.Files[snapshotName]); err != nil {
		return &ErrArchive{Path: a.Path, Reason: err.Error()}
	}
	if err := etcd.check(size); err != nil {
		return &ErrArchive{Path: a.Path, Reason: snapshotName + ": " + err.Error()}
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("extract the snapshot: %w", err)
	}
	a.Snapshot = tmp.Name()
	return nil
}

// Close removes the extracted snapshot.
func (a *Archive) Close() {
	if a != nil && a.Snapshot != "" {
		os.Remove(a.Snapshot)
	}
}

func short(sum string) string {
	if len(sum) > 12 {
		return sum[:12] + "…"
	}
	return sum
}
