package tasks

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/apimachinery/pkg/util/wait"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeforge/kubeforge/manifests"
	"github.com/kubeforge/kubeforge/pki"
	"github.com/kubeforge/kubeforge/ssh"
)

// RestoreOptions are the choices of `kubeforge restore`.
type RestoreOptions struct {
	From string // the backup archive
	// Key is the backup key file ("": $KUBEFORGE_BACKUP_KEY, else
	// <state dir>/backup.key).
	Key string
	// AllowUnauthenticated restores an archive whose MAC is absent (an older
	// kubeforge's), cannot be checked (no key file) or does not match.
	AllowUnauthenticated bool
	// AllowOtherVersion restores a snapshot taken at another Kubernetes minor
	// than the one the cluster runs or the inventory names.
	AllowOtherVersion bool
}

// Restore is what a restore run learned and decided; the CLI prints it.
type Restore struct {
	Archive *Archive     `json:"-"`
	Plan    *RestorePlan `json:"plan"`
	// After the restore: etcd as it answered.
	ClusterID string   `json:"clusterID,omitempty"`
	Members   []string `json:"members,omitempty"`
	Revision  int64    `json:"revision,omitempty"`
	Nodes     []string `json:"nodes,omitempty"` // Nodes whose kubelet renewed its Lease after the restore
	Waiting   []string `json:"waiting,omitempty"`
	// RotateTo: the archive's objects are encrypted with keys the state dir
	// had dropped since (addArchiveKeys): a rotation to this key, the state
	// dir's, rewrites them and drops those keys again.
	RotateTo string `json:"rotateTo,omitempty"`
}

// RestorePlan is what restore does, decided from the archive and what the
// control planes hold.
type RestorePlan struct {
	Archive           string        `json:"archive"`
	SHA256            string        `json:"sha256"`
	Cluster           string        `json:"cluster"`
	FromClusterID     string        `json:"fromClusterID"`
	Revision          int64         `json:"revision"`
	KubernetesVersion string        `json:"kubernetesVersion"` // the archive's
	Taken             time.Time     `json:"taken"`
	KeyID             string        `json:"keyID,omitempty"`           // the backup key that authenticated the archive
	Unauthenticated   string        `json:"unauthenticated,omitempty"` // why it was restored without (--allow-unauthenticated)
	Token             string        `json:"token"`                     // --initial-cluster-token of the restored etcd; a resumed restore keeps it
	Resumed           bool          `json:"resumed"`
	Members           []string      `json:"members"` // name=peerURL: the inventory's control planes
	Hosts             []RestoreHost `json:"hosts"`
}

// RestoreHost is what restore does on one control plane.
type RestoreHost struct {
	Host string `json:"host"`
	// Install: the host has no control plane of kubeforge's (a new or
	// reinstalled host): it receives every control-plane file.
	Install bool `json:"install,omitempty"`
	// Stop: static pods to take down before the data is replaced.
	Stop bool `json:"stop,omitempty"`
	// OldData: the host holds etcd data (its facts say so).
	OldData bool `json:"oldData,omitempty"`
	// KeepOldData is where etcd data found in the data directory is moved,
	// never deleted ("" when the restored data is in place already).
	KeepOldData string `json:"keepOldData,omitempty"`
	// Placed: a resumed restore finds the restored data there already.
	Placed bool `json:"placed,omitempty"`
}

// restoreMarker is /var/lib/kubeforge/restore.json on a control plane while
// a restore is under way: a resumed run takes the same token and skips what
// is done. The last step removes it.
type restoreMarker struct {
	Archive string    `json:"archive"` // sha256
	Token   string    `json:"token"`
	Phase   string    `json:"phase"` // "stopped", then "placed"
	Time    time.Time `json:"time"`
}

const (
	restoreMarkerPath = "/var/lib/kubeforge/restore.json"
	// heldManifests is where restore keeps the control-plane static pods it took down.
	heldManifests = "/etc/kubernetes/kubeforge-restore-held"
)

// restoreBump is how far the restored revision is moved on, with the old
// revisions marked compacted, as etcd recommends for a restore under
// Kubernetes: every watch and cache sees that history changed and relists.
const restoreBump = 1_000_000_000

// controlPlanePods are the static pods restore stops and starts.
var controlPlanePods = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}

