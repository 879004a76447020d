//go:build integration

package ssh

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kubeforge/kubeforge/peer"
)

// TestIntegrationPeerFetch: a host (real OpenSSH, a non-root user with sudo)
// fetches files from a peer server (kubeforge's, in this process) with
// bash's /dev/tcp and coreutils only; every byte is checked against the
// digest the workstation pinned, and a corrupted, cut or unreachable source
// leaves nothing behind and is reported per file.
func TestIntegrationPeerFetch(t *testing.T) {
	e := setup(t)
	srv := startSSHD(t, e, "peerfetch", false)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p := NewPool(Limits{})
	defer p.Close()
	c, err := p.Dial(ctx, srv.config("fetcher", userSudo, e.sudoKey))
	if err != nil {
		t.Fatal(err)
	}

	src := t.TempDir()
	blob := func(name string, n int) (string, string, []byte) {
		b := make([]byte, n)
		rand.Read(b)
		p := filepath.Join(src, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		return p, hex.EncodeToString(sum[:]), b
	}
	okPath, okSum, okData := blob("ok", 3<<20)
	badPath, badSum, _ := blob("bad", 1<<20)
	bigPath, bigSum, _ := blob("big", 256<<20)
	secret := make([]byte, 32)
	rand.Read(secret)
	hexSecret := hex.EncodeToString(secret)
	server, err := peer.New(peer.Config{Listen: "127.0.0.1:0", Secret: hexSecret,
		Files: map[string]string{okSum: okPath, badSum: badPath, bigSum: bigPath}, MaxClients: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sctx, stopServer := context.WithCancel(ctx)
	addrc := make(chan net.Addr, 1)
	served := make(chan peer.Stats, 1)
	go func() { st, _ := server.Serve(sctx, func(a net.Addr) { addrc <- a }); served <- st }()
	port := (<-addrc).(*net.TCPAddr).Port

	dst := t.TempDir()
	want := func(name, sum string, size int64) PeerFile {
		return PeerFile{File: File{Path: filepath.Join(dst, "usr/bin", name), Mode: 0o755, SHA256: sum}, Size: size, Addr: "127.0.0.1", Port: port, Secret: hexSecret}
	}

	t.Run("verified copy, root-owned, mode kept", func(t *testing.T) {
		res, err := c.Fetch(ctx, []PeerFile{want("ok", okSum, int64(len(okData)))})
		if err != nil || len(res) != 1 || !res[0].OK {
			t.Fatalf("fetch: %+v %v", res, err)
		}
		got, _ := os.ReadFile(res[0].Path)
		fi, _ := os.Stat(res[0].Path)
		st := fi.Sys().(*syscall.Stat_t)
		if !bytes.Equal(got, okData) || fi.Mode().Perm() != 0o755 || st.Uid != 0 {
			t.Errorf("fetched file: %d bytes (want %d), mode %v, uid %d", len(got), len(okData), fi.Mode().Perm(), st.Uid)
		}
		// The digest is recorded: the next upload check needs no hashing and skips the file.
		if changed, err := c.Upload(ctx, []File{{Path: res[0].Path, Mode: 0o755, Source: okPath, SHA256: okSum}}); err != nil || len(changed) != 0 {
			t.Errorf("upload after fetch: changed %v, %v", changed, err)
		}
	})

	t.Run("a corrupted peer copy is refused", func(t *testing.T) {
		// The source's copy changes after the workstation pinned its digest.
		if err := os.WriteFile(badPath, bytes.Repeat([]byte{'x'}, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		res, err := c.Fetch(ctx, []PeerFile{want("bad", badSum, 1<<20)})
		if err != nil || len(res) != 1 || res[0].OK || res[0].Failure != FetchBadPeer || !strings.Contains(res[0].Reason, "digest-mismatch") {
			t.Fatalf("fetch of a corrupted copy: %+v %v", res, err)
		}
		if _, err := os.Stat(res[0].Path); !os.IsNotExist(err) {
			t.Errorf("%s exists after a failed fetch", res[0].Path)
		}
		assertNoTemp(t, dst)
	})

	t.Run("a wrong secret gets nothing", func(t *testing.T) {
		f := want("ok2", okSum, int64(len(okData)))
		f.Secret = strings.Repeat("00", 32)
		res, err := c.Fetch(ctx, []PeerFile{f})
		if err != nil || len(res) != 1 || res[0].OK {
			t.Fatalf("fetch with a wrong secret: %+v %v", res, err)
		}
		assertNoTemp(t, dst)
	})

	t.Run("a peer that stops mid-transfer", func(t *testing.T) {
		go func() { // stop the server once the transfer has started
			for ctx.Err() == nil {
				m, _ := filepath.Glob(filepath.Join(dst, "usr/bin", ".big.kubeforge-*"))
				if len(m) > 0 {
					if fi, err := os.Stat(m[0]); err == nil && fi.Size() > 0 {
						stopServer()
						return
					}
				}
				time.Sleep(time.Millisecond)
			}
		}()
		res, err := c.Fetch(ctx, []PeerFile{want("big", bigSum, 256<<20)})
		if err != nil || len(res) != 1 || res[0].OK || res[0].Failure != FetchBadPeer || !strings.HasPrefix(res[0].Reason, "short") {
			t.Fatalf("fetch from a peer that stopped: %+v %v", res, err)
		}
		assertNoTemp(t, dst)
		st := <-served
		if st.Failed != 1 {
			t.Errorf("server stats %+v: want the cut transfer counted as failed", st)
		}
	})

	t.Run("an unreachable peer", func(t *testing.T) {
		res, err := c.Fetch(ctx, []PeerFile{want("ok3", okSum, int64(len(okData)))}) // the server is stopped
		if err != nil || len(res) != 1 || res[0].OK || res[0].Failure != FetchUnreachable {
			t.Fatalf("fetch from a stopped peer: %+v %v", res, err)
		}
		assertNoTemp(t, dst)
	})

	t.Run("a process lives as long as its stdin", func(t *testing.T) {
		proc, err := c.Start(ctx, "read -r x; echo got $x; cat >/dev/null; echo bye", []byte("hello\n"))
		if err != nil {
			t.Fatal(err)
		}
		if l, err := proc.Line(10 * time.Second); err != nil || l != "got hello" {
			t.Fatalf("first line %q, %v", l, err)
		}
		rest, err := proc.Stop(10 * time.Second)
		if err != nil || rest != "bye" {
			t.Fatalf("stop: %q, %v", rest, err)
		}
		// One that ignores its stdin closing is killed after the grace period.
		proc, err = c.Start(ctx, "echo up; trap '' HUP; sleep 600", nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := proc.Line(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		if _, err := proc.Stop(time.Second); err == nil || !strings.Contains(err.Error(), "killed") {
			t.Errorf("stop of a process that ignores stdin: %v, want killed", err)
		}
	})
}
