package tasks

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/kubeforge/kubeforge/internal/atomicfile"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kubeforge/kubeforge/ssh"
)

// RemoteArtifactsDir is where image tarballs are kept on hosts, so a re-run
// can skip them by checksum.
const RemoteArtifactsDir = "/var/lib/kubeforge/artifacts"

// localArtifact is one file of the artifacts directory, hashed once per run.
type localArtifact struct {
	path   string
	sha256 string
	tags   []string // image references, for image tarballs
}

// artifactEntry hashes one local file once per run, however many hosts want it.
type artifactEntry struct {
	once sync.Once
	a    *localArtifact
	err  error
}

// artifact hashes (once per run) the local file p of the artifacts directory.
func (e *Env) artifact(p string, image bool) (*localArtifact, error) {
	e.mu.Lock()
	if e.artifacts == nil {
		e.artifacts = map[string]*artifactEntry{}
	}
	ent, ok := e.artifacts[p]
	if !ok {
		ent = &artifactEntry{}
		e.artifacts[p] = ent
	}
	e.mu.Unlock()
	ent.once.Do(func() { ent.a, ent.err = e.hashArtifact(p, image) })
	return ent.a, ent.err
}

// hashArtifact returns the digest (and image names) of a local artifact,
// from the state dir's cache when the file's size, ctime and inode are those
// recorded, so a re-run does not read hundreds of megabytes again.
func (e *Env) hashArtifact(p string, image bool) (*localArtifact, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("read artifact: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read artifact: %w", err)
	}
	key := fileKey(st)
	cacheFile := ""
	if e.StateDir != "" && key != "" {
		sum := sha256.Sum256([]byte(p))
		cacheFile = filepath.Join(e.StateDir, "cache", "sums", hex.EncodeToString(sum[:16]))
		var c struct {
			Key, SHA256 string
			Tags        []string
		}
		if b, err := os.ReadFile(cacheFile); err == nil && json.Unmarshal(b, &c) == nil && c.Key == key && c.SHA256 != "" && (!image || len(c.Tags) > 0) {
			return &localArtifact{path: p, sha256: c.SHA256, tags: c.Tags}, nil
		}
	}
	hash := sha256.New()
	if _, err := io.Copy(hash, f); err != nil {
		return nil, fmt.Errorf("hash %s: %w", p, err)
	}
	a := &localArtifact{path: p, sha256: hex.EncodeToString(hash.Sum(nil))}
	if image {
		if a.tags, err = imageTags(p); err != nil {
			return nil, err
		}
	}
	// A file changed within the clock's granularity of now could change again
	// with the same ctime: cache only what has been still for a while.
	if cacheFile != "" && time.Since(st.ModTime()) > racyWindow && time.Since(ctime(st)) > racyWindow {
		b, _ := json.Marshal(struct {
			Key, SHA256 string
			Tags        []string
		}{key, a.sha256, a.tags})
		if err := os.MkdirAll(filepath.Dir(cacheFile), 0o700); err == nil {
			_ = atomicfile.Write(cacheFile, b, 0o600) // a cache: failing to write it only costs time
		}
	}
	return a, nil
}

// racyWindow: files younger than this are not cached (as git does for its index).
const racyWindow = 2 * time.Second

func ctime(st os.FileInfo) time.Time {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		return time.Unix(sys.Ctim.Sec, sys.Ctim.Nsec)
	}
	return time.Now()
}

// fileKey identifies a file's content version: size, ctime and inode. Any
// write, rename over it or touch changes the ctime.
func fileKey(st os.FileInfo) string {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	return fmt.Sprintf("%d %d.%09d %d", st.Size(), sys.Ctim.Sec, sys.Ctim.Nsec, sys.Ino)
}

