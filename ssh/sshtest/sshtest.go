// Package sshtest runs an in-process SSH server for tests: it executes exec requests with
// `/bin/sh -c` on the local machine, serves SFTP on the local filesystem, forwards direct-tcpip
// channels (so it can act as a bastion) and counts concurrent handshakes and sessions.
package sshtest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Options configure a Server. The zero value accepts nobody: give keys or passwords.
type Options struct {
	HostKey        ssh.Signer        // nil: a new ed25519 key
	AuthorizedKeys []ssh.PublicKey   // public keys accepted for any user
	Passwords      map[string]string // user -> password
	HandshakeDelay time.Duration     // sleep before each handshake (makes concurrency observable)
	Dir            string            // working directory of commands (default: the process's)
	NoForwarding   bool              // refuse direct-tcpip channels
	// OnSFTPOpen, when set, is called with the path of each file the SFTP
	// server opened, once it is open and before the client hears so: the
	// file as it is then is what any other process could first see of it.
	OnSFTPOpen func(path string)
	// DiskFree, when positive, makes the SFTP server act as if its disk had
	// that many bytes free: a write reaching past that offset of a file fails
	// as ENOSPC does with OpenSSH (SSH_FX_FAILURE), and statvfs@openssh.com
	// reports that much free.
	DiskFree int64
	// FileSizeLimit, when positive, runs commands with writes limited to that
	// many bytes per file (ulimit -f, SIGXFSZ ignored): a write past it fails
	// with EFBIG, as one to a full disk fails with ENOSPC.
	FileSizeLimit int64
}

// Server is a running test SSH server.
type Server struct {
	Addr    string // 127.0.0.1:port
	Host    string // 127.0.0.1
	Port    int
	HostKey ssh.Signer

	opts     Options
	cfg      *ssh.ServerConfig
	ln       net.Listener
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]bool
	closed   bool
	shake    counter
	inShake  map[string]func() // remote address -> end of its handshake (once)
	sessions counter
	logins   atomic.Int64
	accepted atomic.Int64
	forwards atomic.Int64
}

type counter struct {
	mu       sync.Mutex
	cur, max int
}

func (c *counter) inc() {
	c.mu.Lock()
	c.cur++
	c.max = max(c.max, c.cur)
	c.mu.Unlock()
}

func (c *counter) dec() {
	c.mu.Lock()
	c.cur--
	c.mu.Unlock()
}

func (c *counter) peak() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.max
}

// Start starts a server on a loopback port; it stops when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatalf("start test ssh server: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// New starts a server on a loopback port. Close stops it.
func New(opts Options) (*Server, error) {
	if opts.HostKey == nil {
		var err error
		if opts.HostKey, _, err = NewKey(); err != nil {
			return nil, err
		}
	}
	s := &Server{HostKey: opts.HostKey, opts: opts, conns: map[net.Conn]bool{}, inShake: map[string]func(){}}
	s.cfg = &ssh.ServerConfig{
		PasswordCallback: func(meta ssh.ConnMetadata, pw []byte) (*ssh.Permissions, error) {
			if want, ok := opts.Passwords[meta.User()]; ok && want == string(pw) {
				return nil, nil
			}
			return nil, errors.New("wrong password")
		},
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			for _, k := range opts.AuthorizedKeys {
				if string(k.Marshal()) == string(key.Marshal()) {
					return nil, nil
				}
			}
			return nil, errors.New("key not authorized")
		},
	}
	s.cfg.AuthLogCallback = func(meta ssh.ConnMetadata, _ string, err error) {
		if err == nil { // called before the success message is sent
			s.handshakeDone(meta.RemoteAddr().String())
		}
	}
	s.cfg.AddHostKey(opts.HostKey)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.ln = ln
	s.Addr = ln.Addr().String()
	s.Host = "127.0.0.1"
	s.Port = ln.Addr().(*net.TCPAddr).Port
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// Close stops the server and closes every connection.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// DropConnections closes every client connection at the TCP level, as a network failure or a
// restarted host would, and returns how many it closed. The server keeps accepting new ones.
func (s *Server) DropConnections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.Close()
	}
	return len(s.conns)
}

