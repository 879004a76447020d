package peer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
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
