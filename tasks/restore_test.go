package tasks

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubeforge/kubeforge/pki"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func restoreEnv(t *testing.T, archived string) *Env {
	t.Helper()
	env := observedEnv(t, []string{"cp1", "cp2", "cp3", "w1"}, map[string]bool{"cp1": true, "cp2": true, "cp3": true})
	env.Inv.Cluster.KubernetesVersion = "v1.37.2"
	env.Restore = &Restore{Archive: &Archive{Path: "b.tar.gz", SHA256: "ab12", Manifest: BackupManifest{KubernetesVersion: archived, Revision: 9}}}
	return env
}

func TestPlanRestoreFromWhatTheHostsHold(t *testing.T) {
	env := restoreEnv(t, "v1.37.1")
	cp1, cp2, cp3 := env.hostNamed("cp1"), env.hostNamed("cp2"), env.hostNamed("cp3")
	cp1.Facts.StaticPods, cp1.Facts.EtcdData, cp1.Facts.KubeletVersion = true, true, "v1.37.2" // a running control plane
	// cp2: a restore of this archive placed its data, then stopped.
	cp2.Facts.HeldPods, cp2.Facts.EtcdData = true, true
	cp2.Facts.RestoreMarker = `{"archive":"ab12","token":"kubeforge-restore-feed","phase":"placed","time":"2026-12-01T10:00:00Z"}`
	// cp3: a new host.
	if err := PlanRestore(RestoreOptions{})(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	p := env.Restore.Plan
	if p.Token != "kubeforge-restore-feed" || !p.Resumed {
		t.Errorf("token %q resumed=%v; want the token of the restore under way", p.Token, p.Resumed)
	}
	want := map[string]RestoreHost{
		"cp1": {Host: "cp1", Stop: true, OldData: true, KeepOldData: "/var/lib/etcd.before-restore-"},
		"cp2": {Host: "cp2", Placed: true},
		"cp3": {Host: "cp3", Install: true, KeepOldData: "/var/lib/etcd.before-restore-"},
	}
	for _, h := range p.Hosts {
		w := want[h.Host]
		got := h
		if strings.HasPrefix(got.KeepOldData, w.KeepOldData) && w.KeepOldData != "" {
			got.KeepOldData = w.KeepOldData
		}
		if got != w {
			t.Errorf("%s: %+v; want %+v", h.Host, h, w)
		}
	}
	if len(p.Members) != 3 || !strings.HasPrefix(p.Members[0], "cp1=https://") {
		t.Errorf("members %v", p.Members)
	}
	for _, cp := range []*Host{cp1, cp2, cp3} {
		if prm := env.etcdParamsFor(cp); prm.InitialCluster != strings.Join(p.Members, ",") || prm.InitialClusterState != "existing" {
			t.Errorf("%s etcd flags %+v", cp.Name, prm)
		}
	}

	// A marker of another archive is not resumed: a new token.
	env = restoreEnv(t, "v1.37.2")
	env.hostNamed("cp2").Facts.RestoreMarker = `{"archive":"other","token":"kubeforge-restore-feed","phase":"placed"}`
	env.hostNamed("cp2").Facts.EtcdData = true
	if err := PlanRestore(RestoreOptions{})(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	if p := env.Restore.Plan; p.Resumed || p.Token == "kubeforge-restore-feed" || p.Hosts[1].Placed || p.Hosts[1].KeepOldData == "" {
		t.Errorf("a marker of another archive was resumed: %+v", p)
	}
}

func TestRestoreRefusesAnotherMinorUnlessAllowed(t *testing.T) {
	for _, tc := range []struct {
		archived, kubelet string
		allow             bool
		want              string
	}{
		{archived: "v1.36.4", want: "the inventory is v1.37.2"},
		{archived: "v1.37.0", kubelet: "v1.38.0", want: "the kubelet on cp1 is v1.38.0"},
		{archived: "v1.36.4", allow: true},
		{archived: "v1.37.0", kubelet: "v1.37.2"},
	} {
		env := restoreEnv(t, tc.archived)
		env.hostNamed("cp1").Facts.KubeletVersion = tc.kubelet
		err := PlanRestore(RestoreOptions{AllowOtherVersion: tc.allow})(context.Background(), env)
		var ref *ErrRefused
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc, err)
		case tc.want != "" && (!errors.As(err, &ref) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: %v; want a refusal saying %q", tc, err, tc.want)
		}
	}
}

func TestRenewedSinceCountsInventoryHostsOnly(t *testing.T) {
	now := time.Now()
	lease := func(name string, at time.Time) coordinationv1.Lease {
		return coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: coordinationv1.LeaseSpec{RenewTime: &metav1.MicroTime{Time: at}}}
	}
	renewed, waiting := renewedSince([]coordinationv1.Lease{lease("a", now.Add(time.Second)), lease("b", now.Add(-time.Minute)), lease("gone", now.Add(-time.Hour))},
		now, map[string]bool{"a": true, "b": true})
	if strings.Join(renewed, ",") != "a" || strings.Join(waiting, ",") != "b" {
		t.Errorf("renewed %v waiting %v", renewed, waiting)
	}
}

