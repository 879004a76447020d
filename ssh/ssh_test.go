package ssh

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kubeforge/kubeforge/peer"
	"github.com/kubeforge/kubeforge/ssh/sshtest"
	xssh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

// testHost is a running in-process server with a key authorized for it.
type testHost struct {
	srv   *sshtest.Server
	key   string // identity file
	known string // known_hosts holding the server's key
	sums  string // the digest cache dir (the server runs commands on this machine)
}

func startHost(t *testing.T, opts sshtest.Options) testHost {
	t.Helper()
	signer, keyFile := sshtest.WriteKey(t, "")
	opts.AuthorizedKeys = append(opts.AuthorizedKeys, signer.PublicKey())
	srv := sshtest.Start(t, opts)
	return testHost{srv: srv, key: keyFile, known: srv.WriteKnownHosts(t), sums: t.TempDir()}
}

func (h testHost) config(name string) Config {
	return Config{
		Host:            name,
		Address:         h.srv.Host,
		Port:            h.srv.Port,
		IdentityFiles:   []string{h.key},
		KnownHostsFiles: []string{h.known},
		ConnectTimeout:  5 * time.Second,
		SumsDir:         h.sums, // the in-process server runs commands on this machine
	}
}

func newTestPool(t *testing.T, l Limits) *Pool {
	p := NewPool(l)
	p.backoff = 10 * time.Millisecond
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, h testHost) *Client {
	t.Helper()
	c, err := newTestPool(t, Limits{}).Dial(context.Background(), h.config("node1"))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	return c
}

func TestHostKeyVerification(t *testing.T) {
	h := startHost(t, sshtest.Options{})
	otherKey, _, err := sshtest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	changed := filepath.Join(dir, "changed")
	os.WriteFile(changed, []byte("# comment\n"+knownhosts.Line([]string{knownhosts.Normalize(h.srv.Addr)}, otherKey.PublicKey())+"\n"), 0o600)
	otherHost := filepath.Join(dir, "other-host")
	os.WriteFile(otherHost, []byte(knownhosts.Line([]string{"[127.0.0.1]:1"}, h.srv.HostKey.PublicKey())+"\n"), 0o600)
	fp := xssh.FingerprintSHA256(h.srv.HostKey.PublicKey())

	tests := []struct {
		name        string
		files       []string
		acceptNew   bool
		wantErr     bool
		wantChanged bool
		wantLine    int
	}{
		{name: "known key is accepted", files: []string{h.known}},
		{name: "known key in second file is accepted", files: []string{filepath.Join(dir, "missing"), h.known}},
		{name: "no known_hosts file refuses unknown host", files: []string{filepath.Join(dir, "missing")}, wantErr: true},
		{name: "key recorded for another address only is unknown", files: []string{otherHost}, wantErr: true},
		{name: "changed key is refused", files: []string{changed}, wantErr: true, wantChanged: true, wantLine: 2},
		{name: "changed key is refused even when accepting new keys", files: []string{changed}, acceptNew: true, wantErr: true, wantChanged: true, wantLine: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := h.config("node1")
			cfg.KnownHostsFiles = tt.files
			cfg.AcceptNewHostKeys = tt.acceptNew
			if tt.acceptNew {
				cfg.KnownHostsWrite = filepath.Join(t.TempDir(), "kubeforge_known_hosts")
			}
			p := newTestPool(t, Limits{})
			c, err := p.Dial(context.Background(), cfg)
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				if out, err := c.Run(context.Background(), "echo ok"); err != nil || out != "ok\n" {
					t.Fatalf("run = %q, %v", out, err)
				}
				return
			}
			var hk *HostKeyError
			if !errors.As(err, &hk) {
				t.Fatalf("err = %v (%T), want *HostKeyError", err, err)
			}
			if hk.Fingerprint != fp || hk.Changed != tt.wantChanged || hk.Host != "node1" {
				t.Errorf("HostKeyError = %+v, want fingerprint %s changed %v", hk, fp, tt.wantChanged)
			}
			if !strings.Contains(err.Error(), fp) {
				t.Errorf("message %q lacks the fingerprint", err)
			}
			if tt.wantChanged {
				if hk.KnownFile != changed || hk.KnownLine != tt.wantLine {
					t.Errorf("old key at %s:%d, want %s:%d", hk.KnownFile, hk.KnownLine, changed, tt.wantLine)
				}
				if !strings.Contains(err.Error(), fmt.Sprintf("%s:%d", changed, tt.wantLine)) {
					t.Errorf("message %q does not name the known_hosts line", err)
				}
			} else if !strings.Contains(err.Error(), "--accept-new-host-keys") {
				t.Errorf("message %q does not name the flag", err)
			}
			if cfg.KnownHostsWrite != "" {
				if _, err := os.Stat(cfg.KnownHostsWrite); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("a refused key was recorded in %s", cfg.KnownHostsWrite)
				}
			}
		})
	}
}

func TestAcceptNewHostKeyRecordsThenVerifies(t *testing.T) {
	h := startHost(t, sshtest.Options{})
	write := filepath.Join(t.TempDir(), "state", "known_hosts")
	cfg := h.config("node1")
	cfg.KnownHostsFiles = nil
	cfg.KnownHostsWrite = write
	cfg.AcceptNewHostKeys = true
	if _, err := newTestPool(t, Limits{}).Dial(context.Background(), cfg); err != nil {
		t.Fatalf("dial with accept-new: %v", err)
	}
	data, err := os.ReadFile(write)
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != h.srv.KnownHostsLine()+"\n" {
		t.Fatalf("recorded %q, want %q", data, h.srv.KnownHostsLine())
	}
	if fi, _ := os.Stat(write); fi.Mode().Perm() != 0o600 {
		t.Errorf("known_hosts mode %v, want 0600", fi.Mode())
	}
	// Without accept-new, the recorded key now verifies.
	cfg.AcceptNewHostKeys = false
	if _, err := newTestPool(t, Limits{}).Dial(context.Background(), cfg); err != nil {
		t.Fatalf("dial with the recorded key: %v", err)
	}
	// A different server at another address with the same file is still unknown.
	h2 := startHost(t, sshtest.Options{})
	cfg2 := h2.config("node2")
	cfg2.KnownHostsFiles, cfg2.KnownHostsWrite = nil, write
	var hk *HostKeyError
	if _, err := newTestPool(t, Limits{}).Dial(context.Background(), cfg2); !errors.As(err, &hk) || hk.Changed {
		t.Fatalf("dial unknown second host: %v, want unknown-host HostKeyError", err)
	}
}

