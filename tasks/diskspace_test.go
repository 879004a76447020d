package tasks

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubeforge/kubeforge/ssh"
)

func TestFactsReadTheFilesystemOfEachDirectory(t *testing.T) {
	f, err := parseFacts("arch\tx86_64\nkernel\t6.1.0\ndisk\t/var/lib/kubeforge/artifacts 1000 200 /\ndisk\t/var/lib/etcd 5000 4000 /data\ndisk\tbroken line\n", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Disk["/var/lib/etcd"]; got.Mount != "/data" || got.SizeKB != 5000 || got.AvailKB != 4000 {
		t.Errorf("etcd's filesystem = %+v", got)
	}
	if len(f.Disk) != 2 {
		t.Errorf("disk facts = %v; want the two well-formed lines", f.Disk)
	}
	if dir, fs, ok := f.diskOf("/var/lib/kubeforge/artifacts/images"); !ok || dir != "/var/lib/kubeforge/artifacts" || fs.Mount != "/" {
		t.Errorf("diskOf(images) = %q %+v %v", dir, fs, ok)
	}
	if _, _, ok := f.diskOf("/var/lib/etcd-other"); ok {
		t.Error("/var/lib/etcd-other was taken for a directory under /var/lib/etcd")
	}
}

// The plan refuses a host whose filesystem cannot hold what the run writes
// there, naming the host, the paths, what is needed and what is free; files
// already in place and a filesystem with room are not counted against it.
func TestDiskSpaceCountsWhatTheRunWritesPerFilesystem(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "kubelet")
	if err := os.WriteFile(big, make([]byte, 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "pause.tar")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	files := []ssh.File{
		{Path: "/usr/bin/kubelet", Source: big},
		{Path: "/usr/bin/kubectl", Source: big}, // already there: not written
		{Path: "/var/lib/kubeforge/artifacts/images/pause.tar", Source: img},
	}
	differ := map[string]bool{"/usr/bin/kubelet": true, "/var/lib/kubeforge/artifacts/images/pause.tar": true}
	images := []*localArtifact{{path: img}}
	mb := int64(1024) // KB
	for _, tc := range []struct {
		name    string
		cp      bool
		etcd    bool // the control plane holds etcd data already
		disk    map[string]DiskFree
		wantErr string
	}{
		{name: "room everywhere", disk: map[string]DiskFree{"/usr/bin": {"/", 0, 1000 * mb}, RemoteArtifactsDir: {"/", 0, 1000 * mb}, "/var/lib/containerd": {"/", 0, 1000 * mb}}},
		{name: "a small filesystem for the artifacts: refused with its numbers",
			disk:    map[string]DiskFree{"/usr/bin": {"/", 0, 1000 * mb}, RemoteArtifactsDir: {"/var/lib/kubeforge", 0, 50 * mb}, "/var/lib/containerd": {"/", 0, 1000 * mb}},
			wantErr: "h1 /var/lib/kubeforge/artifacts (filesystem /var/lib/kubeforge) needs 1 MB for files to write (and 100 MB spare); 50 MB free"},
		{name: "one filesystem: binaries, tarballs and unpacked images add up",
			disk:    map[string]DiskFree{"/usr/bin": {"/", 0, 105 * mb}, RemoteArtifactsDir: {"/", 0, 105 * mb}, "/var/lib/containerd": {"/", 0, 105 * mb}},
			wantErr: "needs 6 MB for files to write, images to import"},
		{name: "a new etcd member needs room for its data", cp: true,
			disk:    map[string]DiskFree{"/usr/bin": {"/", 0, 1000 * mb}, RemoteArtifactsDir: {"/", 0, 1000 * mb}, "/var/lib/containerd": {"/", 0, 1000 * mb}, "/var/lib/etcd": {"/etcd", 0, 1000 * mb}},
			wantErr: "/var/lib/etcd (filesystem /etcd) needs 2048 MB for a new etcd member's data"},
		{name: "an etcd member with data is not asked for more", cp: true, etcd: true,
			disk: map[string]DiskFree{"/usr/bin": {"/", 0, 1000 * mb}, RemoteArtifactsDir: {"/", 0, 1000 * mb}, "/var/lib/containerd": {"/", 0, 1000 * mb}, "/var/lib/etcd": {"/etcd", 0, 1000 * mb}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cps := map[string]bool{"h1": tc.cp}
			env := observedEnv(t, []string{"h1"}, cps)
			h := env.hostNamed("h1")
			h.Facts.Disk, h.Facts.EtcdData = tc.disk, tc.etcd
			failed, err := checkDiskSpace(env, h, files, differ, images)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range failed {
				got = append(got, r.Host+" "+r.Message)
			}
			switch {
			case tc.wantErr == "" && len(failed) > 0:
				t.Errorf("refused: %v", got)
			case tc.wantErr != "" && (len(failed) != 1 || !strings.Contains(got[0], tc.wantErr)):
				t.Errorf("checks = %q; want one containing %q", got, tc.wantErr)
			}
		})
	}
}
