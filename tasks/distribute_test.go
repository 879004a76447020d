package tasks

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	xssh "golang.org/x/crypto/ssh"

	"github.com/kubeforge/kubeforge/peer"
	"github.com/kubeforge/kubeforge/ssh"
	"github.com/kubeforge/kubeforge/ssh/sshtest"
)

// TestArtifactBatchesGrowByFanout: one host gets everything from the
// workstation, then each batch is at most fanout times the holders before
// it; control planes come first; hosts that hold everything already come
// before all (they only serve); and peers are off where they cannot work.
func TestArtifactBatchesGrowByFanout(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("peers need a linux kubeforge")
	}
	arch := map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[runtime.GOARCH]
	art := t.TempDir()
	os.MkdirAll(filepath.Join(art, "bin"), 0o755)
	for _, b := range []string{"kubelet", "kubectl", "kubeadm"} {
		os.WriteFile(filepath.Join(art, "bin", b), []byte("binary "+b), 0o755)
	}
	setup := func(workers int, cpsAt []int, fanout int) *Env {
		var order []string
		cps := map[string]bool{}
		for i := 0; i < workers; i++ {
			n := fmt.Sprintf("h%02d", i)
			order = append(order, n)
		}
		for _, i := range cpsAt {
			cps[order[i]] = true
		}
		env := observedEnv(t, order, cps)
		env.Inv.Cluster.Artifacts = art
		env.Opts.Fanout = fanout
		for _, h := range env.Hosts(env.Inv.Hosts) {
			h.Facts.Arch = arch
		}
		return env
	}
	shape := func(env *Env) string {
		var parts []string
		for _, b := range ArtifactPush.Batches(env, env.Hosts(env.Inv.Hosts)) {
			var names []string
			for _, h := range b {
				names = append(names, h.Name)
			}
			parts = append(parts, strings.Join(names, ","))
		}
		return strings.Join(parts, " | ")
	}

	env := setup(10, []int{7}, 4)
	if got, want := shape(env), "h07 | h00,h01,h02,h03 | h04,h05,h06,h08,h09"; got != want {
		t.Errorf("10 hosts, fanout 4:\n got %s\nwant %s", got, want)
	}
	d := env.distribution()
	serves := func(n string) bool { _, ok := d.serverFor(env.hostNamed(n)); return ok }
	if !serves("h07") || !serves("h00") || serves("h09") {
		t.Errorf("server binary: the seed and the middle batch get it, the last batch does not")
	}
	if f := d.server[runtime.GOARCH]; f.Path != PeerBinaryPath || f.SHA256 == "" {
		t.Errorf("the server binary for %s: %+v", runtime.GOARCH, f)
	}

	// Two hosts already hold every file: they come first, and feed 8.
	env = setup(12, []int{0}, 4)
	for _, n := range []string{"h03", "h05"} {
		h := env.hostNamed(n)
		files, _, err := artifactFiles(env, h)
		if err != nil {
			t.Fatal(err)
		}
		h.verify(files)
	}
	if got, want := shape(env), "h03,h05 | h00,h01,h02,h04,h06,h07,h08,h09 | h10,h11"; got != want {
		t.Errorf("2 holders:\n got %s\nwant %s", got, want)
	}
	if _, ok := env.distribution().serverFor(env.hostNamed("h03")); ok {
		t.Errorf("a host that held everything gets kubeforge's binary only when it is picked to serve")
	}

	// A build that carries kubeforge-peer sends it (from the state dir's cache), not itself.
	env = setup(3, []int{0}, 4)
	env.Opts.PeerServer = func(arch string) ([]byte, bool) { return []byte("peer for " + arch), true }
	ArtifactPush.Batches(env, env.Hosts(env.Inv.Hosts))
	if f := env.distribution().server[runtime.GOARCH]; !strings.HasSuffix(f.Source, "kubeforge-peer-linux-"+runtime.GOARCH) {
		t.Errorf("with an embedded kubeforge-peer the server binary is %+v", f)
	} else if b, _ := os.ReadFile(f.Source); string(b) != "peer for "+runtime.GOARCH {
		t.Errorf("%s holds %q", f.Source, b)
	}

	for name, env := range map[string]*Env{"fanout 0": setup(5, []int{0}, 0), "one host": setup(1, []int{0}, 4)} {
		if got := len(ArtifactPush.Batches(env, env.Hosts(env.Inv.Hosts))); got != 1 {
			t.Errorf("%s: %d batches, want 1 (direct)", name, got)
		}
	}
	env = setup(3, []int{0}, 4)
	env.hostNamed("h02").Facts.Arch = "riscv64"
	if got := len(ArtifactPush.Batches(env, env.Hosts(env.Inv.Hosts))); got != 1 || !strings.Contains(env.distribution().off, "h02") {
		t.Errorf("a host of another architecture: %d batches, off %q; want 1 and a reason naming h02", got, env.distribution().off)
	}
}