// VerifyArchive returns the first step of restore: it opens and checks the
// archive (its MAC under the backup key too) before any host is contacted,
// and refuses one whose CA is not the state dir's. It writes nothing: the
// PKI the run uses, the state dir's or, when the state dir has none, the
// archive's, is held in memory until SaveRestoreState.
func VerifyArchive(o RestoreOptions) LocalFunc {
	return func(_ context.Context, env *Env) error {
		keyPath, _ := BackupKeyPath(env.StateDir, o.Key)
		key, err := LoadBackupKey(keyPath)
		if err != nil {
			return err
		}
		if key.present() {
			env.warnOpenKey(key)
		}
		a, err := OpenArchive(o.From, env.restoreDir(), key, o.AllowUnauthenticated)
		if err != nil {
			return err
		}
		if a.Unauthenticated != "" {
			env.warn(fmt.Sprintf("the backup %s is restored without authentication (--allow-unauthenticated): %s", a.Path, a.Unauthenticated))
		}
		env.mu.Lock()
		env.Restore = &Restore{Archive: a}
		env.mu.Unlock()
		b, err := pki.Load(env.PKIDir())
		if err != nil {
			return fmt.Errorf("load PKI: %w", err)
		}
		if b.CACert() == nil {
			env.Log.Info("the state dir has no PKI: taking the archive's once every check has passed", "dir", env.PKIDir())
			if b, err = archivePKI(a.Files); err != nil {
				return err
			}
			env.PKI = b
			return nil
		}
		if !samePEM(b.CACertPEM(), a.Files["pki/ca.crt"]) {
			return &ErrRefused{Reason: fmt.Sprintf("the backup %s is of another cluster: its CA is not the CA in %s. "+
				"Restore it with the state dir of the cluster it came from (--state-dir), or with an empty state dir, "+
				"which takes the archive's PKI", a.Path, env.PKIDir())}
		}
		if m := a.Manifest; m.Cluster != env.Inv.Cluster.Name {
			env.warn(fmt.Sprintf("the backup is of cluster %q; the inventory names %q (same CA: restoring)", m.Cluster, env.Inv.Cluster.Name))
		}
		if err := env.addArchiveKeys(b, a.Files); err != nil {
			return err
		}
		env.PKI = b
		return nil
	}
}

// restoreDir is where restore extracts the snapshot and makes each member's data.
func (e *Env) restoreDir() string { return filepath.Join(e.StateDir, "restore") }

// samePEM reports whether two PEM texts hold the same first certificate.
func samePEM(a, b []byte) bool {
	pa, _ := pem.Decode(a)
	pb, _ := pem.Decode(b)
	return pa != nil && pb != nil && bytes.Equal(pa.Bytes, pb.Bytes)
}

// archivePKI loads the archive's pki/ entries as a bundle. pki.Load reads a
// directory, so they go to a private temporary one outside the state dir,
// removed before it returns; SaveRestoreState writes the bundle to the state
// dir.
func archivePKI(files map[string][]byte) (*pki.Bundle, error) {
	tmp, err := os.MkdirTemp("", "kubeforge-restore-pki-")
	if err != nil {
		return nil, fmt.Errorf("read the archive's PKI: %w", err)
	}
	defer os.RemoveAll(tmp)
	for name, data := range files {
		rel, ok := strings.CutPrefix(name, "pki/")
		if !ok {
			continue
		}
		p := filepath.Join(tmp, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return nil, fmt.Errorf("read the archive's PKI: %w", err)
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			return nil, fmt.Errorf("read the archive's PKI: %w", err)
		}
	}
	b, err := pki.Load(tmp)
	if err != nil {
		return nil, fmt.Errorf("read the archive's PKI: %w", err)
	}
	if b.CACert() == nil {
		return nil, fmt.Errorf("read the archive's PKI: it holds no cluster CA")
	}
	return b, nil
}

// RestoreCerts is restore's certs step: the PKI VerifyArchive chose, with
// what is missing or invalid made (a new host's certificates), in memory
// only; SaveRestoreState writes it once the restore is decided.
func RestoreCerts(_ context.Context, env *Env) error {
	if env.PKI == nil {
		return fmt.Errorf("restore: no PKI: restore/verify did not run")
	}
	return env.ensurePKI(env.PKI)
}

