package tasks

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/kubeforge/kubeforge/internal/atomicfile"
	"github.com/kubeforge/kubeforge/manifests"
)

// BackupManifest is manifest.json, the first entry of a backup archive: what
// the archive holds, and the sha256 and size of every other entry. The
// second entry, manifest.hmac, authenticates it (see BackupKey).
type BackupManifest struct {
	Cluster           string            `json:"cluster"`
	ClusterID         string            `json:"clusterID"` // etcd's, hex
	Revision          int64             `json:"revision"`  // etcd's revision when the snapshot started
	Members           []string          `json:"members"`   // name=peerURL
	KubernetesVersion string            `json:"kubernetesVersion"`
	Time              time.Time         `json:"time"`
	Via               string            `json:"via"`             // the control plane whose etcd made the snapshot
	Files             map[string]string `json:"files"`           // entry -> sha256, hex
	Sizes             map[string]int64  `json:"sizes,omitempty"` // entry -> bytes (absent in archives of older kubeforge)
}

// BackupResult is what `kubeforge backup` prints.
type BackupResult struct {
	BackupManifest
	Path   string // the archive
	SHA256 string // of the archive
	Size   int64  // of the snapshot
	// Key is the backup key file whose MAC the archive carries, KeyID its
	// ID; KeyCreated: this backup made the key file.
	Key        string
	KeyID      string
	KeyCreated bool
}

// BackupOptions are the choices of `kubeforge backup`.
type BackupOptions struct {
	To  string // the archive, or a directory for it ("": <state dir>/backups)
	Key string // the backup key file ("": $KUBEFORGE_BACKUP_KEY, else <state dir>/backup.key)
}

// snapshotName is the snapshot's entry in the archive.
const snapshotName = "etcd/snapshot.db"

// LoadPKI loads the state dir's PKI; a backup or a teardown needs it and must
// not make a new one.
func LoadPKI(_ context.Context, env *Env) error {
	if err := env.loadPKI(); err != nil {
		return fmt.Errorf("no cluster PKI to read in %s: %w", env.PKIDir(), err)
	}
	return nil
}

// TakeBackup returns the step that writes a backup archive: a snapshot
// taken with etcd's own API from a live voting member, checked against the
// checksum etcd appends, with the cluster PKI and the inventory;
// manifest.json listing the sha256 and size of each; manifest.hmac, its
// HMAC under the backup key (made on the first backup when it is the state
// dir's). The archive is written to a temporary name, synced and renamed,
// mode 0600: it holds the CA keys and every Secret of the cluster.
func TakeBackup(o BackupOptions) LocalFunc {
	return func(ctx context.Context, env *Env) error {
		via, members, err := env.snapshotSource()
		if err != nil {
			return err
		}
		key, created, err := backupKey(env, o.Key)
		if err != nil {
			return err
		}
		now := time.Now().UTC()
		path, err := backupPath(env, o.To, now)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		cli, err := etcdClient(ctx, env, via)
		if err != nil {
			return err
		}
		defer cli.Close()
		endpoint := "https://" + net.JoinHostPort(via.NodeIP(), strconv.Itoa(manifests.EtcdClientPort))
		st, err := cli.Status(ctx, endpoint)
		if err != nil {
			return fmt.Errorf("etcd status on %s: %w", via.Name, err)
		}
		// The snapshot goes to a private temporary file beside the archive, hashed on the way.
		snap, err := os.CreateTemp(filepath.Dir(path), ".snapshot-*")
		if err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		defer os.Remove(snap.Name())
		defer snap.Close()
		rc, err := cli.Snapshot(ctx)
		if err != nil {
			return fmt.Errorf("etcd snapshot on %s: %w", via.Name, err)
		}
		sum, etcd := sha256.New(), &etcdChecksum{h: sha256.New()}
		size, err := io.Copy(io.MultiWriter(snap, sum, etcd), rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("receive the etcd snapshot from %s: %w", via.Name, err)
		}
		if err := etcd.check(size); err != nil {
			return fmt.Errorf("the snapshot from %s is damaged: %w", via.Name, err)
		}
		m := BackupManifest{Cluster: env.Inv.Cluster.Name, ClusterID: hexID(st.Header.ClusterId), Revision: st.Header.Revision,
			Members: members, KubernetesVersion: env.serverVersion(ctx), Time: now, Via: via.Name,
			Files: map[string]string{snapshotName: hex.EncodeToString(sum.Sum(nil))}, Sizes: map[string]int64{snapshotName: size}}
		extra, err := backupFiles(env)
		if err != nil {
			return err
		}
		for name, data := range extra {
			s := sha256.Sum256(data)
			m.Files[name] = hex.EncodeToString(s[:])
			m.Sizes[name] = int64(len(data))
		}
		archiveSum, err := writeArchive(path, m, key, extra, snap, size)
		if err != nil {
			return err
		}
		env.mu.Lock()
		env.Backup = &BackupResult{BackupManifest: m, Path: path, SHA256: archiveSum, Size: size,
			Key: key.Path, KeyID: key.ID(), KeyCreated: created}
		env.mu.Unlock()
		return nil
	}
}

