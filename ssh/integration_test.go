//go:build integration

package ssh

// Integration tests against real OpenSSH: sshd instances started on loopback ports with their own
// configuration, test users created with useradd (needs root), ssh-agent and sudo.
// Run: go test -tags integration ./ssh/...

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	userSudo   = "kftest-sudo"
	userNoSudo = "kftest-nosudo"
	userTTY    = "kftest-tty"
	testPass   = "kf-Test-pw-91"
)

// sshd is a running OpenSSH server.
type sshd struct {
	port    int
	known   string // known_hosts with its host keys
	hostDir string
	mu      sync.Mutex
	log     bytes.Buffer
}

func (s *sshd) logText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

func (s *sshd) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.Write(p)
}

// env is the shared set-up: keys, users, sudoers.
type env struct {
	dir      string
	keysDir  string // AuthorizedKeysFile dir: one file per user
	rootKey  string // ed25519 identity of root
	sudoKey  string // rsa identity of kftest-sudo
	agentKey string // ecdsa key loaded into the agent, authorized for root
	encKey   string // encrypted ed25519 key, authorized for root
}

func requireTools(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("integration tests need root: they create users, sudoers files and run sshd")
	}
	for _, tool := range []string{"/usr/sbin/sshd", "ssh-keygen", "ssh-agent", "ssh-add", "sudo", "useradd", "chpasswd"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("integration tests need %s (apt-get install openssh-server openssh-client sudo): %v", tool, err)
		}
	}
}

func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func keygen(t *testing.T, path, typ, passphrase string) {
	t.Helper()
	run(t, nil, "ssh-keygen", "-q", "-t", typ, "-N", passphrase, "-C", "kubeforge-test", "-f", path)
}

func authorize(t *testing.T, e *env, user string, keys ...string) {
	t.Helper()
	var b strings.Builder
	for _, k := range keys {
		pub, err := os.ReadFile(k + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		b.Write(pub)
	}
	if err := os.WriteFile(filepath.Join(e.keysDir, user), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func addUser(t *testing.T, name string) {
	t.Helper()
	_ = exec.Command("userdel", "-r", name).Run() // left over from an interrupted run
	run(t, nil, "useradd", "-m", "-s", "/bin/sh", name)
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", "-r", name).CombinedOutput(); err != nil {
			t.Logf("userdel %s: %v %s", name, err, out)
		}
	})
	cmd := exec.Command("chpasswd")
	cmd.Stdin = strings.NewReader(name + ":" + testPass + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chpasswd: %v %s", err, out)
	}
}

func sudoers(t *testing.T, name, content string) {
	t.Helper()
	p := "/etc/sudoers.d/" + name
	if err := os.WriteFile(p, []byte(content), 0o440); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(p) })
	run(t, nil, "visudo", "-c", "-f", p)
}