// SaveRestoreState runs once every check has passed and the restore is
// decided: it writes the run's PKI (the archive's, when the state dir had
// none) and admin.conf to the state dir, each file through a temporary name
// with its final mode, and extracts the snapshot to a private file.
func SaveRestoreState(_ context.Context, env *Env) error {
	// The snapshot first: it is checked again as it is written, and a refusal
	// there must leave the state dir's PKI as it was.
	if err := env.Restore.Archive.ExtractSnapshot(env.restoreDir()); err != nil {
		return err
	}
	// The rotation first: the keys it moves to are the state dir's already.
	if to := env.Restore.RotateTo; to != "" {
		if err := env.saveRotation(&Rotation{Target: to, Started: time.Now().UTC()}); err != nil {
			return err
		}
	}
	return env.savePKI()
}

// addArchiveKeys gives the state dir's PKI b the archive's encryption keys
// it lacks (a rotation since the backup dropped them), so the API servers
// read the restored objects; they keep writing with b's first key, and a
// rotation to that key, which up finishes, rewrites the objects and drops
// the archive's keys again.
func (e *Env) addArchiveKeys(b *pki.Bundle, files map[string][]byte) error {
	ab, err := archivePKI(files)
	if err != nil {
		return err
	}
	keys, old := b.EncryptionKeys(), ab.EncryptionKeys()
	var added []pki.EncryptionKey
	for _, k := range old {
		if k.Provider != pki.Identity && keyIndex(keys, k.Name) < 0 {
			added = append(added, k)
		}
	}
	if len(keys) == 0 {
		if len(added) > 0 {
			b.SetEncryptionKeys(old)
			b.SetEncryptionResources(ab.EncryptionResources())
		}
		return nil
	}
	if len(added) > 0 {
		at := len(keys)
		if keys[at-1].Provider == pki.Identity {
			at--
		}
		keys = slices.Insert(keys, at, added...)
		b.SetEncryptionKeys(keys)
		e.warn(fmt.Sprintf("the backup's objects are encrypted with %v, which the cluster dropped since: they are kept to read them, and the next `kubeforge up` rewrites the objects with %s and drops them", added, keys[0]))
	}
	// Keys beyond the first and the identity provider (added now, or by a
	// restore that was cut short and is resumed) go through a rotation.
	extra := slices.ContainsFunc(keys[1:], func(k pki.EncryptionKey) bool { return k.Provider != pki.Identity })
	if extra && keys[0].Provider != pki.Identity {
		e.Restore.RotateTo = keys[0].Name
	}
	return nil
}

// PlanRestore returns the step that decides the restore from what the control
// planes hold: the Kubernetes minor they run against the archive's, a
// restore under way (its marker), who has data to keep and pods to stop.
func PlanRestore(o RestoreOptions) LocalFunc {
	return func(ctx context.Context, env *Env) error {
		r := env.Restore
		a := r.Archive
		m := a.Manifest
		cps := env.Hosts(env.Inv.ControlPlanes())
		if err := checkRestoreVersion(ctx, env, m.KubernetesVersion, o.AllowOtherVersion); err != nil {
			return err
		}
		p := &RestorePlan{Archive: a.Path, SHA256: a.SHA256, Cluster: m.Cluster, FromClusterID: m.ClusterID,
			Revision: m.Revision, KubernetesVersion: m.KubernetesVersion, Taken: m.Time,
			KeyID: a.KeyID, Unauthenticated: a.Unauthenticated}
		var members []string
		for _, cp := range cps {
			members = append(members, cp.Name+"="+manifests.EtcdPeerURL(cp.Host))
		}
		sort.Strings(members)
		p.Members = members
		stamp := time.Now().UTC().Format("20060102T150405Z")
		for _, cp := range cps {
			mk := cp.restoreMarker()
			if mk != nil && mk.Archive == a.SHA256 && p.Token == "" {
				p.Token, p.Resumed = mk.Token, true
			}
		}
		if p.Token == "" {
			b := make([]byte, 6)
			if _, err := rand.Read(b); err != nil {
				return err
			}
			p.Token = "kubeforge-restore-" + hex.EncodeToString(b)
		}
		for _, cp := range cps {
			f := cp.Facts
			rh := RestoreHost{Host: cp.Name, Install: !f.StaticPods && !f.HeldPods, Stop: f.StaticPods}
			mk := cp.restoreMarker()
			rh.Placed = mk != nil && mk.Token == p.Token && mk.Phase == "placed"
			if !rh.Placed {
				// Whatever the facts say, data found in the data directory is moved here, never deleted.
				rh.OldData = f.EtcdData
				rh.KeepOldData = manifests.EtcdDataDirOf(env.Inv) + ".before-restore-" + stamp
			}
			p.Hosts = append(p.Hosts, rh)
		}
		// Every member's flags name the whole restored membership; with data
		// present etcd reads its membership from the data, and "existing"
		// keeps a member whose data went missing from founding a cluster alone.
		params := manifests.EtcdParams{InitialCluster: strings.Join(members, ","), InitialClusterState: "existing"}
		env.mu.Lock()
		env.etcdParams = map[string]manifests.EtcdParams{}
		for _, cp := range cps {
			env.etcdParams[cp.Name] = params
		}
		env.mu.Unlock()
		r.Plan = p
		return nil
	}
}

