package tasks

import (
	"fmt"
	"maps"
	"os"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/kubeforge/kubeforge/manifests"
	"github.com/kubeforge/kubeforge/ssh"
)

// DiskFree is the filesystem holding one directory, as df reports it.
type DiskFree struct {
	Mount           string // its mount point
	SizeKB, AvailKB int64
}

// diskDirs are the directories whose filesystems the facts measure: where a
// run writes (artifacts, binaries, CNI plugins, images and their unpacked
// layers, kubelet and cluster files). etcd's data dir is added per run.
var diskDirs = []string{RemoteArtifactsDir, "/usr/bin", runtimeBinDir, cniBinDir, "/var/lib/containerd", manifests.KubeletDir, "/etc/kubernetes"}

// diskScript prints "disk<TAB>DIR SIZE-KB AVAIL-KB MOUNT" for each argument,
// measured at its nearest existing ancestor.
const diskScript = `for d in "$@"; do p=$d; while [ ! -e "$p" ]; do p=$(dirname "$p"); done
  df -Pk "$p" 2>/dev/null | awk -v d="$d" 'NR==2 {print "disk\t" d " " $2 " " $4 " " $6}'; done`

// parseDisk reads one "disk" fact line into f.
func (f *Facts) parseDisk(v string) {
	fields := strings.Fields(v)
	if len(fields) != 4 {
		return
	}
	size, err1 := strconv.ParseInt(fields[1], 10, 64)
	avail, err2 := strconv.ParseInt(fields[2], 10, 64)
	if err1 != nil || err2 != nil {
		return
	}
	if f.Disk == nil {
		f.Disk = map[string]DiskFree{}
	}
	f.Disk[fields[0]] = DiskFree{Mount: fields[3], SizeKB: size, AvailKB: avail}
}

// diskReserve is the room left free on a filesystem after a run's writes:
// the system, logs and containerd's own bookkeeping need some.
const diskReserve = 100 << 20

// etcdMinFree is the room a new etcd member needs in its data dir: its
// default backend quota (2 GiB) could not be reached otherwise.
const etcdMinFree = 2 << 30

// diskNeed is what one directory receives in this run.
type diskNeed struct {
	dir   string
	bytes int64
	what  string
}

// checkDiskSpace compares, per filesystem, what the plan writes on h (the
// files that differ, the images to import, unpacked as well, and a new etcd
// member's data) with what is free there. It returns the failed checks: the
// host, the paths, what is needed and what is free.
func checkDiskSpace(env *Env, h *Host, files []ssh.File, differ map[string]bool, images []*localArtifact) ([]CheckResult, error) {
	f := h.Facts
	if f == nil || len(f.Disk) == 0 {
		return nil, nil // an older host or a fact not read: nothing to judge from
	}
	var needs []diskNeed
	for _, file := range files {
		if !differ[file.Path] {
			continue
		}
		n := int64(len(file.Data))
		if file.Source != "" {
			st, err := os.Stat(file.Source)
			if err != nil {
				return nil, fmt.Errorf("artifact %s: %w", file.Source, err)
			}
			n = st.Size()
		}
		needs = append(needs, diskNeed{dir: path.Dir(file.Path), bytes: n, what: "files to write"})
	}
	for _, a := range images {
		st, err := os.Stat(a.path)
		if err != nil {
			return nil, fmt.Errorf("artifact %s: %w", a.path, err)
		}
		// containerd keeps the imported layers and unpacks them: twice the tarball.
		needs = append(needs, diskNeed{dir: "/var/lib/containerd", bytes: 2 * st.Size(), what: "images to import"})
	}
	etcdDir := manifests.EtcdDataDirOf(env.Inv)
	if h.IsControlPlane() && !f.EtcdData {
		needs = append(needs, diskNeed{dir: etcdDir, bytes: etcdMinFree, what: "a new etcd member's data"})
	}
	type fsNeed struct {
		free  DiskFree
		bytes int64
		dirs  map[string]bool
		whats map[string]bool
	}
	byMount := map[string]*fsNeed{}
	for _, n := range needs {
		dir, free, ok := f.diskOf(n.dir)
		if !ok {
			continue
		}
		fs := byMount[free.Mount]
		if fs == nil {
			fs = &fsNeed{free: free, dirs: map[string]bool{}, whats: map[string]bool{}}
			byMount[free.Mount] = fs
		}
		fs.bytes += n.bytes
		fs.dirs[dir] = true
		fs.whats[n.what] = true
	}
	var failed []CheckResult
	for mount, fs := range byMount {
		avail := fs.free.AvailKB * 1024
		if fs.bytes+diskReserve <= avail {
			continue
		}
		failed = append(failed, CheckResult{Host: h.Name, ID: "DiskSpace", Severity: SeverityError,
			Message: fmt.Sprintf("%s (filesystem %s) needs %s for %s (and %s spare); %s free",
				strings.Join(slices.Sorted(maps.Keys(fs.dirs)), ", "), mount, megabytes(fs.bytes), strings.Join(slices.Sorted(maps.Keys(fs.whats)), ", "), megabytes(diskReserve), megabytes(avail)),
			Fix: fmt.Sprintf("free %s on %s's %s (old images: `crictl rmi --prune`; logs), or grow it; then run again", megabytes(fs.bytes+diskReserve-avail), h.Name, mount)})
	}
	sort.Slice(failed, func(i, j int) bool { return failed[i].Message < failed[j].Message })
	return failed, nil
}

// diskOf is the measured directory that holds dir (the longest prefix) and its filesystem.
func (f *Facts) diskOf(dir string) (string, DiskFree, bool) {
	best := ""
	for d := range f.Disk {
		if (dir == d || strings.HasPrefix(dir, strings.TrimSuffix(d, "/")+"/")) && len(d) > len(best) {
			best = d
		}
	}
	if best == "" {
		return "", DiskFree{}, false
	}
	return best, f.Disk[best], true
}

// megabytes prints n bytes in MB (MiB), rounded up.
func megabytes(n int64) string { return strconv.FormatInt((n+(1<<20)-1)>>20, 10) + " MB" }