// imageTags reads the references an image tarball (docker save or OCI layout) carries.
func imageTags(p string) ([]string, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("read image %s: %w", p, err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var tags []string
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read image %s: %w", p, err)
		}
		switch path.Clean(hdr.Name) {
		case "manifest.json":
			var m []struct{ RepoTags []string }
			if err := json.NewDecoder(tr).Decode(&m); err != nil {
				return nil, fmt.Errorf("read image %s manifest.json: %w", p, err)
			}
			for _, x := range m {
				tags = append(tags, x.RepoTags...)
			}
		case "index.json":
			var idx struct {
				Manifests []struct {
					Annotations map[string]string `json:"annotations"`
				} `json:"manifests"`
			}
			if err := json.NewDecoder(tr).Decode(&idx); err == nil {
				for _, m := range idx.Manifests {
					if n := m.Annotations["io.containerd.image.name"]; n != "" {
						tags = append(tags, n)
					}
				}
			}
		}
	}
	if len(tags) == 0 {
		return nil, fmt.Errorf("image %s names no image (no RepoTags in manifest.json)", p)
	}
	sort.Strings(tags)
	return slicesCompact(tags), nil
}

func slicesCompact(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// ArtifactPush puts kubelet (and kubectl, kubeadm on control planes), the
// CNI plugins and the image tarballs of the inventory's artifacts directory
// (and kubeforge itself on a worker that runs the API proxy) on the hosts:
// from a peer that holds a verified copy where one serves, from the
// workstation otherwise (docs/artifacts.md). Without an artifacts directory
// the host must already have kubelet; images are then pulled by the kubelet.
var ArtifactPush = PeerPush{Files: artifactPushFiles}

func artifactPushFiles(env *Env, h *Host) ([]ssh.File, error) {
	if env.Inv.Cluster.Artifacts == "" {
		if h.Facts != nil && h.Facts.KubeletVersion == "" {
			return nil, fmt.Errorf("no kubelet at /usr/bin/kubelet and no cluster.artifacts directory to push one from; install kubelet %s or set cluster.artifacts", env.Inv.Cluster.KubernetesVersion)
		}
		h.Log.Info("unchanged", "what", "artifacts (none configured)")
		return nil, nil
	}
	files, _, err := artifactFiles(env, h)
	if err != nil {
		return nil, err
	}
	if env.Inv.UsesAPIProxy() && !h.IsControlPlane() {
		bin, err := apiProxyBinary(env, h)
		if err != nil {
			return nil, err
		}
		files = append(files, bin)
	}
	return files, nil
}

// ImportArtifactImages imports the artifacts' image tarballs (pushed by
// ArtifactPush) whose images containerd on h lacks.
func ImportArtifactImages(ctx context.Context, env *Env, h *Host) error {
	if env.Inv.Cluster.Artifacts == "" {
		return nil
	}
	_, imgs, err := artifactFiles(env, h)
	if err != nil {
		return err
	}
	return importImages(ctx, h, imgs)
}

// artifactFiles lists what the artifacts directory puts on h: binaries, CNI
// plugins and image tarballs (with their digests, hashed once per run).
func artifactFiles(env *Env, h *Host) ([]ssh.File, []*localArtifact, error) {
	dir := env.Inv.Cluster.Artifacts
	bins := []string{"kubelet"}
	if h.IsControlPlane() {
		bins = append(bins, "kubectl", "kubeadm")
	}
	var files []ssh.File
	for _, b := range bins {
		p := filepath.Join(dir, "bin", b)
		if _, err := os.Stat(p); err != nil {
			if b == "kubelet" || b == "kubectl" {
				return nil, nil, fmt.Errorf("artifacts directory %s has no bin/%s", dir, b)
			}
			continue
		}
		a, err := env.artifact(p, false)
		if err != nil {
			return nil, nil, err
		}
		files = append(files, ssh.File{Path: "/usr/bin/" + b, Mode: 0o755, Source: p, SHA256: a.sha256})
	}
	if cni, _ := filepath.Glob(filepath.Join(dir, "cni", "bin", "*")); len(cni) > 0 {
		for _, p := range cni {
			a, err := env.artifact(p, false)
			if err != nil {
				return nil, nil, err
			}
			files = append(files, ssh.File{Path: "/opt/cni/bin/" + filepath.Base(p), Mode: 0o755, Source: p, SHA256: a.sha256})
		}
	}
	images, _ := filepath.Glob(filepath.Join(dir, "images", "*.tar"))
	var imgs []*localArtifact
	for _, p := range images {
		a, err := env.artifact(p, true)
		if err != nil {
			return nil, nil, err
		}
		imgs = append(imgs, a)
		files = append(files, ssh.File{Path: RemoteArtifactsDir + "/images/" + filepath.Base(p), Mode: 0o644, Source: p, SHA256: a.sha256})
	}
	return files, imgs, nil
}

// missingImages returns the tarballs whose images containerd on h lacks.
func missingImages(ctx context.Context, h *Host, imgs []*localArtifact) ([]*localArtifact, error) {
	if len(imgs) == 0 {
		return nil, nil
	}
	out, err := h.Client.Run(ctx, "ctr -n k8s.io images ls -q")
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	have := map[string]bool{}
	for _, l := range strings.Fields(out) {
		have[l] = true
	}
	var missing []*localArtifact
	for _, a := range imgs {
		for _, t := range a.tags {
			if !have[t] && !have["docker.io/"+t] {
				missing = append(missing, a)
				break
			}
		}
	}
	return missing, nil
}

// uploadDedup uploads each distinct content once and copies it on the host
// to the other paths that want the same bytes (kubelet, kubectl and kubeadm
// are often one multi-call binary).
// obtain puts the distinct contents on h and returns the paths it wrote.
func uploadDedup(ctx context.Context, h *Host, files []ssh.File, obtain func(context.Context, []ssh.File) ([]string, error)) error {
	if files = h.unverified(files); len(files) == 0 {
		return nil
	}
	first := map[string]string{}
	var unique []ssh.File
	var copies []ssh.Copy
	for _, f := range files {
		if src, ok := first[f.SHA256]; ok && f.SHA256 != "" {
			copies = append(copies, ssh.Copy{From: src, To: f.Path, Mode: 0o755, SHA256: f.SHA256})
			continue
		}
		first[f.SHA256] = f.Path
		unique = append(unique, f)
	}
	changed, err := obtain(ctx, unique)
	if err != nil {
		return fmt.Errorf("push artifacts: %w", err)
	}
	for _, p := range changed {
		if p != PeerBinaryPath { // kubeforge's transport, like the digest cache: not the cluster's state
			h.Changed(Change{Kind: ChangeFile, What: p})
		}
	}
	if len(copies) == 0 {
		return nil
	}
	out, err := h.Client.CopyFiles(ctx, copies, false)
	if err != nil {
		return fmt.Errorf("install artifacts: %w", err)
	}
	for _, p := range out {
		h.Changed(Change{Kind: ChangeFile, What: p})
	}
	return nil
}

// importImages imports the tarballs whose images containerd lacks.
func importImages(ctx context.Context, h *Host, imgs []*localArtifact) error {
	missing, err := missingImages(ctx, h, imgs)
	if err != nil {
		return err
	}
	if len(missing) == 0 {
		if len(imgs) > 0 {
			h.Log.Info("unchanged", "what", "images")
		}
		return nil
	}
	var script strings.Builder
	var imported []string
	for _, a := range missing {
		fmt.Fprintf(&script, "ctr -n k8s.io images import %s >/dev/null\n", ssh.Quote(RemoteArtifactsDir+"/images/"+filepath.Base(a.path)))
		imported = append(imported, a.tags...)
	}
	if _, err := h.Client.Run(ctx, "set -e\n"+script.String()); err != nil {
		return fmt.Errorf("import images: %w", err)
	}
	h.Changed(Change{Kind: ChangeHost, What: "imported " + strings.Join(imported, ", ")})
	return nil
}