// checkRestoreVersion refuses a snapshot of another Kubernetes minor than the
// one the control planes run (the API server's version, else the kubelets')
// or the inventory names, unless allowed.
func checkRestoreVersion(ctx context.Context, env *Env, archived string, allow bool) error {
	av, err := version.ParseGeneric(archived)
	if err != nil {
		return fmt.Errorf("the backup names Kubernetes version %q: %w", archived, err)
	}
	running := map[string]string{}
	env.mu.Lock()
	var up []string
	for name, p := range env.probes {
		if p.apiUp {
			up = append(up, name)
		}
	}
	env.mu.Unlock()
	sort.Strings(up)
	if len(up) > 0 {
		env.Cluster = &ClusterFacts{APIUp: up}
		if err := ConnectAPI(ctx, env); err == nil {
			if v, err := env.Kube.Discovery().ServerVersion(); err == nil {
				running["the API server"] = v.GitVersion
			}
		}
	}
	if len(running) == 0 {
		for _, cp := range env.Hosts(env.Inv.ControlPlanes()) {
			if v := cp.Facts.KubeletVersion; v != "" {
				running["the kubelet on "+cp.Name] = v
			}
		}
	}
	running["the inventory"] = env.Inv.Cluster.KubernetesVersion
	var diff []string
	for who, v := range running {
		if rv, err := version.ParseGeneric(v); err == nil && (rv.Major() != av.Major() || rv.Minor() != av.Minor()) {
			diff = append(diff, who+" is "+v)
		}
	}
	if len(diff) == 0 {
		return nil
	}
	sort.Strings(diff)
	msg := fmt.Sprintf("the backup was taken at Kubernetes %s but %s", archived, strings.Join(diff, ", "))
	if allow {
		env.warn(msg + " (--allow-other-version)")
		return nil
	}
	return &ErrRefused{Reason: msg + ": API objects stored by another minor may not be served the same way. " +
		"Restore onto the version the backup was taken at (cluster.kubernetesVersion), or pass --allow-other-version"}
}

// restoreMarker is the marker found on the host, if any.
func (h *Host) restoreMarker() *restoreMarker {
	if h.Facts == nil || h.Facts.RestoreMarker == "" {
		return nil
	}
	var m restoreMarker
	if json.Unmarshal([]byte(h.Facts.RestoreMarker), &m) != nil {
		return nil
	}
	return &m
}

func (r *Restore) hostPlan(name string) *RestoreHost {
	for i := range r.Plan.Hosts {
		if r.Plan.Hosts[i].Host == name {
			return &r.Plan.Hosts[i]
		}
	}
	return nil
}

// writeMarker records on h that a restore of this plan reached phase.
func writeMarker(ctx context.Context, h *Host, p *RestorePlan, phase string) error {
	b, err := json.Marshal(restoreMarker{Archive: p.SHA256, Token: p.Token, Phase: phase, Time: time.Now().UTC()})
	if err != nil {
		return err
	}
	script := "set -e; mkdir -p " + dirOf(restoreMarkerPath) + "; printf '%s\\n' " + ssh.Quote(string(b)) + " > " + restoreMarkerPath + ".tmp; mv -f " +
		restoreMarkerPath + ".tmp " + restoreMarkerPath
	if _, err := h.Client.Run(ctx, script); err != nil {
		return fmt.Errorf("record the restore on %s: %w", h.Name, err)
	}
	return nil
}