func TestAuthentication(t *testing.T) {
	signer, keyFile := sshtest.WriteKey(t, "")
	_, otherKey := sshtest.WriteKey(t, "")
	encSigner, encKey := sshtest.WriteKey(t, "s3cret")
	agentSock, agentKey := startAgent(t)
	srv := sshtest.Start(t, sshtest.Options{
		AuthorizedKeys: []xssh.PublicKey{signer.PublicKey(), encSigner.PublicKey(), agentKey},
		Passwords:      map[string]string{"root": "pw"},
	})
	known := srv.WriteKnownHosts(t)
	passphrase := func(pp string) func(string) ([]byte, error) {
		return func(string) ([]byte, error) { return []byte(pp), nil }
	}

	tests := []struct {
		name     string
		cfg      Config
		agent    bool
		wantAuth bool   // *AuthError expected
		wantErr  string // other error expected
	}{
		{name: "key", cfg: Config{IdentityFiles: []string{keyFile}}},
		{name: "password", cfg: Config{Password: "pw"}},
		{name: "encrypted key with passphrase", cfg: Config{IdentityFiles: []string{encKey}, Passphrase: passphrase("s3cret")}},
		{name: "agent", cfg: Config{UseAgent: true}, agent: true},
		{name: "second key works after a refused one", cfg: Config{IdentityFiles: []string{otherKey, keyFile}}},
		{name: "unauthorized key", cfg: Config{IdentityFiles: []string{otherKey}}, wantAuth: true},
		{name: "wrong password", cfg: Config{Password: "nope"}, wantAuth: true},
		{name: "no method", cfg: Config{}, wantAuth: true},
		{name: "agent not used unless asked", cfg: Config{}, agent: true, wantAuth: true},
		{name: "encrypted key without passphrase", cfg: Config{IdentityFiles: []string{encKey}}, wantErr: "is encrypted"},
		{name: "encrypted key with wrong passphrase", cfg: Config{IdentityFiles: []string{encKey}, Passphrase: passphrase("x")}, wantErr: "wrong passphrase"},
		{name: "missing identity file", cfg: Config{IdentityFiles: []string{filepath.Join(t.TempDir(), "nokey")}}, wantErr: "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.agent {
				t.Setenv("SSH_AUTH_SOCK", agentSock)
			} else {
				t.Setenv("SSH_AUTH_SOCK", "")
			}
			cfg := tt.cfg
			cfg.Host, cfg.Address, cfg.Port, cfg.KnownHostsFiles = "node1", srv.Host, srv.Port, []string{known}
			before := srv.Connections()
			c, err := newTestPool(t, Limits{}).Dial(context.Background(), cfg)
			var ae *AuthError
			switch {
			case tt.wantAuth:
				if !errors.As(err, &ae) {
					t.Fatalf("err = %v, want *AuthError", err)
				}
				if ae.Host != "node1" || ae.User != "root" || !strings.Contains(err.Error(), "node1") {
					t.Errorf("AuthError = %+v", ae)
				}
				if got := srv.Connections() - before; got != 1 {
					t.Errorf("authentication failure was retried: %d connections", got)
				}
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
			default:
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				if out, err := c.Run(context.Background(), "echo hi"); err != nil || out != "hi\n" {
					t.Fatalf("run = %q, %v", out, err)
				}
			}
		})
	}
}

// startAgent serves an in-memory ssh-agent holding a new key on a unix socket.
func startAgent(t *testing.T) (sock string, pub xssh.PublicKey) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keyring := agent.NewKeyring()
	if err := keyring.Add(agent.AddedKey{PrivateKey: priv}); err != nil {
		t.Fatal(err)
	}
	signer, err := xssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	sock = filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { agent.ServeAgent(keyring, c); c.Close() }()
		}
	}()
	return sock, signer.PublicKey()
}

func newBufLogger(w io.Writer, mu *sync.Mutex) *slog.Logger {
	return slog.New(slog.NewTextHandler(&lockedWriter{w: w, mu: mu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestDialTimeoutWhenServerNeverAnswers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var mu sync.Mutex
	var accepted []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted = append(accepted, c) // held open, never answered
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range accepted {
			c.Close()
		}
		mu.Unlock()
	}()
	p := newTestPool(t, Limits{})
	p.attempts = 2
	port := ln.Addr().(*net.TCPAddr).Port
	start := time.Now()
	_, err = p.Dial(context.Background(), Config{Host: "silent", Address: "127.0.0.1", Port: port, Password: "x", ConnectTimeout: 200 * time.Millisecond})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if !strings.Contains(err.Error(), "silent") {
		t.Errorf("message %q does not name the host", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("dial took %v", d)
	}
	mu.Lock()
	n := len(accepted)
	mu.Unlock()
	if n != 2 {
		t.Errorf("%d connection attempts, want 2 (a timeout is retried)", n)
	}
}

func TestDialRefusedIsRetriedThenFails(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	p := newTestPool(t, Limits{})
	p.attempts = 3
	_, err := p.Dial(context.Background(), Config{Host: "down", Address: "127.0.0.1", Port: port, Password: "x"})
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("err = %v, want connection refused", err)
	}
}

func TestDialCancelled(t *testing.T) {
	h := startHost(t, sshtest.Options{HandshakeDelay: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := newTestPool(t, Limits{}).Dial(ctx, h.config("node1"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the context's deadline", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("cancelled dial took %v", d)
	}
}

func TestPoolReusesOneConnectionPerHost(t *testing.T) {
	h := startHost(t, sshtest.Options{})
	p := newTestPool(t, Limits{})
	var wg sync.WaitGroup
	clients := make([]*Client, 5)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := p.Dial(context.Background(), h.config("node1"))
			if err != nil {
				t.Error(err)
			}
			clients[i] = c
		}()
	}
	wg.Wait()
	for _, c := range clients[1:] {
		if c != clients[0] {
			t.Fatal("Dial returned different clients for one host")
		}
	}
	if n := settled(h.srv.Logins, 1); n != 1 {
		t.Errorf("%d logins, want 1", n)
	}
	// A closed client is replaced by a new connection.
	clients[0].Close()
	c, err := p.Dial(context.Background(), h.config("node1"))
	if err != nil || c == clients[0] {
		t.Fatalf("redial after close: %v (same client: %v)", err, c == clients[0])
	}
	if _, err := c.Run(context.Background(), "true"); err != nil {
		t.Fatal(err)
	}
}

func TestRun(t *testing.T) {
	c := dial(t, startHost(t, sshtest.Options{}))
	tests := []struct {
		name       string
		cmd        string
		stdin      string
		wantOut    string
		wantCode   int // 0: success expected
		wantStderr string
	}{
		{name: "stdout returned", cmd: "echo hello; echo world", wantOut: "hello\nworld\n"},
		{name: "shell syntax works", cmd: "x=1; if [ $x = 1 ]; then echo yes; fi | tr a-z A-Z", wantOut: "YES\n"},
		{name: "single quotes survive", cmd: `printf '%s\n' "it's"`, wantOut: "it's\n"},
		{name: "stdin is passed", cmd: "cat; echo", stdin: "secret", wantOut: "secret\n"},
		{name: "exit code, stdout and stderr in RunError", cmd: "echo out; echo oops >&2; exit 3", wantOut: "out\n", wantCode: 3, wantStderr: "oops\n"},
		{name: "missing command is 127", cmd: "no-such-command-kubeforge", wantCode: 127, wantStderr: "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out string
			var err error
			if tt.stdin != "" {
				out, err = c.RunInput(context.Background(), tt.cmd, strings.NewReader(tt.stdin))
			} else {
				out, err = c.Run(context.Background(), tt.cmd)
			}
			if out != tt.wantOut {
				t.Errorf("stdout = %q, want %q", out, tt.wantOut)
			}
			if tt.wantCode == 0 {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				return
			}
			var re *RunError
			if !errors.As(err, &re) {
				t.Fatalf("err = %v, want *RunError", err)
			}
			if re.ExitCode != tt.wantCode || re.Host != "node1" || re.Cmd != tt.cmd || re.Stdout != tt.wantOut || !strings.Contains(re.Stderr, tt.wantStderr) {
				t.Errorf("RunError = %+v", re)
			}
			if msg := err.Error(); !strings.Contains(msg, "node1") || !strings.Contains(msg, fmt.Sprint(tt.wantCode)) {
				t.Errorf("message %q lacks host or exit code", msg)
			}
		})
	}
}

func TestRunLogsCommandsWithoutStdin(t *testing.T) {
	h := startHost(t, sshtest.Options{})
	var logs bytes.Buffer
	var mu sync.Mutex
	cfg := h.config("node1")
	cfg.Password = "hunter2-password"
	cfg.Logger = newBufLogger(&logs, &mu)
	c, err := newTestPool(t, Limits{}).Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.RunInput(context.Background(), "cat >/dev/null; echo bad >&2; exit 2", strings.NewReader("stdin-secret"))
	mu.Lock()
	got := logs.String()
	mu.Unlock()
	for _, want := range []string{"cat >/dev/null", "exit=2", "stderr=", "host=node1"} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %q:\n%s", want, got)
		}
	}
	for _, secret := range []string{"stdin-secret", "hunter2-password"} {
		if strings.Contains(got, secret) {
			t.Errorf("log contains secret %q", secret)
		}
	}
}

