//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kubeforge/kubeforge/test/harnesslib"
)

var keywatchBin struct {
	once sync.Once
	path string
	err  error
}

// keywatchDirs are where the watcher looks: every tree kubeforge writes
// secrets to or stages them in (new directories below are watched as they
// appear).
var keywatchDirs = []string{"/etc", "/var/lib", "/tmp", "/var/tmp", "/run"}

// watchKeys starts test/e2e/keywatch on n as an unprivileged local user
// (kfwatch): it tries to open every file that appears or changes under
// keywatchDirs. The returned function stops it and fails the test for every
// file holding a secret that it could read (issue 26: keys were readable by
// any local user for a moment during an upload).
func watchKeys(ctx context.Context, t *testing.T, c *harnesslib.Cluster, n harnesslib.Node, during string) (stop func()) {
	t.Helper()
	keywatchBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "keywatch-")
		if err != nil {
			keywatchBin.err = err
			return
		}
		keywatchBin.path = filepath.Join(dir, "keywatch")
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", keywatchBin.path, "./test/e2e/keywatch")
		cmd.Dir = RepoRoot(t)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			keywatchBin.err = fmt.Errorf("build keywatch: %w\n%s", err, out)
		}
	})
	if keywatchBin.err != nil {
		t.Fatal(keywatchBin.err)
	}
	const bin, log = "/usr/lib/kf-e2e/keywatch", "/var/log/kf-keywatch.log"
	MustSSH(ctx, t, c, n, "root", "mkdir -p /usr/lib/kf-e2e && (id kfwatch >/dev/null 2>&1 || useradd --system --no-create-home kfwatch)")
	if err := Upload(ctx, c, n, keywatchBin.path, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	MustSSH(ctx, t, c, n, "root", "systemctl stop kf-keywatch 2>/dev/null; systemctl reset-failed kf-keywatch 2>/dev/null; rm -f "+log+
		"; systemd-run --quiet --unit kf-keywatch --uid kfwatch --gid kfwatch -p StandardOutput=file:"+log+" -p StandardError=file:"+log+
		" "+bin+" "+strings.Join(keywatchDirs, " ")+" && sleep 2 && systemctl is-active -q kf-keywatch")
	return func() {
		t.Helper()
		out := MustSSH(ctx, t, c, n, "root", "systemctl stop kf-keywatch; for i in $(seq 50); do grep -q '^watched' "+log+" && break; sleep 0.1; done; cat "+log)
		if !strings.Contains(out, "watched ") {
			t.Errorf("the key watcher on %s during %s reported nothing:\n%s", n.Name, during, out)
			return
		}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if strings.HasPrefix(l, "leak ") {
				t.Errorf("a local user on %s read a secret during %s: %s", n.Name, during, strings.TrimPrefix(l, "leak "))
			} else {
				t.Logf("key watcher on %s during %s: %s", n.Name, during, l)
			}
		}
	}
}