// StopForRestore takes the control-plane static pods down on h (their
// manifests are held aside, not deleted) and waits until etcd and the API
// server have let go of their ports.
func StopForRestore(ctx context.Context, env *Env, h *Host) error {
	p := env.Restore.Plan
	rh := env.Restore.hostPlan(h.Name)
	if rh.Placed {
		return nil
	}
	if err := writeMarker(ctx, h, p, "stopped"); err != nil {
		return err
	}
	var hold strings.Builder
	fmt.Fprintf(&hold, "set -e; install -d -m 0700 %s\n", heldManifests)
	for _, pod := range controlPlanePods {
		fmt.Fprintf(&hold, "if [ -f /etc/kubernetes/manifests/%[1]s.yaml ]; then mv -f /etc/kubernetes/manifests/%[1]s.yaml %[2]s/%[1]s.yaml; echo %[1]s; fi\n", pod, heldManifests)
	}
	out, err := h.Client.Run(ctx, hold.String())
	if err != nil {
		return fmt.Errorf("hold the control-plane manifests: %w", err)
	}
	for _, pod := range strings.Fields(out) {
		h.Changed(Change{Kind: ChangeHost, What: "stopped " + pod})
	}
	var busy []int
	err = wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		busy, err = listeningOn(ctx, h, manifests.EtcdClientPort, manifests.EtcdPeerPort, pki.APIServerPort)
		return len(busy) == 0, err
	})
	if err != nil {
		return fmt.Errorf("etcd or the API server on %s did not stop within 2m after their manifests were held (still listening on %v): "+
			"is the kubelet running (`systemctl status kubelet`)? Stop the containers (`crictl ps`, `crictl stop`) and run restore again: %w",
			h.Name, busy, err)
	}
	return nil
}

// PlaceEtcdData makes h's etcd data directory from the snapshot, on the
// workstation, with etcd's own restore code (the membership is the
// inventory's control planes, under the plan's token, so every member agrees
// on the new cluster ID), streams it to the host beside the data directory,
// moves the old data aside (kept, never deleted) and renames the new into place.
func PlaceEtcdData(ctx context.Context, env *Env, h *Host) error {
	r := env.Restore
	p, rh := r.Plan, r.hostPlan(h.Name)
	if rh.Placed {
		h.Log.Info("unchanged", "what", "etcd data (restored by an earlier run)")
		return nil
	}
	work, err := os.MkdirTemp(env.restoreDir(), h.Name+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	out := filepath.Join(work, "data")
	err = snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath:        r.Archive.Snapshot,
		Name:                h.Name,
		OutputDataDir:       out,
		PeerURLs:            []string{manifests.EtcdPeerURL(h.Host)},
		InitialCluster:      strings.Join(p.Members, ","),
		InitialClusterToken: p.Token,
		RevisionBump:        restoreBump,
		MarkCompacted:       true,
	})
	if err != nil {
		return fmt.Errorf("make %s's etcd data from the snapshot: %w", h.Name, err)
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(tarGz(pw, out)) }()
	if _, err := h.Client.RunInput(ctx, placeScript(manifests.EtcdDataDirOf(env.Inv), rh.KeepOldData), pr); err != nil {
		pr.CloseWithError(err)
		return fmt.Errorf("place the restored etcd data on %s: %w", h.Name, err)
	}
	what := "etcd data restored from the snapshot (revision " + fmt.Sprint(p.Revision) + ")"
	if rh.OldData {
		what += "; the old data kept in " + rh.KeepOldData
	}
	h.Changed(Change{Kind: ChangeEtcd, What: what})
	return writeMarker(ctx, h, p, "placed")
}

// placeScript is the host's part of PlaceEtcdData: it unpacks the restored
// member directory (a tar.gz on stdin) beside the data directory dir, moves
// the member directory found in dir, if any, to keep (never deleting it; a
// keep that holds one already is an error) and renames the restored one
// into place.
func placeScript(dir, keep string) string {
	return fmt.Sprintf(`set -e
d=%s; s=%s; k=%s
install -d -m 0700 "$d"
rm -rf "$s"; install -d -m 0700 "$s"
tar -xzf - -C "$s" --no-same-owner
[ -d "$s/member/snap" ] && [ -d "$s/member/wal" ] || { echo "the restored data is incomplete" >&2; exit 1; }
if [ -e "$d/member" ] || [ -L "$d/member" ]; then
  [ ! -e "$k/member" ] || { echo "$k/member exists: not moving $d/member over it" >&2; exit 1; }
  install -d -m 0700 "$k"; mv "$d/member" "$k/member"
fi
mv "$s/member" "$d/member"
rmdir "$s"
sync`, ssh.Quote(dir), ssh.Quote(dir+"/.kubeforge-restore"), ssh.Quote(keep))
}