// MaxConcurrentHandshakes is the peak number of connections in handshake (before auth completed) at once.
func (s *Server) MaxConcurrentHandshakes() int { return s.shake.peak() }

// MaxConcurrentSessions is the peak number of exec sessions running at once.
func (s *Server) MaxConcurrentSessions() int { return s.sessions.peak() }

// Connections is the number of TCP connections accepted.
func (s *Server) Connections() int { return int(s.accepted.Load()) }

// Logins is the number of connections that authenticated.
func (s *Server) Logins() int { return int(s.logins.Load()) }

// Forwards is the number of direct-tcpip channels opened (connections tunnelled through this server).
func (s *Server) Forwards() int { return int(s.forwards.Load()) }

// KnownHostsLine is the known_hosts line for this server's key at its address.
func (s *Server) KnownHostsLine() string {
	return knownhosts.Line([]string{knownhosts.Normalize(s.Addr)}, s.HostKey.PublicKey())
}

// WriteKnownHosts writes a known_hosts file holding this server's key and returns its path.
func (s *Server) WriteKnownHosts(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(p, []byte(s.KnownHostsLine()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// NewKey returns a new ed25519 signer and its private key in OpenSSH PEM format.
func NewKey() (ssh.Signer, []byte, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, nil, err
	}
	return signer, pem.EncodeToMemory(block), nil
}

// WriteKey writes a new private key (mode 0600) in a temp dir and returns its signer and path.
// A non-empty passphrase encrypts the file.
func WriteKey(t testing.TB, passphrase string) (ssh.Signer, string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	var block *pem.Block
	if passphrase == "" {
		block, err = ssh.MarshalPrivateKey(priv, "")
	} else {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte(passphrase))
	}
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "id_ed25519")
	if err := os.WriteFile(p, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	return signer, p
}

func (s *Server) track(c net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.closed {
			return false
		}
		s.conns[c] = true
	} else {
		delete(s.conns, c)
	}
	return true
}

func (s *Server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.accepted.Add(1)
		if !s.track(c, true) {
			c.Close()
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.track(c, false)
			defer c.Close()
			s.handle(c)
		}()
	}
}

// handshakeDone ends the handshake of the connection from remote (counted once). It is called
// when authentication succeeds, before the client learns it, so a client that starts its next dial
// right after never sees this connection still counted.
func (s *Server) handshakeDone(remote string) {
	s.mu.Lock()
	done := s.inShake[remote]
	delete(s.inShake, remote)
	s.mu.Unlock()
	if done != nil {
		done()
	}
}

func (s *Server) handle(c net.Conn) {
	s.shake.inc()
	remote := c.RemoteAddr().String()
	s.mu.Lock()
	s.inShake[remote] = sync.OnceFunc(s.shake.dec)
	s.mu.Unlock()
	if s.opts.HandshakeDelay > 0 {
		time.Sleep(s.opts.HandshakeDelay)
	}
	sc, chans, reqs, err := ssh.NewServerConn(c, s.cfg)
	s.handshakeDone(remote)
	if err != nil {
		return
	}
	s.logins.Add(1)
	defer sc.Close()
	go ssh.DiscardRequests(reqs) // keepalives get a (false) reply
	var wg sync.WaitGroup
	defer wg.Wait()
	for nc := range chans {
		switch nc.ChannelType() {
		case "session":
			ch, creqs, err := nc.Accept()
			if err != nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.session(ch, creqs)
			}()
		case "direct-tcpip":
			if s.opts.NoForwarding {
				nc.Reject(ssh.Prohibited, "forwarding disabled")
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.forward(nc)
			}()
		default:
			nc.Reject(ssh.UnknownChannelType, "unsupported")
		}
	}
}