// TestFetchFailuresBlameWhoFailed: a peer whose bytes are wrong serves no
// one else and the file comes from here; a host that cannot write a file it
// fetched (its disk is full) fails with its own error, naming the path and
// the cause, and the peer that served it keeps serving.
func TestFetchFailuresBlameWhoFailed(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("fetching needs bash:", err)
	}
	ctx := context.Background()
	data := bytes.Repeat([]byte("kubelet "), 128<<10) // 1 MiB
	sum := sha256.Sum256(data)
	digest := hex.EncodeToString(sum[:])
	tests := []struct {
		name      string
		peerCopy  []byte // what the peer serves
		limit     int64  // the fetching host's file size limit
		wantErr   []string
		wantBad   bool
		wantBytes bool // the file ends up on the host (uploaded from here)
	}{
		{name: "the peer's copy is wrong", peerCopy: bytes.Repeat([]byte("x"), len(data)), wantBad: true, wantBytes: true},
		{name: "the host cannot write", peerCopy: data, limit: 64 << 10, wantErr: []string{"h01", "File too large", "h00, not at fault"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := observedEnv(t, []string{"h00", "h01"}, map[string]bool{"h00": true})
			t.Cleanup(func() { env.Pool.Close() })
			holderHost, recv := env.hostNamed("h00"), env.hostNamed("h01")
			holderHost.InternalAddress = "127.0.0.1"

			dir := t.TempDir()
			src, peerPath := filepath.Join(dir, "kubelet"), filepath.Join(dir, "peer-kubelet")
			os.WriteFile(src, data, 0o755)
			os.WriteFile(peerPath, tt.peerCopy, 0o755)
			secret := strings.Repeat("c3", 32)
			srv, err := peer.New(peer.Config{Listen: "127.0.0.1:0", Secret: secret, Files: map[string]string{digest: peerPath}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			sctx, stop := context.WithCancel(ctx)
			addr := make(chan net.Addr, 1)
			served := make(chan struct{})
			go func() { srv.Serve(sctx, func(a net.Addr) { addr <- a }); close(served) }()
			t.Cleanup(func() { stop(); <-served })
			port := (<-addr).(*net.TCPAddr).Port

			signer, key := sshtest.WriteKey(t, "")
			host := sshtest.Start(t, sshtest.Options{AuthorizedKeys: []xssh.PublicKey{signer.PublicKey()}, FileSizeLimit: tt.limit})
			recv.Client, err = env.Pool.Dial(ctx, ssh.Config{Host: "h01", Address: host.Host, Port: host.Port, IdentityFiles: []string{key},
				KnownHostsFiles: []string{host.WriteKnownHosts(t)}, ConnectTimeout: 5 * time.Second, SumsDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			d := env.distribution()
			d.servers["h00"] = &peerServer{holder: &holder{h: holderHost, files: map[string]string{digest: peerPath}}, port: port, secret: secret}

			dst := filepath.Join(t.TempDir(), "usr", "bin", "kubelet")
			_, err = d.obtain(ctx, env, recv, []ssh.File{{Path: dst, Mode: 0o755, Source: src, SHA256: digest}})
			if len(tt.wantErr) == 0 && err != nil {
				t.Fatalf("obtain: %v", err)
			}
			for _, want := range tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("obtain error %v does not say %q", err, want)
				}
			}
			if bad := d.bad["h00"] != ""; bad != tt.wantBad {
				t.Errorf("peer h00 marked bad: %v (%q), want %v", bad, d.bad["h00"], tt.wantBad)
			}
			got, _ := os.ReadFile(dst)
			if tt.wantBytes != bytes.Equal(got, data) {
				t.Errorf("the host holds %d bytes of the file; want it there: %v", len(got), tt.wantBytes)
			}
		})
	}
}