// snapshotSource picks the control plane whose etcd makes the snapshot: the
// first, in the file's order, whose member answered and votes.
func (e *Env) snapshotSource() (*Host, []string, error) {
	cps := e.Hosts(e.Inv.ControlPlanes())
	e.mu.Lock()
	defer e.mu.Unlock()
	var why []string
	for _, h := range cps {
		p := e.probes[h.Name]
		if p == nil || p.etcd == nil {
			if p != nil && p.err != nil {
				why = append(why, h.Name+": "+p.err.Error())
			}
			continue
		}
		if m := p.etcd.member(h); m == nil || m.Learner {
			continue
		}
		var members []string
		for _, m := range p.etcd.Members {
			name := m.Name
			if name == "" {
				name = hexID(m.ID)
			}
			members = append(members, name+"="+m.PeerURL)
		}
		sort.Strings(members)
		return h, members, nil
	}
	return nil, nil, fmt.Errorf("no etcd voting member answered, so there is nothing to take a snapshot from (%v)", why)
}

// serverVersion is the API server's version, or the inventory's when no API
// server answers.
func (e *Env) serverVersion(ctx context.Context) string {
	if err := ConnectAPI(ctx, e); err == nil {
		if v, err := e.Kube.Discovery().ServerVersion(); err == nil {
			return v.GitVersion
		}
	}
	return e.Inv.Cluster.KubernetesVersion
}

// backupPath is where the archive goes: out itself, or a file named after the
// cluster and the time in the directory out (default <state dir>/backups).
func backupPath(env *Env, out string, now time.Time) (string, error) {
	name := fmt.Sprintf("%s-%s.tar.gz", env.Inv.Cluster.Name, now.Format("20060102T150405Z"))
	if out == "" {
		return filepath.Join(env.StateDir, "backups", name), nil
	}
	if fi, err := os.Stat(out); err == nil && fi.IsDir() {
		return filepath.Join(out, name), nil
	}
	if _, err := os.Stat(out); err == nil {
		return "", fmt.Errorf("backup: %s exists; name a new file or a directory", out)
	}
	return filepath.Abs(out)
}

// backupFiles are the archive's other entries: the state dir's PKI and the
// inventory file.
func backupFiles(env *Env) (map[string][]byte, error) {
	files := map[string][]byte{}
	dir := env.PKIDir()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		b, err := os.ReadFile(p)
		files["pki/"+filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read the PKI: %w", err)
	}
	inv, err := os.ReadFile(env.Inv.Path)
	if err != nil {
		return nil, fmt.Errorf("read the inventory: %w", err)
	}
	files["inventory.yaml"] = inv
	return files, nil
}

// writeArchive writes the tar.gz at path through a temporary name: the
// manifest, its MAC under key, the files, then the snapshot; it returns the
// archive's sha256.
func writeArchive(path string, m BackupManifest, key *BackupKey, files map[string][]byte, snap *os.File, size int64) (string, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".backup-*")
	if err != nil {
		return "", fmt.Errorf("backup: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := tmp.Chmod(0o600); err != nil {
		return "", err
	}
	sum := sha256.New()
	gz := gzip.NewWriter(io.MultiWriter(tmp, sum))
	tw := tar.NewWriter(gz)
	add := func(name string, size int64, r io.Reader) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: size, ModTime: m.Time, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := io.Copy(tw, r)
		return err
	}
	mj, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return "", err
	}
	mac, err := key.SignManifest(mj)
	if err != nil {
		return "", err
	}
	if err := add("manifest.json", int64(len(mj)), bytes.NewReader(mj)); err != nil {
		return "", fmt.Errorf("write the archive: %w", err)
	}
	if err := add(macName, int64(len(mac)), bytes.NewReader(mac)); err != nil {
		return "", fmt.Errorf("write the archive: %w", err)
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := add(n, int64(len(files[n])), bytes.NewReader(files[n])); err != nil {
			return "", fmt.Errorf("write the archive: %w", err)
		}
	}
	if _, err := snap.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	if err := add(snapshotName, size, snap); err != nil {
		return "", fmt.Errorf("write the archive: %w", err)
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	if err := gz.Close(); err != nil {
		return "", err
	}
	if err := tmp.Sync(); err != nil {
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("backup: %w", err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(path)); err != nil {
		return "", err
	}
	return hex.EncodeToString(sum.Sum(nil)), nil
}