// forward serves a direct-tcpip channel: RFC 4254 7.2 payload host, port, origin host, origin port.
func (s *Server) forward(nc ssh.NewChannel) {
	var p struct {
		Host       string
		Port       uint32
		OriginHost string
		OriginPort uint32
	}
	if err := ssh.Unmarshal(nc.ExtraData(), &p); err != nil {
		nc.Reject(ssh.ConnectionFailed, "bad payload")
		return
	}
	conn, err := net.Dial("tcp", net.JoinHostPort(p.Host, strconv.Itoa(int(p.Port))))
	if err != nil {
		nc.Reject(ssh.ConnectionFailed, err.Error())
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		conn.Close()
		return
	}
	s.forwards.Add(1)
	go ssh.DiscardRequests(reqs)
	done := make(chan struct{}, 2)
	go func() { io.Copy(ch, conn); ch.CloseWrite(); done <- struct{}{} }()
	go func() { io.Copy(conn, ch); conn.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	<-done
	<-done
	ch.Close()
	conn.Close()
}

// session serves exec and the sftp subsystem.
func (s *Server) session(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	for req := range reqs {
		switch req.Type {
		case "exec":
			var p struct{ Command string }
			if err := ssh.Unmarshal(req.Payload, &p); err != nil {
				req.Reply(false, nil)
				continue
			}
			req.Reply(true, nil)
			s.exec(ch, reqs, p.Command)
			return
		case "subsystem":
			var p struct{ Name string }
			if err := ssh.Unmarshal(req.Payload, &p); err != nil || p.Name != "sftp" {
				req.Reply(false, nil)
				continue
			}
			req.Reply(true, nil)
			go ssh.DiscardRequests(reqs)
			var rwc io.ReadWriteCloser = ch
			if s.opts.OnSFTPOpen != nil || s.opts.DiskFree > 0 {
				rwc = newSFTPFilter(ch, &s.opts)
			}
			srv, err := sftp.NewServer(rwc)
			if err != nil {
				return
			}
			_ = srv.Serve()
			srv.Close()
			return
		case "env":
			req.Reply(true, nil)
		default:
			req.Reply(false, nil)
		}
	}
}

// exec runs command with /bin/sh -c, as sshd runs it with the user's shell, in its own process group.
func (s *Server) exec(ch ssh.Channel, reqs <-chan *ssh.Request, command string) {
	s.sessions.inc()
	defer s.sessions.dec()
	if n := s.opts.FileSizeLimit; n > 0 {
		command = "trap '' XFSZ; ulimit -f " + strconv.FormatInt((n+511)/512, 10) + "; " + command
	}
	cmd := exec.Command("/bin/sh", "-c", command)
	cmd.Dir = s.opts.Dir
	cmd.Stdout = ch
	cmd.Stderr = ch.Stderr()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return
	}
	if err := cmd.Start(); err != nil {
		fmt := "exec: " + err.Error() + "\n"
		ch.Stderr().Write([]byte(fmt))
		sendExit(ch, 127)
		return
	}
	go func() {
		io.Copy(stdin, ch)
		stdin.Close()
	}()
	kill := func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	go func() { // signals from the client; the client closing the channel kills the command too
		for req := range reqs {
			if req.Type == "signal" {
				kill()
			}
			if req.WantReply {
				req.Reply(false, nil)
			}
		}
		kill()
	}()
	err = cmd.Wait()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			ch.SendRequest("exit-signal", false, ssh.Marshal(struct {
				Signal     string
				CoreDumped bool
				Msg, Lang  string
			}{Signal: signalName(ws.Signal())}))
			return
		}
		code = ee.ExitCode()
	} else if err != nil {
		code = 255
	}
	sendExit(ch, code)
}

func sendExit(ch ssh.Channel, code int) {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, uint32(code))
	ch.SendRequest("exit-status", false, b)
}

func signalName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGKILL:
		return "KILL"
	case syscall.SIGTERM:
		return "TERM"
	case syscall.SIGINT:
		return "INT"
	case syscall.SIGHUP:
		return "HUP"
	}
	return strconv.Itoa(int(sig))
}