// pkiRestoreEnv is a restore's env of three control planes and a worker
// whose inventory names Kubernetes v1.37.2, with nothing read into it yet.
func pkiRestoreEnv(t *testing.T, dryRun bool) *Env {
	t.Helper()
	t.Setenv(BackupKeyEnv, "")
	env := observedEnv(t, []string{"cp1", "cp2", "cp3", "w1"}, map[string]bool{"cp1": true, "cp2": true, "cp3": true})
	env.Inv.Cluster.KubernetesVersion, env.Inv.Cluster.KeyType = "v1.37.2", "ecdsa"
	env.Inv.SetDefaults()
	env.Opts.DryRun = dryRun
	return env
}

// pkiArchive writes, in dir, an archive of a real PKI for env's inventory,
// taken at Kubernetes version and signed with key; it returns the archive
// and the directory of that PKI.
func pkiArchive(t *testing.T, env *Env, dir string, key *BackupKey, version string) (string, string) {
	t.Helper()
	pkiDir := filepath.Join(dir, "cluster-pki")
	b, err := pki.Load(pkiDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.Ensure(env.Inv, env.Seed(), b, pki.Options{KeyType: "ecdsa", Now: time.Now}); err != nil {
		t.Fatal(err)
	}
	if err := b.Save(pkiDir); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"inventory.yaml": []byte("cluster: {}\n")}
	err = filepath.WalkDir(pkiDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(pkiDir, p)
		files["pki/"+filepath.ToSlash(rel)], err = os.ReadFile(p)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return writeTestArchive(t, dir, key, files, func(m *BackupManifest, _ map[string][]byte) { m.KubernetesVersion = version }), pkiDir
}

// copyTree copies the files under src to dst with their modes.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), fi.Mode().Perm())
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, fi.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// runRestoreChecks runs restore's steps up to its plan, as the playbook
// does (connect, facts and probe read the hosts only).
func runRestoreChecks(env *Env, o RestoreOptions) error {
	ctx := context.Background()
	for _, step := range []LocalFunc{VerifyArchive(o), RestoreCerts, PlanRestore(o)} {
		if err := step(ctx, env); err != nil {
			return err
		}
	}
	return nil
}

func TestRestoreWritesNothingToTheStateDirUntilEveryCheckPassed(t *testing.T) {
	for _, tc := range []struct {
		name        string
		dryRun      bool
		statePKI    bool   // the state dir holds the cluster's PKI and backup key; else it is empty and the key is elsewhere
		archived    string // the archive's Kubernetes version
		wantRefused string
	}{
		{name: "dry run, empty state dir", dryRun: true, archived: "v1.37.1"},
		{name: "dry run, the state dir's PKI", dryRun: true, statePKI: true, archived: "v1.37.1"},
		{name: "refused (another minor), empty state dir", archived: "v1.36.4", wantRefused: "the inventory is v1.37.2"},
		{name: "refused (another minor), the state dir's PKI", statePKI: true, archived: "v1.36.4", wantRefused: "the inventory is v1.37.2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := pkiRestoreEnv(t, tc.dryRun)
			dir := t.TempDir()
			o := RestoreOptions{}
			var key *BackupKey
			if tc.statePKI {
				key = testKey(t, env.StateDir)
			} else {
				key = testKey(t, dir)
				o.Key = key.Path
			}
			var pkiDir string
			o.From, pkiDir = pkiArchive(t, env, dir, key, tc.archived)
			if tc.statePKI {
				copyTree(t, pkiDir, env.PKIDir())
			}
			before := tree(t, env.StateDir)
			err := runRestoreChecks(env, o)
			var ref *ErrRefused
			switch {
			case tc.wantRefused == "" && err != nil:
				t.Fatal(err)
			case tc.wantRefused != "" && (!errors.As(err, &ref) || !strings.Contains(err.Error(), tc.wantRefused)):
				t.Fatalf("%v; want a refusal saying %q", err, tc.wantRefused)
			}
			if env.PKI == nil || !samePEM(env.PKI.CACertPEM(), env.Restore.Archive.Files["pki/ca.crt"]) {
				t.Error("the run does not hold the archive's CA in memory")
			}
			after := tree(t, env.StateDir)
			for p, v := range after {
				if before[p] != v {
					t.Errorf("%s: %q, was %q", p, v, before[p])
				}
			}
			for p := range before {
				if _, ok := after[p]; !ok {
					t.Errorf("%s was removed", p)
				}
			}
		})
	}
}