func TestRunCancelStopsLongCommand(t *testing.T) {
	dir := t.TempDir()
	c := dial(t, startHost(t, sshtest.Options{}))
	pidFile := filepath.Join(dir, "pid")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Run(ctx, "echo $$ > "+pidFile+"; sleep 30; echo done")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("cancelled command returned after %v", d)
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	fmt.Sscan(string(data), &pid)
	deadline := time.Now().Add(3 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("remote process %d still running after cancel", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The connection stays usable.
	if out, err := c.Run(context.Background(), "echo still"); err != nil || out != "still\n" {
		t.Fatalf("run after cancel = %q, %v", out, err)
	}
}

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	c := dial(t, startHost(t, sshtest.Options{}))
	content := []byte("line1\nbinary\x00\xff\r\n")
	os.WriteFile(filepath.Join(dir, "f"), content, 0o600)
	got, err := c.ReadFile(context.Background(), filepath.Join(dir, "f"))
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("ReadFile = %q, %v; want %q", got, err, content)
	}
	_, err = c.ReadFile(context.Background(), filepath.Join(dir, "missing"))
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "node1") {
		t.Fatalf("ReadFile(missing) err = %v, want ErrNotExist naming the host", err)
	}
}

func TestUpload(t *testing.T) {
	dir := t.TempDir()
	c := dial(t, startHost(t, sshtest.Options{}))
	big := filepath.Join(t.TempDir(), "big")
	bigData := make([]byte, 3<<20+17)
	rand.Read(bigData)
	os.WriteFile(big, bigData, 0o644)

	files := []File{
		{Path: dir + "/etc/kubernetes/pki/ca.key", Mode: 0o600, Data: []byte("KEY")},
		{Path: dir + "/etc/kubernetes/pki/ca.crt", Mode: 0o644, Data: []byte("CERT")},
		{Path: dir + "/usr/local/bin/tool", Mode: 0o755, Source: big},
		{Path: dir + "/empty", Data: nil},
	}
	changed, err := c.Upload(context.Background(), files)
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	if len(changed) != len(files) {
		t.Errorf("changed = %v, want all %d", changed, len(files))
	}
	want := map[string][]byte{files[0].Path: []byte("KEY"), files[1].Path: []byte("CERT"), files[2].Path: bigData, files[3].Path: {}}
	modes := map[string]os.FileMode{files[0].Path: 0o600, files[1].Path: 0o644, files[2].Path: 0o755, files[3].Path: 0o644}
	for p, data := range want {
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s: content differs (%d bytes, err %v)", p, len(got), err)
		}
		fi, _ := os.Stat(p)
		if fi.Mode().Perm() != modes[p] {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), modes[p])
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 0 {
			t.Errorf("%s: owner %d:%d, want 0:0", p, st.Uid, st.Gid)
		}
	}
	assertNoTemp(t, dir)

	t.Run("second upload changes nothing", func(t *testing.T) {
		changed, err := c.Upload(context.Background(), files)
		if err != nil || len(changed) != 0 {
			t.Fatalf("changed = %v, err %v; want none", changed, err)
		}
	})
	t.Run("precomputed digest skips", func(t *testing.T) {
		sum := sha256.Sum256([]byte("CERT"))
		f := files[1]
		f.SHA256 = strings.ToUpper(hex.EncodeToString(sum[:]))
		if changed, err := c.Upload(context.Background(), []File{f}); err != nil || len(changed) != 0 {
			t.Fatalf("changed = %v, err %v; want none", changed, err)
		}
	})
	t.Run("changed content or mode is uploaded again", func(t *testing.T) {
		os.Chmod(files[0].Path, 0o644)
		f1 := files[1]
		f1.Data = []byte("CERT2")
		changed, err := c.Upload(context.Background(), []File{files[0], f1, files[2]})
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{files[0].Path, f1.Path}; fmt.Sprint(changed) != fmt.Sprint(want) {
			t.Errorf("changed = %v, want %v", changed, want)
		}
		if fi, _ := os.Stat(files[0].Path); fi.Mode().Perm() != 0o600 {
			t.Errorf("mode not restored: %v", fi.Mode())
		}
	})
}

