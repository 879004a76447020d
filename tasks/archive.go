package tasks

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
)

// Archive is a backup archive that passed every check: its manifest, its
// small entries (PKI, inventory) and its etcd snapshot, extracted to a
// private temporary file.
type Archive struct {
	Path     string
	SHA256   string // of the archive file
	Manifest BackupManifest
	Files    map[string][]byte // every entry but the snapshot
	Snapshot string            // local path of the extracted snapshot
}

// ErrArchive is a backup archive that cannot be restored: damaged,
// truncated, or not a kubeforge backup.
type ErrArchive struct {
	Path   string
	Reason string
}

func (e *ErrArchive) Error() string {
	return fmt.Sprintf("the backup %s cannot be restored: %s; no host was touched", e.Path, e.Reason)
}

// maxSmallEntry bounds the entries read into memory (PKI files, the inventory).
const maxSmallEntry = 16 << 20

// OpenArchive reads the archive at p and checks it completely before anything
// uses it: manifest.json first, every other entry's sha256 against the
// manifest, nothing missing and nothing extra, a gzip stream that ends where
// it should, and the checksum etcd appended to the snapshot. The snapshot goes
// to a 0600 temporary file in dir; Close removes it.
func OpenArchive(p, dir string) (a *Archive, err error) {
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
	a = &Archive{Path: p, Files: map[string][]byte{}}
	defer func() {
		if err != nil {
			a.Close()
			a = nil
		}
	}()
	tr := tar.NewReader(gz)
	seen := map[string]bool{}
	for i := 0; ; i++ {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return a, bad("truncated or damaged after %d entries (%v)", i, err)
		}
		name := hdr.Name
		if hdr.Typeflag != tar.TypeReg || name != path.Clean(name) || strings.HasPrefix(name, "/") || strings.HasPrefix(name, "..") {
			return a, bad("unexpected entry %q", name)
		}
		if seen[name] {
			return a, bad("entry %s appears twice", name)
		}
		seen[name] = true
		if i == 0 {
			if name != "manifest.json" {
				return a, bad("its first entry is %s, not manifest.json: it was not written by kubeforge backup", name)
			}
			b, err := io.ReadAll(io.LimitReader(tr, maxSmallEntry))
			if err != nil {
				return a, bad("read manifest.json: %v", err)
			}
			if err := json.Unmarshal(b, &a.Manifest); err != nil {
				return a, bad("manifest.json: %v", err)
			}
			if len(a.Manifest.Files) == 0 || a.Manifest.Files[snapshotName] == "" {
				return a, bad("manifest.json lists no etcd snapshot")
			}
			continue
		}
		want, listed := a.Manifest.Files[name]
		if !listed {
			return a, bad("entry %s is not in manifest.json", name)
		}
		sum := sha256.New()
		if name == snapshotName {
			if err := a.extractSnapshot(dir, io.TeeReader(tr, sum), hdr.Size); err != nil {
				return a, bad("%s: %v", name, err)
			}
		} else {
			if hdr.Size > maxSmallEntry {
				return a, bad("entry %s is %d bytes", name, hdr.Size)
			}
			b, err := io.ReadAll(io.TeeReader(tr, sum))
			if err != nil {
				return a, bad("truncated in %s (%v)", name, err)
			}
			a.Files[name] = b
		}
		if got := hex.EncodeToString(sum.Sum(nil)); got != want {
			return a, bad("entry %s has sha256 %s, manifest.json says %s: the archive was changed or damaged", name, short(got), short(want))
		}
	}
	if !seen["manifest.json"] {
		return a, bad("empty archive")
	}
	var missing []string
	for name := range a.Manifest.Files {
		if !seen[name] {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return a, bad("entries listed in manifest.json are missing (truncated?): %s", strings.Join(missing, ", "))
	}
	// The gzip trailer (CRC and length) is checked once the stream is read to its end.
	if _, err := io.Copy(io.Discard, gz); err != nil {
		return a, bad("truncated or damaged gzip stream (%v)", err)
	}
	if _, err := io.Copy(io.Discard, f); err != nil {
		return a, bad("%v", err)
	}
	if a.Files["pki/ca.crt"] == nil || a.Files["pki/etcd/ca.crt"] == nil {
		return a, bad("it holds no cluster CA (pki/ca.crt, pki/etcd/ca.crt)")
	}
	a.SHA256 = hex.EncodeToString(whole.Sum(nil))
	return a, nil
}

// extractSnapshot writes the snapshot to a private temporary file in dir and
// checks the sha256 etcd appended to it.
func (a *Archive) extractSnapshot(dir string, r io.Reader, size int64) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".restore-snapshot-*")
	if err != nil {
		return err
	}
	a.Snapshot = tmp.Name()
	defer tmp.Close()
	n, err := io.Copy(tmp, r)
	if err != nil {
		return fmt.Errorf("truncated (%v)", err)
	}
	if n != size {
		return fmt.Errorf("%d of %d bytes", n, size)
	}
	if err := verifySnapshot(tmp, n); err != nil {
		return err
	}
	return tmp.Close()
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