func setup(t *testing.T) *env {
	requireTools(t)
	dir := t.TempDir()
	// sshd reads authorized keys as the user: the directories must be traversable.
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	e := &env{dir: dir, keysDir: filepath.Join(dir, "keys")}
	os.Mkdir(e.keysDir, 0o755)
	e.rootKey = filepath.Join(dir, "id_root")
	e.sudoKey = filepath.Join(dir, "id_sudo")
	e.agentKey = filepath.Join(dir, "id_agent")
	e.encKey = filepath.Join(dir, "id_enc")
	keygen(t, e.rootKey, "ed25519", "")
	keygen(t, e.sudoKey, "rsa", "")
	keygen(t, e.agentKey, "ecdsa", "")
	keygen(t, e.encKey, "ed25519", "open sesame")
	authorize(t, e, "root", e.rootKey, e.agentKey, e.encKey)
	for _, u := range []string{userSudo, userNoSudo, userTTY} {
		addUser(t, u)
	}
	authorize(t, e, userSudo, e.sudoKey)
	authorize(t, e, userNoSudo, e.sudoKey)
	authorize(t, e, userTTY, e.sudoKey)
	sudoers(t, "kftest-sudo", userSudo+" ALL=(ALL) NOPASSWD: ALL\n")
	sudoers(t, "kftest-tty", "Defaults:"+userTTY+" requiretty\n"+userTTY+" ALL=(ALL) NOPASSWD: ALL\n")
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil { // privilege separation directory
		t.Fatal(err)
	}
	return e
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startSSHD runs `sshd -D -e -f cfg -p PORT` with its own host keys and config.
func startSSHD(t *testing.T, e *env, name string, forwarding bool) *sshd {
	t.Helper()
	dir := filepath.Join(e.dir, name)
	os.Mkdir(dir, 0o755)
	s := &sshd{port: freePort(t), hostDir: dir}
	var known strings.Builder
	var hostKeys string
	for _, typ := range []string{"ed25519", "rsa"} {
		k := filepath.Join(dir, "host_"+typ)
		keygen(t, k, typ, "")
		hostKeys += "HostKey " + k + "\n"
		pub, _ := os.ReadFile(k + ".pub")
		fields := strings.Fields(string(pub))
		fmt.Fprintf(&known, "[127.0.0.1]:%d %s %s\n", s.port, fields[0], fields[1])
	}
	s.known = filepath.Join(dir, "known_hosts")
	os.WriteFile(s.known, []byte(known.String()), 0o600)
	yes := map[bool]string{true: "yes", false: "no"}
	cfg := hostKeys + `ListenAddress 127.0.0.1
PidFile ` + filepath.Join(dir, "sshd.pid") + `
AuthorizedKeysFile ` + e.keysDir + `/%u
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
AllowTcpForwarding ` + yes[forwarding] + `
Subsystem sftp internal-sftp
LogLevel DEBUG1
`
	cfgFile := filepath.Join(dir, "sshd_config")
	os.WriteFile(cfgFile, []byte(cfg), 0o600)
	cmd := exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", cfgFile, "-p", strconv.Itoa(s.port))
	cmd.Stdout, cmd.Stderr = s, s
	cmd.WaitDelay = 2 * time.Second // per-connection children may still hold stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.port))
		if err == nil {
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(line, "SSH-2.0-") {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd on port %d did not start:\n%s", s.port, s.logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *sshd) config(host, user string, keys ...string) Config {
	return Config{Host: host, Address: "127.0.0.1", Port: s.port, User: user, IdentityFiles: keys,
		KnownHostsFiles: []string{s.known}, ConnectTimeout: 10 * time.Second, SumsDir: filepath.Join(s.hostDir, "sums")}
}

func TestIntegrationOpenSSH(t *testing.T) {
	e := setup(t)
	srv := startSSHD(t, e, "target", false)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("auth", func(t *testing.T) {
		agentSock := startSSHAgent(t, e.dir, e.agentKey)
		tests := []struct {
			name     string
			cfg      Config
			agent    bool
			wantUser string
			wantAuth bool
		}{
			{name: "key as root", cfg: srv.config("k", "root", e.rootKey), wantUser: "root"},
			{name: "encrypted key", cfg: withPassphrase(srv.config("enc", "root", e.encKey), "open sesame"), wantUser: "root"},
			{name: "agent", cfg: withAgent(srv.config("agent", "root")), agent: true, wantUser: "root"},
			{name: "password", cfg: withPassword(srv.config("pw", userNoSudo), testPass), wantUser: userNoSudo},
			{name: "rsa key for non-root user", cfg: srv.config("rsa", userSudo, e.sudoKey), wantUser: userSudo},
			{name: "wrong password", cfg: withPassword(srv.config("badpw", userNoSudo), "wrong"), wantAuth: true},
			{name: "root password login is refused", cfg: withPassword(srv.config("rootpw", "root"), testPass), wantAuth: true},
			{name: "unauthorized key", cfg: srv.config("badkey", userNoSudo, e.rootKey), wantAuth: true},
			{name: "agent key without the agent", cfg: withAgent(srv.config("noagent", "root")), wantAuth: true},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if tt.agent {
					t.Setenv("SSH_AUTH_SOCK", agentSock)
				} else {
					t.Setenv("SSH_AUTH_SOCK", "")
				}
				p := NewPool(Limits{})
				defer p.Close()
				c, err := p.Dial(ctx, tt.cfg)
				if tt.wantAuth {
					var ae *AuthError
					if !errors.As(err, &ae) {
						t.Fatalf("err = %v, want *AuthError", err)
					}
					return
				}
				if err != nil {
					t.Fatalf("dial: %v\nsshd log:\n%s", err, srv.logText())
				}
				out, err := c.RunUnprivileged(ctx, "id -un")
				if err != nil || strings.TrimSpace(out) != tt.wantUser {
					t.Fatalf("id -un = %q, %v; want %s", out, err, tt.wantUser)
				}
			})
		}
	})

	t.Run("host keys", func(t *testing.T) {
		write := filepath.Join(t.TempDir(), "state", "known_hosts")
		cfg := srv.config("hk", "root", e.rootKey)
		cfg.KnownHostsFiles = []string{filepath.Join(t.TempDir(), "missing")}
		cfg.KnownHostsWrite = write
		var hk *HostKeyError
		if _, err := newTestPool(t, Limits{}).Dial(ctx, cfg); !errors.As(err, &hk) || hk.Changed || !strings.HasPrefix(hk.Fingerprint, "SHA256:") {
			t.Fatalf("unknown host: err = %v", err)
		}
		cfg.AcceptNewHostKeys = true
		p := NewPool(Limits{})
		if _, err := p.Dial(ctx, cfg); err != nil {
			t.Fatalf("accept new: %v", err)
		}
		p.Close()
		cfg.AcceptNewHostKeys = false
		p = NewPool(Limits{})
		if _, err := p.Dial(ctx, cfg); err != nil {
			t.Fatalf("recorded key: %v", err)
		}
		p.Close()
		// Only the RSA key known (sshd also has ed25519): the known key type is asked for.
		lines := strings.Split(strings.TrimSpace(readFile(t, srv.known)), "\n")
		rsaOnly := filepath.Join(t.TempDir(), "rsa_only")
		os.WriteFile(rsaOnly, []byte(lines[1]+"\n"), 0o600)
		cfg = srv.config("rsa-known", "root", e.rootKey)
		cfg.KnownHostsFiles = []string{rsaOnly}
		p = NewPool(Limits{})
		if _, err := p.Dial(ctx, cfg); err != nil {
			t.Fatalf("host with only its RSA key known: %v", err)
		}
		p.Close()
		// Another server's keys recorded for this address: changed, fatal.
		other := startSSHD(t, e, "other", false)
		forged := strings.ReplaceAll(readFile(t, other.known), fmt.Sprintf(":%d ", other.port), fmt.Sprintf(":%d ", srv.port))
		forgedFile := filepath.Join(t.TempDir(), "forged")
		os.WriteFile(forgedFile, []byte(forged), 0o600)
		cfg.KnownHostsFiles = []string{forgedFile}
		cfg.KnownHostsWrite, cfg.AcceptNewHostKeys = filepath.Join(t.TempDir(), "kh"), true
		if _, err := newTestPool(t, Limits{}).Dial(ctx, cfg); !errors.As(err, &hk) || !hk.Changed || hk.KnownFile != forgedFile {
			t.Fatalf("changed host key: err = %v", err)
		}
	})

	t.Run("sudo", func(t *testing.T) {
		tests := []struct {
			name    string
			user    string
			wantFix string // "" = privileged
		}{
			{name: "root", user: "root"},
			{name: "passwordless sudo", user: userSudo},
			{name: "no sudo rights", user: userNoSudo, wantFix: "NOPASSWD"},
			{name: "requiretty", user: userTTY, wantFix: "requiretty"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				key := e.sudoKey
				if tt.user == "root" {
					key = e.rootKey
				}
				p := NewPool(Limits{})
				defer p.Close()
				c, err := p.Dial(ctx, srv.config("sudo-"+tt.user, tt.user, key))
				if err != nil {
					t.Fatal(err)
				}
				err = c.CheckSudo(ctx)
				if tt.wantFix == "" {
					if err != nil {
						t.Fatalf("CheckSudo = %v", err)
					}
					if out, err := c.Run(ctx, "id -u"); err != nil || out != "0\n" {
						t.Fatalf("privileged id -u = %q, %v", out, err)
					}
					return
				}
				var se *SudoError
				if !errors.As(err, &se) || !strings.Contains(err.Error(), tt.wantFix) || !strings.Contains(err.Error(), "sudo-"+tt.user) {
					t.Fatalf("CheckSudo = %v, want a SudoError naming the host and %q", err, tt.wantFix)
				}
				var re *RunError
				if _, err := c.Run(ctx, "true"); !errors.As(err, &re) {
					t.Errorf("privileged Run without sudo: %v, want RunError", err)
				}
			})
		}
	})

	t.Run("upload as non-root through sudo install", func(t *testing.T) {
		p := NewPool(Limits{})
		defer p.Close()
		c, err := p.Dial(ctx, srv.config("up", userSudo, e.sudoKey))
		if err != nil {
			t.Fatal(err)
		}
		base := t.TempDir()
		big := filepath.Join(t.TempDir(), "big")
		os.WriteFile(big, bytes.Repeat([]byte("0123456789abcdef"), 1<<17), 0o644)
		files := []File{
			{Path: base + "/etc/kubernetes/pki/ca.key", Mode: 0o600, Data: []byte("private\n")},
			{Path: base + "/etc/kubernetes/admin.conf", Mode: 0o640, Data: []byte("kubeconfig\n")},
			{Path: base + "/usr/bin/tool", Mode: 0o755, Source: big},
		}
		changed, err := c.Upload(ctx, files)
		if err != nil || len(changed) != 3 {
			t.Fatalf("upload: %v %v", changed, err)
		}
		for _, f := range files {
			fi, err := os.Stat(f.Path)
			if err != nil {
				t.Fatal(err)
			}
			st := fi.Sys().(*syscall.Stat_t)
			if fi.Mode().Perm() != f.Mode || st.Uid != 0 || st.Gid != 0 {
				t.Errorf("%s: mode %v owner %d:%d", f.Path, fi.Mode().Perm(), st.Uid, st.Gid)
			}
			want := f.Data
			if f.Source != "" {
				want, _ = os.ReadFile(f.Source)
			}
			if got, _ := os.ReadFile(f.Path); !bytes.Equal(got, want) {
				t.Errorf("%s: content differs", f.Path)
			}
		}
		assertNoTemp(t, base)
		if changed, err := c.Upload(ctx, files); err != nil || len(changed) != 0 {
			t.Fatalf("second upload changed %v, %v", changed, err)
		}
		got, err := c.ReadFile(ctx, files[0].Path)
		if err != nil || string(got) != "private\n" {
			t.Fatalf("ReadFile of a root-only file = %q, %v", got, err)
		}
		stage := c.stageDir
		if stage == "" {
			t.Fatal("no staging directory used")
		}
		if entries, _ := os.ReadDir(stage); len(entries) != 0 {
			t.Errorf("staged files left: %v", entries)
		}
		c.Close()
		if _, err := os.Stat(stage); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("staging directory %s left after Close", stage)
		}
	})

	t.Run("upload as root", func(t *testing.T) {
		p := NewPool(Limits{})
		defer p.Close()
		c, err := p.Dial(ctx, srv.config("root-up", "root", e.rootKey))
		if err != nil {
			t.Fatal(err)
		}
		base := t.TempDir()
		f := File{Path: base + "/a/b/c.conf", Mode: 0o600, Data: []byte("x=1\n")}
		if changed, err := c.Upload(ctx, []File{f}); err != nil || len(changed) != 1 {
			t.Fatalf("upload: %v %v", changed, err)
		}
		if fi, err := os.Stat(f.Path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("stat: %v %v", fi, err)
		}
		if changed, err := c.Upload(ctx, []File{f}); err != nil || len(changed) != 0 {
			t.Fatalf("second upload: %v %v", changed, err)
		}
	})

	t.Run("bastion", func(t *testing.T) {
		jump := startSSHD(t, e, "jump", true)
		target2 := startSSHD(t, e, "target2", false)
		p := NewPool(Limits{})
		defer p.Close()
		b := jump.config("jump", "root", e.rootKey)
		for _, tgt := range []*sshd{srv, target2} {
			cfg := tgt.config(fmt.Sprint("behind-", tgt.port), userSudo, e.sudoKey)
			cfg.Bastion = &b
			c, err := p.Dial(ctx, cfg)
			if err != nil {
				t.Fatalf("dial through bastion: %v\njump log:\n%s", err, jump.logText())
			}
			if out, err := c.Run(ctx, "id -u"); err != nil || out != "0\n" {
				t.Fatalf("run through bastion = %q, %v", out, err)
			}
		}
		log := jump.logText()
		if n := strings.Count(log, "Accepted publickey"); n != 1 {
			t.Errorf("bastion authenticated %d connections, want 1 shared:\n%s", n, log)
		}
		for _, tgt := range []*sshd{srv, target2} {
			if !strings.Contains(log, fmt.Sprintf("port %d", tgt.port)) {
				t.Errorf("bastion log shows no tunnel to port %d:\n%s", tgt.port, log)
			}
		}
		// Forwarding is off on the target: it cannot be a bastion.
		cfg := target2.config("no-fwd", "root", e.rootKey)
		nb := srv.config("bad-jump", "root", e.rootKey)
		cfg.Bastion = &nb
		if _, err := newTestPool(t, Limits{}).Dial(ctx, cfg); err == nil {
			t.Fatal("tunnel through a host without forwarding succeeded")
		}
	})
}

func withPassword(c Config, pw string) Config { c.Password = pw; return c }
func withAgent(c Config) Config               { c.UseAgent = true; return c }
func withPassphrase(c Config, pp string) Config {
	c.Passphrase = func(string) ([]byte, error) { return []byte(pp), nil }
	return c
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// startSSHAgent runs a real ssh-agent on a socket and loads key into it.
func startSSHAgent(t *testing.T, dir, key string) string {
	t.Helper()
	sock := filepath.Join(dir, "agent.sock")
	cmd := exec.Command("ssh-agent", "-D", "-a", sock)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start ssh-agent: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i > 100 {
			t.Fatal("ssh-agent socket did not appear")
		}
		time.Sleep(20 * time.Millisecond)
	}
	run(t, []string{"SSH_AUTH_SOCK=" + sock}, "ssh-add", key)
	return sock
}