func TestUploadRejectsBadInput(t *testing.T) {
	c := dial(t, startHost(t, sshtest.Options{}))
	for _, tt := range []struct {
		name string
		file File
	}{
		{"relative path", File{Path: "etc/x"}},
		{"unclean path", File{Path: "/etc/../x"}},
		{"both data and source", File{Path: "/tmp/x", Data: []byte("a"), Source: "/etc/hostname"}},
		{"missing source", File{Path: "/tmp/x", Source: "/nonexistent/kubeforge"}},
		{"bad digest", File{Path: "/tmp/x", SHA256: "zz"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := c.Upload(context.Background(), []File{tt.file}); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestUploadFailureLeavesNoTempFile(t *testing.T) {
	dir := t.TempDir()
	c := dial(t, startHost(t, sshtest.Options{}))
	target := filepath.Join(dir, "conf")
	os.WriteFile(target, []byte("old"), 0o644)
	os.Mkdir(filepath.Join(dir, "adir"), 0o755)

	tests := []struct {
		name string
		file File
	}{
		// The digest is checked after streaming, before the rename.
		{"content does not match the given digest", File{Path: target, Data: []byte("new"), SHA256: strings.Repeat("0", 64)}},
		{"rename over a directory fails", File{Path: filepath.Join(dir, "adir"), Data: []byte("x")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := c.Upload(context.Background(), []File{tt.file}); err == nil {
				t.Fatal("upload succeeded")
			}
			assertNoTemp(t, dir)
			if got, _ := os.ReadFile(target); string(got) != "old" {
				t.Errorf("target changed to %q", got)
			}
		})
	}
}

func TestUploadIsAtomicForReaders(t *testing.T) {
	dir := t.TempDir()
	c := dial(t, startHost(t, sshtest.Options{}))
	target := filepath.Join(dir, "blob")
	versions := make([][]byte, 4)
	for i := range versions {
		versions[i] = bytes.Repeat([]byte{byte('a' + i)}, 2<<20)
	}
	os.WriteFile(target, versions[0], 0o644)
	stop := make(chan struct{})
	var bad []string
	var reads int
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // a reader that must only ever see a complete version
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			data, err := os.ReadFile(target)
			reads++
			if err != nil {
				bad = append(bad, err.Error())
				continue
			}
			ok := false
			for _, v := range versions {
				ok = ok || bytes.Equal(data, v)
			}
			if !ok {
				bad = append(bad, fmt.Sprintf("partial content of %d bytes", len(data)))
			}
		}
	}()
	for _, v := range versions[1:] {
		if _, err := c.Upload(context.Background(), []File{{Path: target, Data: v}}); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("reader saw %d bad states in %d reads, e.g. %s", len(bad), reads, bad[0])
	}
	if got, _ := os.ReadFile(target); !bytes.Equal(got, versions[3]) {
		t.Fatal("final content is not the last version")
	}
}

func TestLimits(t *testing.T) {
	t.Run("dials", func(t *testing.T) {
		for _, tt := range []struct {
			limit   int
			wantMax func(int) bool
		}{
			{limit: 2, wantMax: func(n int) bool { return n >= 1 && n <= 2 }},
			{limit: 6, wantMax: func(n int) bool { return n > 2 }}, // control: the counter sees concurrency
		} {
			t.Run(fmt.Sprint(tt.limit), func(t *testing.T) {
				h := startHost(t, sshtest.Options{HandshakeDelay: 150 * time.Millisecond})
				p := newTestPool(t, Limits{Dials: tt.limit})
				var wg sync.WaitGroup
				for i := range 6 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if _, err := p.Dial(context.Background(), h.config(fmt.Sprintf("node%d", i))); err != nil {
							t.Error(err)
						}
					}()
				}
				wg.Wait()
				if got := h.srv.MaxConcurrentHandshakes(); !tt.wantMax(got) {
					t.Errorf("limit %d: %d concurrent handshakes", tt.limit, got)
				}
				if got := settled(h.srv.Logins, 6); got != 6 {
					t.Errorf("%d logins, want 6", got)
				}
			})
		}
	})
	t.Run("sessions", func(t *testing.T) {
		for _, tt := range []struct {
			limit   int
			wantMax func(int) bool
		}{
			{limit: 2, wantMax: func(n int) bool { return n >= 1 && n <= 2 }},
			{limit: 0, wantMax: func(n int) bool { return n > 2 && n <= maxSessionsPerConn }}, // control, and the per-connection cap
		} {
			t.Run(fmt.Sprint(tt.limit), func(t *testing.T) {
				h := startHost(t, sshtest.Options{})
				p := newTestPool(t, Limits{Sessions: tt.limit})
				c, err := p.Dial(context.Background(), h.config("node1"))
				if err != nil {
					t.Fatal(err)
				}
				var wg sync.WaitGroup
				for range 12 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if _, err := c.Run(context.Background(), "sleep 0.2"); err != nil {
							t.Error(err)
						}
					}()
				}
				wg.Wait()
				if got := h.srv.MaxConcurrentSessions(); !tt.wantMax(got) {
					t.Errorf("limit %d: %d concurrent sessions", tt.limit, got)
				}
			})
		}
	})
}

func TestBastion(t *testing.T) {
	bastion := startHost(t, sshtest.Options{})
	target1 := startHost(t, sshtest.Options{NoForwarding: true})
	target2 := startHost(t, sshtest.Options{NoForwarding: true})
	p := newTestPool(t, Limits{})
	b := bastion.config("jump")
	for _, tgt := range []testHost{target1, target2} {
		cfg := tgt.config("node")
		cfg.Host = fmt.Sprint("node", tgt.srv.Port)
		cfg.Bastion = &b
		c, err := p.Dial(context.Background(), cfg)
		if err != nil {
			t.Fatalf("dial through bastion: %v", err)
		}
		if out, err := c.Run(context.Background(), "echo via"); err != nil || out != "via\n" {
			t.Fatalf("run = %q, %v", out, err)
		}
	}
	if got := settled(bastion.srv.Logins, 1); got != 1 {
		t.Errorf("bastion logins = %d, want 1 shared connection", got)
	}
	if got := bastion.srv.Forwards(); got != 2 {
		t.Errorf("bastion tunnels = %d, want 2", got)
	}

	t.Run("bastion host key is verified", func(t *testing.T) {
		bad := b
		bad.Host = "jump2"
		bad.KnownHostsFiles = []string{target1.known}
		cfg := target1.config("node-x")
		cfg.Bastion = &bad
		var hk *HostKeyError
		if _, err := newTestPool(t, Limits{}).Dial(context.Background(), cfg); !errors.As(err, &hk) || hk.Host != "jump2" {
			t.Fatalf("err = %v, want HostKeyError for the bastion", err)
		}
	})
}

func TestDialRemote(t *testing.T) {
	h := startHost(t, sshtest.Options{})
	c := dial(t, h)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err == nil {
			io.Copy(conn, conn)
			conn.Close()
		}
	}()
	conn, err := c.DialRemote(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo = %q, %v", buf, err)
	}
	if h.srv.Forwards() != 1 {
		t.Errorf("not tunnelled: %d forwards", h.srv.Forwards())
	}
}

func TestSSHConfig(t *testing.T) {
	bastion := startHost(t, sshtest.Options{})
	target := startHost(t, sshtest.Options{NoForwarding: true})
	cfgFile := filepath.Join(t.TempDir(), "config")
	os.WriteFile(cfgFile, []byte(fmt.Sprintf(`
Host jumpbox
  HostName 127.0.0.1
  Port %d
  IdentityFile %s

Host web1
  HostName 127.0.0.1
  Port %d
  User root
  IdentityFile %s
  ProxyJump jumpbox
`, bastion.srv.Port, bastion.key, target.srv.Port, target.key)), 0o600)
	known := filepath.Join(t.TempDir(), "known_hosts")
	os.WriteFile(known, []byte(bastion.srv.KnownHostsLine()+"\n"+target.srv.KnownHostsLine()+"\n"), 0o600)

	c, err := newTestPool(t, Limits{}).Dial(context.Background(), Config{
		Host: "web1", Address: "web1", UseSSHConfig: true, SSHConfigFile: cfgFile, KnownHostsFiles: []string{known},
	})
	if err != nil {
		t.Fatalf("dial via ssh config: %v", err)
	}
	if out, err := c.Run(context.Background(), "echo cfg"); err != nil || out != "cfg\n" {
		t.Fatalf("run = %q, %v", out, err)
	}
	if bastion.srv.Forwards() != 1 {
		t.Errorf("ProxyJump not used: bastion forwards = %d", bastion.srv.Forwards())
	}

	// Inventory values win over ssh config: a wrong explicit port fails.
	_, err = newTestPool(t, Limits{}).Dial(context.Background(), Config{
		Host: "web1", Address: "web1", Port: 1, UseSSHConfig: true, SSHConfigFile: cfgFile, KnownHostsFiles: []string{known},
	})
	if err == nil {
		t.Fatal("explicit port was overridden by ssh config")
	}
}

