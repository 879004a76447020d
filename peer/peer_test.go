package peer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const secret = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

func fixture(t *testing.T) (string, string, []byte) {
	t.Helper()
	data := bytes.Repeat([]byte("kubeforge peer "), 100_000)
	p := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return p, hex.EncodeToString(sum[:]), data
}

func fetch(t *testing.T, addr, line string) []byte {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, line); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	return b
}

// start runs Run as `kubeforge peer-serve` does and returns the bound
// address, the writer that is its stdin, and a channel with its stdout once
// it exits.
func start(t *testing.T, cfg Config) (string, io.WriteCloser, chan string) {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan string, 1)
	go func() {
		err := Run(context.Background(), inR, outW, nil)
		outW.CloseWithError(fmt.Errorf("exited: %v", err))
	}()
	b, _ := json.Marshal(cfg)
	go func() { _, _ = inW.Write(append(b, '\n')) }()
	br := bufio.NewReader(outR)
	first, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(first, "listening ") {
		t.Fatalf("first line %q, %v", first, err)
	}
	go func() { rest, _ := io.ReadAll(br); done <- string(rest) }()
	return strings.TrimSpace(strings.TrimPrefix(first, "listening ")), inW, done
}

func TestServesOnlyWithTheSecretAndAKnownDigest(t *testing.T) {
	p, sum, data := fixture(t)
	addr, stdin, done := start(t, Config{Listen: "127.0.0.1:0", Secret: secret, Files: map[string]string{sum: p}})

	if got := fetch(t, addr, secret+" "+sum+"\n"); !bytes.Equal(got, data) {
		t.Errorf("with the secret: got %d bytes, want the file's %d", len(got), len(data))
	}
	wrong := strings.Repeat("ff", 32)
	if got := fetch(t, addr, wrong+" "+sum+"\n"); len(got) != 0 {
		t.Errorf("a wrong secret got %d bytes", len(got))
	}
	if got := fetch(t, addr, secret+" "+strings.Repeat("ab", 32)+"\n"); len(got) != 0 {
		t.Errorf("an unknown digest got %d bytes", len(got))
	}
	// A connect-and-close (the clients' reachability probe) is not a refusal.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	stdin.Close() // the SSH session ended
	var st Stats
	select {
	case out := <-done:
		if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &st); err != nil {
			t.Fatalf("last line %q: %v", out, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not exit when its stdin closed")
	}
	if st.Served != 1 || st.Refused != 2 || st.Bytes != int64(len(data)) {
		t.Errorf("stats %+v, want 1 served (%d bytes), 2 refused", st, len(data))
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after the server exited", addr)
	}
}

func TestServerExitsWhenIdle(t *testing.T) {
	p, sum, _ := fixture(t)
	srv, err := New(Config{Listen: "127.0.0.1:0", Secret: secret, Files: map[string]string{sum: p}, Idle: Duration(1500 * time.Millisecond)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := srv.Serve(context.Background(), nil); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("an idle server did not exit")
	}
}

func TestRejectsABadConfiguration(t *testing.T) {
	for name, cfg := range map[string]Config{
		"short secret":  {Listen: "127.0.0.1:0", Secret: "abcd"},
		"not a digest":  {Listen: "127.0.0.1:0", Secret: secret, Files: map[string]string{"xyz": "/a"}},
		"relative path": {Listen: "127.0.0.1:0", Secret: secret, Files: map[string]string{strings.Repeat("ab", 32): "a"}},
	} {
		if _, err := New(cfg, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// failingListener fails its first n Accepts with EMFILE, as a process out of
// file descriptors does.
type failingListener struct {
	net.Listener
	n atomic.Int32
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.n.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	return l.Listener.Accept()
}

func TestServerWaitsOutAcceptFailures(t *testing.T) {
	p, sum, data := fixture(t)
	srv, err := New(Config{Listen: "127.0.0.1:0", Secret: secret, Files: map[string]string{sum: p}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &failingListener{Listener: ln}
	fl.n.Store(5)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := srv.serve(ctx, fl, nil); done <- err }()
	if got := fetch(t, ln.Addr().String(), secret+" "+sum+"\n"); !bytes.Equal(got, data) {
		t.Errorf("after 5 failed Accepts: got %d bytes, want the file's %d", len(got), len(data))
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
}

// TestUnauthenticatedConnectionsAreCapped: connections that never send
// their request take at most maxUnauthenticated places at once (the rest
// wait in the listener's backlog); a client that speaks is served once they
// go.
func TestUnauthenticatedConnectionsAreCapped(t *testing.T) {
	p, sum, data := fixture(t)
	srv, err := New(Config{Listen: "127.0.0.1:0", Secret: secret, Files: map[string]string{sum: p}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr := make(chan net.Addr, 1)
	go srv.Serve(ctx, func(a net.Addr) { addr <- a })
	a := (<-addr).String()
	var silent []net.Conn
	for range maxUnauthenticated + 8 {
		c, err := net.Dial("tcp", a)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		silent = append(silent, c)
	}
	deadline := time.Now().Add(5 * time.Second)
	for srv.active.Load() < maxUnauthenticated && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // time for any more to be taken
	if n := srv.active.Load(); n != maxUnauthenticated {
		t.Fatalf("%d silent connections taken at once, want %d", n, maxUnauthenticated)
	}
	for _, c := range silent {
		c.Close()
	}
	if got := fetch(t, a, secret+" "+sum+"\n"); !bytes.Equal(got, data) {
		t.Errorf("a client after the silent ones got %d bytes, want the file's %d", len(got), len(data))
	}
}

// TestSilentConnectionsAreClosedAtTheirDeadline: a connection that does not
// send its request within the deadline to authenticate is closed.
func TestSilentConnectionsAreClosedAtTheirDeadline(t *testing.T) {
	p, sum, _ := fixture(t)
	srv, err := New(Config{Listen: "127.0.0.1:0", Secret: secret, Files: map[string]string{sum: p}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv.authTimeout = 200 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr := make(chan net.Addr, 1)
	go srv.Serve(ctx, func(a net.Addr) { addr <- a })
	c, err := net.Dial("tcp", (<-addr).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("silent connection: read %d bytes, %v; want it closed by the server", n, err)
	}
}