// tarGz writes the tree under root as a gzip-compressed tar (etcd's
// preallocated WAL is mostly zeros and shrinks to almost nothing).
func tarGz(w io.Writer, root string) error {
	gz, _ := gzip.NewWriterLevel(w, gzip.BestSpeed) // the level is valid
	tw := tar.NewWriter(gz)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		hdr.Name = filepath.ToSlash(rel)
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

// StartRestored puts h's control plane back: every file it should have
// (all of them on a new host), the static pods, the kubelet; then it drops
// the held manifests and waits for the API server.
func StartRestored(ctx context.Context, env *Env, h *Host) error {
	if err := installNode(ctx, env, h); err != nil {
		return err
	}
	if _, err := h.Client.Run(ctx, "rm -rf "+heldManifests); err != nil {
		return fmt.Errorf("remove %s: %w", heldManifests, err)
	}
	return waitAPIServer(ctx, env, h)
}

// CheckRestored verifies the restored cluster: every control plane's etcd
// answers with the same cluster, whose voting members are exactly the
// inventory's control planes; then it waits for the kubelets of the
// restored Nodes to renew their Leases (they reconnect by themselves) and
// removes the markers.
func CheckRestored(ctx context.Context, env *Env) error {
	r := env.Restore
	cps := env.Hosts(env.Inv.ControlPlanes())
	var id uint64
	for _, cp := range cps {
		f, err := etcdMembers(ctx, env, cp, time.Minute)
		if err != nil {
			return err
		}
		if id != 0 && f.ClusterID != id {
			return fmt.Errorf("after the restore etcd on %s is cluster %x, on another control plane %x", cp.Name, f.ClusterID, id)
		}
		id = f.ClusterID
		var got []string
		for _, m := range f.Members {
			if m.Learner {
				return fmt.Errorf("after the restore etcd member %s is a learner", m.Name)
			}
			got = append(got, m.Name+"="+m.PeerURL)
		}
		sort.Strings(got)
		if strings.Join(got, ",") != strings.Join(r.Plan.Members, ",") {
			return fmt.Errorf("after the restore etcd on %s has members %v; want %v", cp.Name, got, r.Plan.Members)
		}
		r.Members = got
	}
	r.ClusterID = hexID(id)
	cli, err := etcdClient(ctx, env, cps[0])
	if err != nil {
		return err
	}
	defer cli.Close()
	if st, err := cli.Status(ctx, cli.Endpoints()[0]); err == nil {
		r.Revision = st.Header.Revision
	}
	env.Kube = nil
	env.Cluster = &ClusterFacts{APIUp: []string{cps[0].Name}}
	if err := ConnectAPI(ctx, env); err != nil {
		return err
	}
	hosts := map[string]bool{}
	for _, h := range env.Inv.Hosts {
		hosts[h.Name] = true
	}
	since := time.Now()
	_ = wait.PollUntilContextTimeout(ctx, 2*time.Second, env.waitTimeout(), true, func(ctx context.Context) (bool, error) {
		leases, err := env.Kube.CoordinationV1().Leases("kube-node-lease").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		r.Nodes, r.Waiting = renewedSince(leases.Items, since, hosts)
		return len(r.Waiting) == 0, nil
	})
	for _, n := range r.Waiting {
		env.warn(fmt.Sprintf("the kubelet of Node %s did not renew its Lease after the restore: is the host up?", n))
	}
	for _, cp := range cps {
		if _, err := cp.Client.Run(ctx, "rm -f "+restoreMarkerPath); err != nil {
			return fmt.Errorf("remove %s on %s: %w", restoreMarkerPath, cp.Name, err)
		}
	}
	return nil
}

// renewedSince splits the inventory hosts' Leases of kube-node-lease into
// those renewed after t and the others.
func renewedSince(leases []coordinationv1.Lease, t time.Time, hosts map[string]bool) (renewed, waiting []string) {
	for _, l := range leases {
		if !hosts[l.Name] {
			continue
		}
		if rt := l.Spec.RenewTime; rt != nil && rt.After(t.Add(-time.Second)) {
			renewed = append(renewed, l.Name)
		} else {
			waiting = append(waiting, l.Name)
		}
	}
	sort.Strings(renewed)
	sort.Strings(waiting)
	return renewed, waiting
}