func TestQuote(t *testing.T) {
	c := dial(t, startHost(t, sshtest.Options{}))
	for _, s := range []string{"plain", "it's", `a"b`, "$HOME `id` \\ *", "new\nline", ""} {
		out, err := c.Run(context.Background(), "printf %s "+Quote(s))
		if err != nil || out != s {
			t.Errorf("Quote(%q) round trip = %q, %v", s, out, err)
		}
	}
}

// settled polls a server counter (updated by the server's goroutines after the client returns)
// until it equals want or a second passes, and returns its value.
func settled(counter func() int, want int) int {
	deadline := time.Now().Add(time.Second)
	for counter() != want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return counter()
}

func assertNoTemp(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), ".kubeforge-") {
			t.Errorf("temp file left: %s", p)
		}
		return nil
	})
}

// TestUploadDigestCacheNeverHidesAChange: large files' remote digests are
// cached by size, ctime and inode; rewriting the file with other bytes of the
// same size must still be seen as a change.
func TestUploadDigestCacheNeverHidesAChange(t *testing.T) {
	h := startHost(t, sshtest.Options{})
	ctx := context.Background()
	c, err := newTestPool(t, Limits{}).Dial(ctx, h.config("big"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "big.bin")
	data := bytes.Repeat([]byte("a"), 2<<20)
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "remote", "big.bin")
	f := []File{{Path: dst, Mode: 0o755, Source: src}}
	for i, want := range []int{1, 0} {
		changed, err := c.Upload(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		if len(changed) != want {
			t.Fatalf("upload %d changed %v; want %d files", i, changed, want)
		}
	}
	if entries, _ := os.ReadDir(h.sums); len(entries) != 1 {
		t.Fatalf("digest cache has %d entries; want 1", len(entries))
	}
	// Same size, other bytes, written in place (same inode).
	w, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.WriteAt([]byte("b"), 12345)
	w.Close()
	changed, err := c.Upload(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) != 1 {
		t.Fatalf("a same-size change in place was not seen: changed %v", changed)
	}
	got, _ := os.ReadFile(dst)
	if !bytes.Equal(got, data) {
		t.Fatal("remote file not restored")
	}
}

// lost waits until c's client side has seen its connection end.
func lost(t *testing.T, c *Client) {
	t.Helper()
	cn, err := c.current()
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-cn.dead:
	case <-time.After(5 * time.Second):
		t.Fatal("the client did not see its connection dropped")
	}
}

func TestLostConnectionIsRedialledByTheNextOperation(t *testing.T) {
	ops := []struct {
		name string
		op   func(ctx context.Context, t *testing.T, h testHost, p *Pool, c *Client) error
	}{
		{"Run", func(ctx context.Context, t *testing.T, _ testHost, _ *Pool, c *Client) error {
			out, err := c.Run(ctx, "echo back")
			if err == nil && out != "back\n" {
				t.Errorf("stdout = %q", out)
			}
			return err
		}},
		{"RunInput", func(ctx context.Context, t *testing.T, _ testHost, _ *Pool, c *Client) error {
			out, err := c.RunInput(ctx, "cat", strings.NewReader("in"))
			if err == nil && out != "in" {
				t.Errorf("stdout = %q", out)
			}
			return err
		}},
		{"ReadFile", func(ctx context.Context, t *testing.T, _ testHost, _ *Pool, c *Client) error {
			f := filepath.Join(t.TempDir(), "f")
			os.WriteFile(f, []byte("data"), 0o600)
			got, err := c.ReadFile(ctx, f)
			if err == nil && string(got) != "data" {
				t.Errorf("content = %q", got)
			}
			return err
		}},
		{"Upload", func(ctx context.Context, t *testing.T, _ testHost, _ *Pool, c *Client) error {
			f := filepath.Join(t.TempDir(), "up")
			changed, err := c.Upload(ctx, []File{{Path: f, Data: []byte("x")}})
			if got, _ := os.ReadFile(f); err == nil && (len(changed) != 1 || string(got) != "x") {
				t.Errorf("changed %v, content %q", changed, got)
			}
			return err
		}},
		{"DialRemote", func(ctx context.Context, t *testing.T, _ testHost, _ *Pool, c *Client) error {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				if conn, err := ln.Accept(); err == nil {
					conn.Write([]byte("hi"))
					conn.Close()
				}
			}()
			conn, err := c.DialRemote(ctx, "tcp", ln.Addr().String())
			if err != nil {
				return err
			}
			defer conn.Close()
			if b, err := io.ReadAll(conn); err != nil || string(b) != "hi" {
				t.Errorf("tunnel read %q, %v", b, err)
			}
			return nil
		}},
		{"Pool.Dial", func(ctx context.Context, t *testing.T, h testHost, p *Pool, c *Client) error {
			got, err := p.Dial(ctx, h.config("node1"))
			if err == nil && got != c {
				t.Error("Dial replaced the client instead of redialling it: its holders keep the dead one")
			}
			return err
		}},
	}
	for _, op := range ops {
		for _, noticed := range []bool{true, false} {
			// noticed: the client saw the connection end; otherwise the operation may be the first to find out.
			t.Run(fmt.Sprintf("%s/noticed=%v", op.name, noticed), func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				h := startHost(t, sshtest.Options{})
				var logs bytes.Buffer
				var mu sync.Mutex
				cfg := h.config("node1")
				cfg.Logger = newBufLogger(&logs, &mu)
				p := newTestPool(t, Limits{})
				c, err := p.Dial(ctx, cfg)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := c.Run(ctx, "true"); err != nil {
					t.Fatal(err)
				}
				if n := h.srv.DropConnections(); n != 1 {
					t.Fatalf("dropped %d connections, want 1", n)
				}
				if noticed {
					lost(t, c)
				}
				if err := op.op(ctx, t, h, p, c); err != nil {
					t.Fatalf("%s after the connection dropped: %v", op.name, err)
				}
				// Pool.Dial redials only a connection known lost; then the next operation finds out.
				if _, err := c.Run(ctx, "true"); err != nil {
					t.Errorf("Run on the redialled connection: %v", err)
				}
				if got := h.srv.Connections(); got != 2 {
					t.Errorf("server saw %d connections, want 2 (one redial)", got)
				}
				mu.Lock()
				defer mu.Unlock()
				if n := strings.Count(logs.String(), "connection lost; redialled"); n != 1 {
					t.Errorf("%d redial warnings, want 1:\n%s", n, logs.String())
				}
			})
		}
	}
}

