//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubeforge/kubeforge/test/harnesslib"
)

// TestPeerFetchFallsBack: the artifacts' host-to-host copy, as a non-root
// user with sudo, on three bare hosts (only the artifacts/push step runs).
// A seed whose copy went bad on disk after its digest was cached serves
// corrupted bytes: the other hosts detect it and get the file from the
// workstation. A seed whose server dies mid-transfer: the same. Every host
// ends with the workstation's bytes, and nothing is left serving.
func TestPeerFetchFallsBack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	c, state := startClusterAs(ctx, t, "kfpeer", "172.31.226.0/24", 3, 1, "kube")
	seed, _ := c.Node("node1")
	image, err := filepath.Glob(filepath.Join(ArtifactsDir(t), "images", "*.tar"))
	if err != nil || len(image) == 0 {
		t.Fatalf("no image tarball in the artifacts: %v", err)
	}
	remoteImage := "/var/lib/kubeforge/artifacts/images/" + filepath.Base(image[0])
	want := fileSHA256(t, image[0])
	push := func(inv string) (int, string) {
		return kubeforge(ctx, t, "up", "-i", inv, "--state-dir", state, "--only", "artifacts/push")
	}

	if code, out := push(subsetInventory(t, c, "node1")); code != 0 {
		t.Fatalf("push to the seed: exit %d\n%s", code, out)
	}
	// Silent corruption after the digest was cached: 16 bytes of the image change, and the host's digest cache
	// is made to vouch for the file as it is now (its size, ctime and inode), with the old digest.
	MustSSH(ctx, t, c, seed, "root", `set -e; f=`+remoteImage+`
		dd if=/dev/urandom of="$f" bs=1 count=16 seek=1000000 conv=notrunc status=none
		s=/var/lib/kubeforge/sums/$(printf %s "$f" | sha256sum | cut -c1-40)
		{ stat -c '%s %.9Z %i' -- "$f"; sed -n 2p "$s"; } > "$s.new" && mv "$s.new" "$s"`)

	code, out := push(c.Inventory)
	if code != 0 || !strings.Contains(out, "2 fallbacks") || !strings.Contains(out, "digest-mismatch") || !strings.Contains(out, "from node1") {
		t.Errorf("push with a corrupted seed copy: exit %d, want 0 with 2 fallbacks naming node1's digest mismatch\n%s", code, out)
	}
	for _, n := range []string{"node2", "node3"} {
		checkHostFile(ctx, t, c, n, remoteImage, want)
	}
	checkNoPeerServer(ctx, t, c)

	// The seed's copy is repaired once its cache stops vouching for it; then its server dies mid-transfer.
	MustSSH(ctx, t, c, seed, "root", "rm -rf /var/lib/kubeforge/sums")
	for _, n := range []string{"node2", "node3"} {
		h, _ := c.Node(n)
		MustSSH(ctx, t, c, h, "root", "rm -f /usr/bin/kubelet "+remoteImage)
	}
	killed := make(chan string, 1)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		// Freeze the seed's server as soon as it runs, wait until a worker has started a fetch (its temporary file
		// exists: connected, request sent), then kill the server: that transfer is cut, whatever this machine's speed.
		w, _ := c.Node("node2")
		frozen := false
		for wctx.Err() == nil {
			if !frozen {
				out, err := c.SSH(wctx, seed, "root", "ss -Hltnp | grep -q kubeforge-pe && pkill -STOP -f '[p]eer-serve' && echo frozen", nil)
				frozen = err == nil && strings.TrimSpace(out) == "frozen"
				continue
			}
			if out, err := c.SSH(wctx, w, "root", "find /usr/bin /var/lib/kubeforge/artifacts/images -name '.*.kubeforge-*' 2>/dev/null | head -1", nil); err == nil && strings.TrimSpace(out) != "" {
				got, _ := c.SSH(wctx, seed, "root", "pkill -KILL -f '[p]eer-serve' && echo killed", nil)
				killed <- strings.TrimSpace(got)
				return
			}
		}
		killed <- "" // the push ended first
	}()
	code, out = push(c.Inventory)
	stop()
	if k := <-killed; k != "killed" {
		t.Fatalf("the seed's server was not caught serving (%q)", k)
	}
	if code != 0 || !strings.Contains(out, "fallbacks") || strings.Contains(out, " 0 fallbacks") {
		t.Errorf("push with a seed that dies mid-transfer: exit %d, want 0 with fallbacks\n%s", code, out)
	}
	checkHostFile(ctx, t, c, "node1", remoteImage, want)
	for _, n := range []string{"node2", "node3"} {
		checkHostFile(ctx, t, c, n, remoteImage, want)
		checkHostFile(ctx, t, c, n, "/usr/bin/kubelet", fileSHA256(t, filepath.Join(ArtifactsDir(t), "bin", "kubelet")))
	}
	checkNoPeerServer(ctx, t, c)
}

// checkHostFile checks that path on host n has the digest want and that no
// temporary file is left beside it.
func checkHostFile(ctx context.Context, t *testing.T, c *harnesslib.Cluster, name, path, want string) {
	t.Helper()
	n, _ := c.Node(name)
	got := strings.TrimSpace(MustSSH(ctx, t, c, n, "root", "sha256sum < "+path+" | cut -d' ' -f1; ls -a "+filepath.Dir(path)+" | grep -c kubeforge- || true"))
	if f := strings.Fields(got); len(f) != 2 || f[0] != want || f[1] != "0" {
		t.Errorf("%s:%s: digest and temp files %q; want %s and 0", name, path, got, want)
	}
}

func fileSHA256(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
