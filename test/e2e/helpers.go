// Package e2e holds kubeforge's end-to-end tests (build tag e2e): real hosts from the test harness, real
// OpenSSH, containerd, kubelets and control planes. This file has the helpers the tests share.
package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubeforge/kubeforge/test/harnesslib"
)

// RepoRoot returns the repository root (the directory holding the main go.mod).
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/kubeforge/kubeforge\n")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("repository root not found above the working directory")
		}
		dir = parent
	}
}

// ArtifactsDir returns the artifacts directory ($KUBEFORGE_ARTIFACTS, else .cache/artifacts as `make artifacts`
// builds it) and fails the test when it is not built.
func ArtifactsDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("KUBEFORGE_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(RepoRoot(t), ".cache", "artifacts")
	}
	if _, err := os.Stat(filepath.Join(dir, "VERSION")); err != nil {
		t.Fatalf("artifacts not built in %s (run `make artifacts`): %v", dir, err)
	}
	return dir
}

// StartHarness boots a harness with o and removes it when the test ends (set KUBEFORGE_E2E_KEEP=1 to keep it
// for debugging). o.Dir defaults to a temporary directory.
func StartHarness(ctx context.Context, t testing.TB, o harnesslib.Options) *harnesslib.Cluster {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	if o.Logger == nil {
		o.Logger = TestLogger(t)
	}
	t.Cleanup(func() {
		if os.Getenv("KUBEFORGE_E2E_KEEP") == "1" {
			t.Logf("KUBEFORGE_E2E_KEEP=1: keeping harness %q in %s", o.NamePrefix, o.Dir)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := harnesslib.DownInstance(ctx, o.Dir, o.NamePrefix); err != nil {
			t.Errorf("harness down: %v", err)
		}
	})
	c, err := harnesslib.Up(ctx, o)
	if err != nil {
		t.Fatalf("harness up: %v", err)
	}
	return c
}

// MustSSH runs command on node as user and fails the test on error.
func MustSSH(ctx context.Context, t testing.TB, c *harnesslib.Cluster, n harnesslib.Node, user, command string) string {
	t.Helper()
	out, err := c.SSH(ctx, n, user, command, nil)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return out
}

// Upload copies a local file to path on n over SSH as root, with mode.
func Upload(ctx context.Context, c *harnesslib.Cluster, n harnesslib.Node, local, remote string, mode os.FileMode) error {
	f, err := os.Open(local)
	if err != nil {
		return fmt.Errorf("upload %s: %w", local, err)
	}
	defer f.Close()
	tmp := remote + ".upload"
	cmd := fmt.Sprintf("mkdir -p %q && cat > %q && chmod %o %q && mv -f %q %q", filepath.Dir(remote), tmp, mode, tmp, tmp, remote)
	if _, err := c.SSH(ctx, n, "root", cmd, f); err != nil {
		return fmt.Errorf("upload %s to %s:%s: %w", local, n.Name, remote, err)
	}
	return nil
}

// WriteFile writes data to path on n over SSH as root.
func WriteFile(ctx context.Context, c *harnesslib.Cluster, n harnesslib.Node, remote string, data []byte) error {
	cmd := fmt.Sprintf("mkdir -p %q && cat > %q.tmp && mv -f %q.tmp %q", filepath.Dir(remote), remote, remote, remote)
	if _, err := c.SSH(ctx, n, "root", cmd, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("write %s:%s: %w", n.Name, remote, err)
	}
	return nil
}

// ImportImages streams every image tarball of the artifacts directory into containerd's k8s.io namespace on n
// and returns the image references containerd then lists.
func ImportImages(ctx context.Context, c *harnesslib.Cluster, n harnesslib.Node, artifacts string) ([]string, error) {
	tars, err := filepath.Glob(filepath.Join(artifacts, "images", "*.tar"))
	if err != nil || len(tars) == 0 {
		return nil, fmt.Errorf("find image tarballs in %s: none (err %v)", artifacts, err)
	}
	for _, tar := range tars {
		f, err := os.Open(tar)
		if err != nil {
			return nil, fmt.Errorf("import %s: %w", tar, err)
		}
		_, err = c.SSH(ctx, n, "root", "ctr -n k8s.io images import --all-platforms -", f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("import %s on %s: %w", filepath.Base(tar), n.Name, err)
		}
	}
	out, err := c.SSH(ctx, n, "root", "ctr -n k8s.io images ls -q", nil)
	if err != nil {
		return nil, fmt.Errorf("list images on %s: %w", n.Name, err)
	}
	return strings.Fields(out), nil
}

// CRIVersion asks the CRI runtime service on n (containerd's socket, forwarded over SSH as a unix socket) for
// its version: a real gRPC call, runtime.v1.RuntimeService/Version, made with net/http's unencrypted HTTP/2.
func CRIVersion(ctx context.Context, c *harnesslib.Cluster, n harnesslib.Node, socket string) (CRIVersionInfo, error) {
	local := filepath.Join(os.TempDir(), fmt.Sprintf("kf-cri-%s-%d.sock", n.Name, time.Now().UnixNano()))
	defer os.Remove(local)
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	args := append([]string{"-N", "-o", "ExitOnForwardFailure=yes", "-o", "StreamLocalBindUnlink=yes",
		"-L", local + ":" + socket}, c.SSHArgs(n, "root")...)
	fwd := exec.CommandContext(fctx, "ssh", args...)
	var stderr bytes.Buffer
	fwd.Stderr = &stderr
	if err := fwd.Start(); err != nil {
		return CRIVersionInfo{}, fmt.Errorf("forward %s from %s: %w", socket, n.Name, err)
	}
	defer func() { cancel(); _ = fwd.Wait() }()
	for i := 0; ; i++ {
		if _, err := os.Stat(local); err == nil {
			break
		}
		if i > 100 {
			return CRIVersionInfo{}, fmt.Errorf("forward %s from %s: no local socket after 10s: %s", socket, n.Name, stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{
		Protocols: &p,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", local)
		},
	}
	defer tr.CloseIdleConnections()
	// A gRPC message: 1 byte "compressed" flag, 4 bytes length, the protobuf (VersionRequest{} is empty).
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://localhost/runtime.v1.RuntimeService/Version",
		bytes.NewReader([]byte{0, 0, 0, 0, 0}))
	if err != nil {
		return CRIVersionInfo{}, err
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	resp, err := (&http.Client{Transport: tr, Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		return CRIVersionInfo{}, fmt.Errorf("call CRI Version on %s: %w", n.Name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return CRIVersionInfo{}, fmt.Errorf("read CRI Version reply: %w", err)
	}
	status := resp.Trailer.Get("Grpc-Status")
	if status == "" {
		status = resp.Header.Get("Grpc-Status")
	}
	if resp.StatusCode != http.StatusOK || status != "0" {
		return CRIVersionInfo{}, fmt.Errorf("call CRI Version on %s: http %d, grpc-status %q: %s", n.Name, resp.StatusCode, status,
			resp.Trailer.Get("Grpc-Message")+resp.Header.Get("Grpc-Message"))
	}
	if len(body) < 5 || body[0] != 0 || int(binary.BigEndian.Uint32(body[1:5])) != len(body)-5 {
		return CRIVersionInfo{}, fmt.Errorf("read CRI Version reply: bad gRPC frame (%d bytes)", len(body))
	}
	return parseVersionResponse(body[5:])
}

// CRIVersionInfo is runtime.v1.VersionResponse.
type CRIVersionInfo struct {
	Version           string // field 1: the CRI API version ("0.1.0")
	RuntimeName       string // field 2
	RuntimeVersion    string // field 3
	RuntimeAPIVersion string // field 4 ("v1")
}

// parseVersionResponse decodes the four string fields of runtime.v1.VersionResponse.
func parseVersionResponse(b []byte) (CRIVersionInfo, error) {
	var v CRIVersionInfo
	for len(b) > 0 {
		key, n := binary.Uvarint(b)
		if n <= 0 {
			return v, errors.New("decode VersionResponse: bad field key")
		}
		b = b[n:]
		if key&7 != 2 { // only length-delimited fields are expected
			return v, fmt.Errorf("decode VersionResponse: field %d has wire type %d", key>>3, key&7)
		}
		l, n := binary.Uvarint(b)
		if n <= 0 || uint64(len(b)-n) < l {
			return v, errors.New("decode VersionResponse: bad length")
		}
		s := string(b[n : n+int(l)])
		b = b[n+int(l):]
		switch key >> 3 {
		case 1:
			v.Version = s
		case 2:
			v.RuntimeName = s
		case 3:
			v.RuntimeVersion = s
		case 4:
			v.RuntimeAPIVersion = s
		}
	}
	return v, nil
}