func TestConnectionLostDuringCommandIsNotRetried(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := startHost(t, sshtest.Options{})
	c := dial(t, h)
	runs := filepath.Join(t.TempDir(), "runs")
	cmd := "echo run >> " + runs + "; sleep 30"
	errc := make(chan error, 1)
	go func() {
		_, err := c.Run(ctx, cmd)
		errc <- err
	}()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(runs); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the command did not start")
		}
	}
	h.srv.DropConnections()
	err := <-errc

	var cl *ConnLostError
	if !errors.As(err, &cl) {
		t.Fatalf("err = %v (%T), want *ConnLostError", err, err)
	}
	if cl.Host != "node1" || cl.Cmd != cmd || !cl.Started {
		t.Errorf("ConnLostError = %+v", cl)
	}
	var re *RunError
	if errors.As(err, &re) {
		t.Errorf("a lost connection is also a RunError: %+v", re)
	}
	msg := err.Error()
	for _, want := range []string{"connection to node1 lost", "sleep 30", "re-run"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "-1") {
		t.Errorf("message %q shows an exit code", msg)
	}
	if got := h.srv.Connections(); got != 1 {
		t.Errorf("server saw %d connections when Run returned, want 1 (no retry of a command that ran)", got)
	}
	// The next call redials.
	if out, err := c.Run(ctx, "echo again"); err != nil || out != "again\n" {
		t.Fatalf("next Run = %q, %v", out, err)
	}
	if got, _ := os.ReadFile(runs); string(got) != "run\n" {
		t.Errorf("the lost command ran %d times", strings.Count(string(got), "run"))
	}
}

// frontDoor is one TCP address that forwards each connection to the server it points at (none:
// connections are reset at once), so a test can change the host behind an address.
type frontDoor struct {
	ln     net.Listener
	mu     sync.Mutex
	target string
}

func startFrontDoor(t *testing.T, target string) *frontDoor {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	d := &frontDoor{ln: ln, target: target}
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			d.mu.Lock()
			target := d.target
			d.mu.Unlock()
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.(*net.TCPConn).SetLinger(0)
				in.Close()
				continue
			}
			go func() { io.Copy(out, in); out.Close() }()
			go func() { io.Copy(in, out); in.Close() }()
		}
	}()
	return d
}

func (d *frontDoor) point(target string) {
	d.mu.Lock()
	d.target = target
	d.mu.Unlock()
}