func TestRestoreWritesTheArchivesPKIOnceDecided(t *testing.T) {
	env := pkiRestoreEnv(t, false)
	dir := t.TempDir()
	key := testKey(t, dir)
	p, pkiDir := pkiArchive(t, env, dir, key, "v1.37.2")
	o := RestoreOptions{From: p, Key: key.Path}
	if err := runRestoreChecks(env, o); err != nil {
		t.Fatal(err)
	}
	if err := SaveRestoreState(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	defer env.Restore.Archive.Close()
	got := tree(t, env.StateDir)
	want := tree(t, pkiDir)
	for rel, v := range want {
		if got[filepath.Join("pki", rel)] != v {
			t.Errorf("pki/%s: %q; want the archive's %q", rel, got[filepath.Join("pki", rel)], v)
		}
	}
	for rel, v := range got {
		if strings.Contains(rel, ".tmp") || strings.HasSuffix(rel, ".new") {
			t.Errorf("left a temporary file %s", rel)
		}
		if strings.HasSuffix(rel, ".key") && !strings.HasPrefix(v, "-rw-------") {
			t.Errorf("%s: %s; want 0600", rel, v)
		}
	}
	if v := got["admin.conf"]; !strings.HasPrefix(v, "-rw-------") {
		t.Errorf("admin.conf: %q", v)
	}
	fi, err := os.Stat(env.Restore.Archive.Snapshot)
	if err != nil || fi.Mode().Perm() != 0o600 || filepath.Dir(env.Restore.Archive.Snapshot) != env.restoreDir() {
		t.Errorf("snapshot %s: %v %v", env.Restore.Archive.Snapshot, fi, err)
	}
}

func TestPlanRestoreKeepsTheDataOfACustomDataDir(t *testing.T) {
	env := restoreEnv(t, "v1.37.2")
	env.Inv.Cluster.Etcd.ExtraArgs = map[string]string{"data-dir": "/data/etcd"}
	// A running control plane whose data the facts did not see: kept all the same.
	cp1 := env.hostNamed("cp1")
	cp1.Facts.StaticPods = true
	if err := PlanRestore(RestoreOptions{})(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	for _, h := range env.Restore.Plan.Hosts {
		if !strings.HasPrefix(h.KeepOldData, "/data/etcd.before-restore-") {
			t.Errorf("%s keeps old data in %q; want /data/etcd.before-restore-<time>", h.Host, h.KeepOldData)
		}
	}
	script := placeScript("/data/etcd", env.Restore.Plan.Hosts[0].KeepOldData)
	if strings.Contains(script, "/var/lib/etcd") || strings.Contains(script, "rm -rf \"$d") {
		t.Errorf("the place script names /var/lib/etcd or deletes in the data dir:\n%s", script)
	}
}

func TestPlaceScriptMovesTheOldDataAsideInACustomDataDir(t *testing.T) {
	for _, tc := range []struct {
		name     string
		old      bool // the data dir holds a member
		keepUsed bool // the keep dir holds a member already
		wantErr  string
	}{
		{name: "old data kept", old: true},
		{name: "no old data"},
		{name: "keep dir taken", old: true, keepUsed: true, wantErr: "not moving"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			data, keep := filepath.Join(root, "data", "etcd"), filepath.Join(root, "data", "etcd.before-restore-1")
			restored := filepath.Join(root, "restored")
			for _, d := range []string{"member/snap", "member/wal"} {
				if err := os.MkdirAll(filepath.Join(restored, d), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(restored, "member/snap/db"), []byte("restored"), 0o600); err != nil {
				t.Fatal(err)
			}
			if tc.old {
				if err := os.MkdirAll(filepath.Join(data, "member/snap"), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(data, "member/snap/db"), []byte("old"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if tc.keepUsed {
				if err := os.MkdirAll(filepath.Join(keep, "member"), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			var in bytes.Buffer
			if err := tarGz(&in, restored); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("/bin/sh", "-c", placeScript(data, keep))
			cmd.Stdin = &in
			out, err := cmd.CombinedOutput()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(string(out), tc.wantErr) {
					t.Fatalf("%v %s; want a failure saying %q", err, out, tc.wantErr)
				}
				if b, _ := os.ReadFile(filepath.Join(data, "member/snap/db")); string(b) != "old" {
					t.Errorf("the old data is gone: %q", b)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if b, _ := os.ReadFile(filepath.Join(data, "member/snap/db")); string(b) != "restored" {
				t.Errorf("data dir holds %q; want the restored data", b)
			}
			b, err := os.ReadFile(filepath.Join(keep, "member/snap/db"))
			if tc.old && string(b) != "old" {
				t.Errorf("the old data was not kept in %s: %q %v", keep, b, err)
			}
			if _, err := os.Stat(filepath.Join(data, ".kubeforge-restore")); !os.IsNotExist(err) {
				t.Errorf("the staging dir is left: %v", err)
			}
		})
	}
}