func TestRedialFailure(t *testing.T) {
	other, _, err := sshtest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		// behind starts what serves the host's address after the drop ("": connections are reset)
		behind func(t *testing.T, srv *sshtest.Server, signer xssh.Signer) string
		check  func(t *testing.T, err error)
	}{
		{
			name:   "host is down",
			behind: func(*testing.T, *sshtest.Server, xssh.Signer) string { return "" },
			check: func(t *testing.T, err error) {
				if !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("err = %v, want connection reset", err)
				}
			},
		},
		{
			name: "host key changed",
			behind: func(t *testing.T, _ *sshtest.Server, signer xssh.Signer) string {
				return sshtest.Start(t, sshtest.Options{HostKey: other, AuthorizedKeys: []xssh.PublicKey{signer.PublicKey()}}).Addr
			},
			check: func(t *testing.T, err error) {
				var hk *HostKeyError
				if !errors.As(err, &hk) || !hk.Changed || hk.Host != "node1" {
					t.Errorf("err = %v, want a changed-key HostKeyError for node1", err)
				}
			},
		},
		{
			name: "login refused",
			behind: func(t *testing.T, srv *sshtest.Server, _ xssh.Signer) string {
				return sshtest.Start(t, sshtest.Options{HostKey: srv.HostKey}).Addr
			},
			check: func(t *testing.T, err error) {
				var ae *AuthError
				if !errors.As(err, &ae) || ae.Host != "node1" {
					t.Errorf("err = %v, want an AuthError for node1", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			signer, keyFile := sshtest.WriteKey(t, "")
			srv := sshtest.Start(t, sshtest.Options{AuthorizedKeys: []xssh.PublicKey{signer.PublicKey()}})
			door := startFrontDoor(t, srv.Addr)
			addr := door.ln.Addr().(*net.TCPAddr)
			known := filepath.Join(t.TempDir(), "known_hosts")
			os.WriteFile(known, []byte(knownhosts.Line([]string{knownhosts.Normalize(addr.String())}, srv.HostKey.PublicKey())+"\n"), 0o600)
			cfg := Config{Host: "node1", Address: "127.0.0.1", Port: addr.Port, IdentityFiles: []string{keyFile},
				KnownHostsFiles: []string{known}, ConnectTimeout: 5 * time.Second}
			c, err := newTestPool(t, Limits{}).Dial(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			door.point(tt.behind(t, srv, signer))
			srv.DropConnections()
			lost(t, c)

			marker := filepath.Join(t.TempDir(), "ran")
			_, err = c.Run(ctx, "touch "+marker)
			var cl *ConnLostError
			if !errors.As(err, &cl) || cl.Started || cl.Host != "node1" {
				t.Fatalf("err = %v, want a *ConnLostError before the command started", err)
			}
			if msg := err.Error(); !strings.Contains(msg, "node1") || !strings.Contains(msg, "did not run") {
				t.Errorf("message %q does not name the host or say the command did not run", msg)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Error("the command ran")
			}
			tt.check(t, err)

			// A failed redial is tried again by the next call: the host is back.
			door.point(srv.Addr)
			if out, err := c.Run(ctx, "echo back"); err != nil || out != "back\n" {
				t.Fatalf("Run once the host is back = %q, %v", out, err)
			}
			if got := srv.Connections(); got != 2 {
				t.Errorf("host saw %d connections, want 2", got)
			}
		})
	}
}

func TestConcurrentCallersShareOneRedial(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// A slow handshake keeps the redial in flight while the other callers arrive.
	h := startHost(t, sshtest.Options{HandshakeDelay: 100 * time.Millisecond})
	var logs bytes.Buffer
	var mu sync.Mutex
	cfg := h.config("node1")
	cfg.Logger = newBufLogger(&logs, &mu)
	c, err := newTestPool(t, Limits{}).Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.srv.DropConnections()
	lost(t, c)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if out, err := c.Run(ctx, fmt.Sprint("echo ", i)); err != nil || out != fmt.Sprintln(i) {
				t.Errorf("Run %d = %q, %v", i, out, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if got := h.srv.Connections(); got != 2 {
		t.Errorf("server saw %d connections, want 2 (one shared redial)", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(logs.String(), "connection lost; redialled"); n != 1 {
		t.Errorf("%d redials logged, want 1", n)
	}
}

func TestLostBastionIsRedialled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	bastion := startHost(t, sshtest.Options{})
	target := startHost(t, sshtest.Options{NoForwarding: true})
	b := bastion.config("jump")
	cfg := target.config("node1")
	cfg.Bastion = &b
	c, err := newTestPool(t, Limits{}).Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	bastion.srv.DropConnections() // takes the tunnelled connection with it
	lost(t, c)
	if out, err := c.Run(ctx, "echo via"); err != nil || out != "via\n" {
		t.Fatalf("Run after the bastion dropped = %q, %v", out, err)
	}
	if got := bastion.srv.Connections(); got != 2 {
		t.Errorf("bastion saw %d connections, want 2", got)
	}
	if got := bastion.srv.Forwards(); got != 2 {
		t.Errorf("bastion tunnels = %d, want 2 (the redial went through it)", got)
	}
}

// The known_hosts files are parsed once per pool, and again when one changes:
// a key replaced in the file is seen by the next dial.
func TestKnownHostsParsedOnceAndReread(t *testing.T) {
	a, _, err := sshtest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := sshtest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "known_hosts")
	write := func(k xssh.Signer, at time.Time) {
		t.Helper()
		if err := os.WriteFile(file, []byte(knownhosts.Line([]string{"[127.0.0.1]:2222"}, k.PublicKey())+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(file, at, at); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	write(a, now)
	cfg := &Config{Host: "node1", Address: "127.0.0.1", Port: 2222, KnownHostsFiles: []string{file}, Logger: slog.New(slog.DiscardHandler)}
	var h hostKeys
	for i := range 3 {
		cb, _, err := h.callback(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := cb("", nil, a.PublicKey()); err != nil {
			t.Fatalf("dial %d: the recorded key is refused: %v", i, err)
		}
	}
	if h.parses != 1 {
		t.Errorf("3 dials parsed the unchanged file %d times, want once", h.parses)
	}
	write(b, now.Add(time.Second)) // the host was reinstalled and its line replaced
	cb, _, err := h.callback(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var hk *HostKeyError
	if err := cb("", nil, a.PublicKey()); !errors.As(err, &hk) || !hk.Changed {
		t.Errorf("after the file changed, the old key: %v; want a changed-key error", err)
	}
	if err := cb("", nil, b.PublicKey()); err != nil {
		t.Errorf("after the file changed, the new key is refused: %v", err)
	}
	if h.parses != 2 {
		t.Errorf("the changed file was parsed %d times in all, want 2", h.parses)
	}
}

// TestCheckSmallFilesInOneBatch: the small files are stated and hashed together;
// every reason still comes out per file, names with spaces included, and a
// symlink or a directory at a path is no file.
func TestCheckSmallFilesInOneBatch(t *testing.T) {
	dir := t.TempDir()
	c := dial(t, startHost(t, sshtest.Options{}))
	write := func(name, data string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	same := write("same file", "A", 0o644)
	content := write("content", "old", 0o644)
	mode := write("mode", "M", 0o644)
	owner := write("owner", "O", 0o644)
	if err := os.Chown(owner, 1, 1); err != nil {
		t.Skip("cannot chown:", err)
	}
	target := write("target", "L", 0o644)
	link := filepath.Join(dir, "link")
	os.Symlink(target, link)
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o755)
	files := []File{
		{Path: same, Data: []byte("A")},
		{Path: content, Data: []byte("new")},
		{Path: mode, Mode: 0o600, Data: []byte("M")},
		{Path: owner, Data: []byte("O")},
		{Path: link, Data: []byte("L")},
		{Path: sub, Data: []byte("D")},
		{Path: filepath.Join(dir, "absent"), Data: []byte("X")},
	}
	diffs, err := c.Check(context.Background(), files)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Reason{}
	for _, d := range diffs {
		got[d.Path] = d.Reason
	}
	want := map[string]Reason{content: ReasonContent, mode: ReasonMode, owner: ReasonOwner, link: ReasonMissing,
		sub: ReasonMissing, filepath.Join(dir, "absent"): ReasonMissing}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("diffs = %v\nwant    %v", got, want)
	}
}

// TestCopyFilesRecordsWhatItWrote: a copy on the host is made once, lands
// atomically with its mode, and its digest is in the sums cache, so the next
// check of the copy reads the cache (a wrong cached digest shows it).
func TestCopyFilesRecordsWhatItWrote(t *testing.T) {
	h := startHost(t, sshtest.Options{})
	ctx := context.Background()
	c := dial(t, h)
	dir := t.TempDir()
	data := bytes.Repeat([]byte("k"), 2<<20)
	from, to := filepath.Join(dir, "kubelet"), filepath.Join(dir, "kubectl")
	if err := os.WriteFile(from, data, 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	cp := []Copy{{From: from, To: to, Mode: 0o755, SHA256: hex.EncodeToString(sum[:])}}
	for i, want := range []int{1, 0} {
		out, err := c.CopyFiles(ctx, cp, false)
		if err != nil || len(out) != want {
			t.Fatalf("copy %d: wrote %v, err %v; want %d files", i, out, err, want)
		}
	}
	if got, err := os.ReadFile(to); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the copy differs (err %v)", err)
	}
	if fi, _ := os.Stat(to); fi.Mode().Perm() != 0o755 {
		t.Errorf("mode %v, want 0755", fi.Mode().Perm())
	}
	assertNoTemp(t, dir)
	// The check of the copy answers from the cache: make the cached digest lie.
	entries, _ := os.ReadDir(h.sums)
	if len(entries) != 1 {
		t.Fatalf("digest cache has %d entries; want 1", len(entries))
	}
	e := filepath.Join(h.sums, entries[0].Name())
	rec, _ := os.ReadFile(e)
	lines := strings.SplitN(string(rec), "\n", 2)
	if err := os.WriteFile(e, []byte(lines[0]+"\n"+strings.Repeat("0", 64)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	diffs, err := c.Check(ctx, []File{{Path: to, Mode: 0o755, Source: from}})
	if err != nil || len(diffs) != 1 || diffs[0].Reason != ReasonContent {
		t.Fatalf("check of the copy = %v, %v; want content differs from the cached digest", diffs, err)
	}
	if _, err := c.CopyFiles(ctx, []Copy{{From: filepath.Join(dir, "absent"), To: to, Mode: 0o755, SHA256: cp[0].SHA256}}, false); err == nil {
		t.Error("a missing source was not an error")
	}
	if out, err := c.CopyFiles(ctx, []Copy{{From: filepath.Join(dir, "absent"), To: to, Mode: 0o755, SHA256: cp[0].SHA256}}, true); err != nil || len(out) != 0 {
		t.Errorf("ifExists with a missing source: wrote %v, err %v; want nothing", out, err)
	}
}

// TestUploadedFilesAreNeverOpenToOthers: every file the upload writes over
// SFTP is, when the server opens it, already private (0600, as root made
// it): a key is never readable by another user, not even for a moment
// before a chmod.
func TestUploadedFilesAreNeverOpenToOthers(t *testing.T) {
	old := syscall.Umask(0o022) // what sshd and sftp-server usually run with
	defer syscall.Umask(old)
	dir := t.TempDir()
	var mu sync.Mutex
	seen := map[string]os.FileMode{}
	c := dial(t, startHost(t, sshtest.Options{OnSFTPOpen: func(p string) {
		fi, err := os.Lstat(p)
		mu.Lock()
		defer mu.Unlock()
		if err == nil && strings.HasPrefix(p, dir) {
			seen[p] = fi.Mode()
		}
	}}))
	files := []File{
		{Path: dir + "/pki/ca.key", Mode: 0o600, Data: []byte("PRIVATE KEY")},
		{Path: dir + "/pki/sa.key", Mode: 0o600, Data: bytes.Repeat([]byte("k"), 3<<20)},
		{Path: dir + "/admin.conf", Mode: 0o640, Data: []byte("client-key-data: x")},
	}
	if _, err := c.Upload(context.Background(), files); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != len(files) {
		t.Fatalf("the server opened %d files, want %d: %v", len(seen), len(files), seen)
	}
	for p, m := range seen {
		if m.Perm()&0o077 != 0 || !m.IsRegular() {
			t.Errorf("%s was %v when the server opened it; want no access for group or others", p, m)
		}
	}
}

// TestUploadToAFullDiskSaysSo: a write the host fails is reported with the
// host, the file, and the space the file needs against what is free; no
// partial file is left, under its name or a temp one.
func TestUploadToAFullDiskSaysSo(t *testing.T) {
	if _, err := exec.LookPath("sudo"); err != nil {
		t.Skip("the non-root case needs sudo:", err)
	}
	h := startHost(t, sshtest.Options{DiskFree: 64 << 10})
	for _, user := range []string{"root", "kubeforge"} { // direct, and staged for sudo install
		t.Run(user, func(t *testing.T) {
			dir := t.TempDir()
			target := filepath.Join(dir, "kubelet")
			os.WriteFile(target, []byte("old"), 0o755)
			cfg := h.config("node7")
			cfg.User = user
			c, err := newTestPool(t, Limits{}).Dial(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			files := []File{
				{Path: target, Mode: 0o755, Data: bytes.Repeat([]byte("b"), 1<<20)},
				{Path: filepath.Join(dir, "kubectl"), Mode: 0o755, Data: []byte("small")},
			}
			_, err = c.Upload(context.Background(), files)
			var we *WriteError
			if !errors.As(err, &we) {
				t.Fatalf("err = %v, want a *WriteError", err)
			}
			if we.Host != "node7" || we.Path != target || we.Need != 1<<20 || we.Free != 64<<10 {
				t.Errorf("WriteError %+v", we)
			}
			for _, want := range []string{"node7", target, "out of space", "1.0 MiB", "64.0 KiB"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if got, _ := os.ReadFile(target); string(got) != "old" {
				t.Errorf("target changed to %d bytes", len(got))
			}
			assertNoTemp(t, dir)
			if c.stageDir != "" {
				if entries, _ := os.ReadDir(c.stageDir); len(entries) != 0 {
					t.Errorf("staged files left: %v", entries)
				}
			}
		})
	}
}

// TestFetchTakesExactlyTheExpectedSize: a fetch from a peer stops at the
// first byte past the expected size and says a cut one is short, both the
// peer's failure; a file the fetching host cannot write is the host's
// failure, named with its path and cause. Nothing is left behind.
func TestFetchTakesExactlyTheExpectedSize(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("fetching needs bash:", err)
	}
	ctx := context.Background()
	src := t.TempDir()
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	sum := sha256.Sum256(data)
	digest := hex.EncodeToString(sum[:])
	os.WriteFile(filepath.Join(src, "blob"), data, 0o644)
	secret := strings.Repeat("5a", 32)
	srv, err := peer.New(peer.Config{Listen: "127.0.0.1:0", Secret: secret, Files: map[string]string{digest: filepath.Join(src, "blob")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	addr := make(chan net.Addr, 1)
	served := make(chan struct{})
	go func() { srv.Serve(sctx, func(a net.Addr) { addr <- a }); close(served) }()
	t.Cleanup(func() { stop(); <-served })
	port := (<-addr).(*net.TCPAddr).Port

	tests := []struct {
		name    string
		size    int64 // what the host is told to expect
		limit   int64 // the host's file size limit
		ok      bool
		failure FetchFailure
		reason  []string
	}{
		{name: "the expected size", size: int64(len(data)), ok: true},
		{name: "more bytes than expected", size: 1000, failure: FetchBadPeer, reason: []string{"oversize", "1000 bytes"}},
		{name: "fewer bytes than expected", size: int64(len(data)) + 1, failure: FetchBadPeer, reason: []string{"short", "1048576 of 1048577 bytes"}},
		{name: "the host cannot write", size: int64(len(data)), limit: 64 << 10, failure: FetchHostFailed,
			reason: []string{"write ", ".blob.kubeforge-", "File too large", "1048576 bytes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, startHost(t, sshtest.Options{FileSizeLimit: tt.limit}))
			dst := filepath.Join(t.TempDir(), "bin", "blob")
			res, err := c.Fetch(ctx, []PeerFile{{File: File{Path: dst, Mode: 0o755, SHA256: digest}, Size: tt.size, Addr: "127.0.0.1", Port: port, Secret: secret}})
			if err != nil || len(res) != 1 {
				t.Fatalf("fetch: %+v, %v", res, err)
			}
			r := res[0]
			if r.OK != tt.ok || (!tt.ok && r.Failure != tt.failure) {
				t.Fatalf("result %+v; want ok %v, failure %v", r, tt.ok, tt.failure)
			}
			for _, want := range tt.reason {
				if !strings.Contains(r.Reason, want) {
					t.Errorf("reason %q does not say %q", r.Reason, want)
				}
			}
			got, err := os.ReadFile(dst)
			if tt.ok && !bytes.Equal(got, data) {
				t.Errorf("fetched %d bytes, %v; want the file", len(got), err)
			}
			if !tt.ok && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s exists after a failed fetch", dst)
			}
			assertNoTemp(t, filepath.Dir(dst))
		})
	}
}

// A run killed mid-upload leaves its temp file; the next upload to that
// directory sweeps those an hour old, and leaves a younger one (a run under
// way) and every other file alone.
func TestUploadSweepsTempFilesOfKilledRuns(t *testing.T) {
	dir := t.TempDir()
	stale, young, other := dir+"/.kubelet.kubeforge-0a1b2c3d4e5f", dir+"/.admin.conf.kubeforge-6a7b8c9d0e1f", dir+"/.keep.me"
	for _, p := range []string{stale, young, other} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	for _, p := range []string{stale, other} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	c := dial(t, startHost(t, sshtest.Options{}))
	if _, err := c.Upload(context.Background(), []File{{Path: dir + "/kubelet", Mode: 0o755, Data: []byte("bin")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("a killed run's temp file is still there: %v", err)
	}
	for _, p := range []string{young, other} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s was removed: %v", p, err)
		}
	}
}
