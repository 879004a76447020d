package ssh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/pkg/sftp"
	xssh "golang.org/x/crypto/ssh"
)

// maxSessionsPerConn keeps concurrent exec sessions on one connection under sshd's default
// MaxSessions 10, leaving one for the SFTP session.
const maxSessionsPerConn = 9

// Client is the connection to one host. It is safe for concurrent use. A connection that is lost
// (dropped, or silent to keepalives) is redialled by the next operation that needs it; a command
// that was running when it was lost fails with a *ConnLostError and is not run again.
type Client struct {
	pool  *Pool
	cfg   Config
	key   string
	slots chan struct{} // session slots (sshd's MaxSessions counts per connection)
	close sync.Once

	mu     sync.Mutex
	cur    *conn      // the connection in use; a redial replaces it
	redial *redialing // the redial in flight, shared by the callers that lost cur
	closed bool       // Close was called

	sftpMu   sync.Mutex // guards stageDir and the connections' sftp sessions
	stageDir string
}

// conn is one SSH connection of a Client.
type conn struct {
	ssh  *xssh.Client
	dead chan struct{} // closed when the connection ends
	sftp *sftp.Client  // opened on first use; guarded by Client.sftpMu
}

// redialing is a redial in flight; done is closed when err is set.
type redialing struct {
	done      chan struct{}
	err       error
	cancelled bool // it failed because the redialling caller's context ended
}

func newClient(p *Pool, cfg Config, key string, sc *xssh.Client) *Client {
	return &Client{pool: p, cfg: cfg, key: key, cur: newConn(sc, cfg), slots: make(chan struct{}, maxSessionsPerConn)}
}

func newConn(sc *xssh.Client, cfg Config) *conn {
	cn := &conn{ssh: sc, dead: make(chan struct{})}
	go func() {
		sc.Wait()
		close(cn.dead)
	}()
	if cfg.KeepAlive > 0 {
		go cn.keepAlive(cfg.KeepAlive, cfg.Logger)
	}
	return cn
}

// keepAlive sends keepalive@openssh.com requests; a connection that does not answer within
// three intervals is closed, so the next operation redials.
func (cn *conn) keepAlive(interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-cn.dead:
			return
		case <-t.C:
		}
		watchdog := time.AfterFunc(3*interval, func() {
			log.Warn("connection lost: no answer to keepalive", "after", 3*interval)
			cn.ssh.Close()
		})
		_, _, err := cn.ssh.SendRequest("keepalive@openssh.com", true, nil)
		watchdog.Stop()
		if err != nil {
			return
		}
	}
}

func (cn *conn) alive() bool {
	select {
	case <-cn.dead:
		return false
	default:
		return true
	}
}

// current returns the connection in use, or an error once the client is closed.
func (c *Client) current() (*conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("connection to %s closed", c.cfg.Host)
	}
	return c.cur, nil
}

// withConn calls open with the connection in use. When that connection is lost before open could
// start anything on the host (it had ended, or open failed for a transport error), the client
// redials once and calls open again. what names the operation for the *ConnLostError it returns
// when that fails too.
func (c *Client) withConn(ctx context.Context, what string, open func(*conn) error) error {
	cn, err := c.current()
	if err != nil {
		return err
	}
	if cn.alive() {
		if err = open(cn); err == nil || !lostConn(ctx, err) {
			return err
		}
	}
	if cn, err = c.reconnect(ctx, cn); err != nil {
		return &ConnLostError{Host: c.cfg.Host, Cmd: what, Err: fmt.Errorf("redial: %w", err)}
	}
	if err = open(cn); err != nil && lostConn(ctx, err) {
		return &ConnLostError{Host: c.cfg.Host, Cmd: what, Err: err}
	}
	return err
}

// lostConn reports whether err, from opening a channel or a request on it, means the connection is
// gone (not refused by the host, nor cancelled by the caller).
func lostConn(ctx context.Context, err error) bool {
	var oe *net.OpError
	return ctx.Err() == nil && (errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.As(err, &oe))
}

// reconnect replaces the lost connection old with a new one, dialled as the first was: through the
// pool (its dial limit and retries) and the bastion, verifying the host key. The callers that lost
// the same connection share one redial; a caller that finds old already replaced gets the new one.
func (c *Client) reconnect(ctx context.Context, old *conn) (*conn, error) {
	old.ssh.Close() // a transport error may not have ended it yet
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, fmt.Errorf("connection to %s closed", c.cfg.Host)
		}
		if c.cur != old {
			cn := c.cur
			c.mu.Unlock()
			return cn, nil
		}
		if r := c.redial; r != nil {
			c.mu.Unlock()
			select {
			case <-r.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if r.err != nil && !r.cancelled {
				return nil, r.err
			}
			continue // redialled, or the caller that tried gave up: look again
		}
		r := &redialing{done: make(chan struct{})}
		c.redial = r
		c.mu.Unlock()

		start := time.Now()
		sc, err := c.pool.dial(ctx, c.cfg)
		c.mu.Lock()
		c.redial = nil
		switch {
		case err != nil:
			r.err, r.cancelled = err, ctx.Err() != nil
			c.cfg.Logger.Warn("connection lost; redial failed", "err", err)
		case c.closed:
			sc.Close()
			r.err = fmt.Errorf("connection to %s closed", c.cfg.Host)
		default:
			c.cur = newConn(sc, c.cfg)
			c.cfg.Logger.Warn("connection lost; redialled", "duration", time.Since(start).Round(time.Millisecond))
		}
		cn := c.cur
		close(r.done)
		c.mu.Unlock()
		if r.err != nil {
			return nil, r.err
		}
		return cn, nil
	}
}

// ConnLostError says the connection to Host was lost. When Started, Cmd was running (or being
// started) and may have had some or all of its effects; it is not run again. Otherwise nothing
// ran: the connection was found lost and the redial failed (Err says why). The next operation on
// the client redials.
type ConnLostError struct {
	Host    string
	Cmd     string // the command; empty for uploads and tunnels
	Started bool
	Err     error
}

// Error names the host and the command, says whether the command may have run, and what to do.
func (e *ConnLostError) Error() string {
	msg := "connection to " + e.Host + " lost"
	switch {
	case e.Cmd != "" && e.Started:
		msg += fmt.Sprintf(" while running `%s`", Shorten(e.Cmd, 200))
	case e.Cmd != "":
		msg += fmt.Sprintf(" before running `%s` (it did not run)", Shorten(e.Cmd, 200))
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	var hk *HostKeyError
	var ae *AuthError
	switch {
	case e.Started:
		msg += "; the command may have run in part or completely: check the host, then re-run (the next command reconnects)"
	case !errors.As(e.Err, &hk) && !errors.As(e.Err, &ae):
		msg += "; check that the host is up and its sshd accepts connections, then re-run"
	}
	return msg
}

// Unwrap returns the transport's or the redial's error.
func (e *ConnLostError) Unwrap() error { return e.Err }

// Host returns the inventory name of the host.
func (c *Client) Host() string { return c.cfg.Host }

// User returns the SSH user.
func (c *Client) User() string { return c.cfg.User }

// Logger returns the per-host logger.
func (c *Client) Logger() *slog.Logger { return c.cfg.Logger }

func (c *Client) root() bool { return c.cfg.User == "root" }

// SudoError says that a non-root user cannot run privileged commands, and how to fix it.
type SudoError struct {
	Host   string
	User   string
	Reason string // what sudo said
	Fix    string
}

// Error names the host, the problem and the fix.
func (e *SudoError) Error() string {
	return fmt.Sprintf("check sudo on %s: user %s cannot run commands as root without a password: %s; fix: %s", e.Host, e.User, e.Reason, e.Fix)
}

// CheckSudo returns nil when the user is root or passwordless sudo works (`sudo -n true`), otherwise
// a *SudoError naming the host and the fix (NOPASSWD, requiretty, installing sudo).
func (c *Client) CheckSudo(ctx context.Context) error {
	if c.root() {
		return nil
	}
	_, err := c.run(ctx, "LC_ALL=C sudo -n true", nil, false)
	var re *RunError
	if err == nil || !errors.As(err, &re) {
		return err
	}
	e := &SudoError{Host: c.cfg.Host, User: c.cfg.User, Reason: strings.TrimSpace(re.Stderr)}
	switch msg := strings.ToLower(re.Stderr); {
	case re.ExitCode == 127 || strings.Contains(msg, "not found"):
		e.Reason = "sudo is not installed"
		e.Fix = "install sudo and grant passwordless sudo, or connect as root"
	case strings.Contains(msg, "tty"):
		e.Fix = fmt.Sprintf("disable requiretty for this user: add `Defaults:%s !requiretty` in /etc/sudoers.d/", c.cfg.User)
	default:
		e.Fix = fmt.Sprintf("add `%s ALL=(ALL) NOPASSWD: ALL` to /etc/sudoers.d/%s (mode 0440), or connect as root", c.cfg.User, c.cfg.User)
	}
	if e.Reason == "" {
		e.Reason = fmt.Sprintf("`sudo -n true` exited %d", re.ExitCode)
	}
	return e
}

// Run runs cmd through `sh -c` with root privileges (prefixing `sudo -n` when the user is not root),
// without a PTY. It returns stdout; a command that fails gives a *RunError. Every command and its
// result go to the host's logger (never stdin or stdout). Cancelling ctx kills the command.
func (c *Client) Run(ctx context.Context, cmd string) (string, error) {
	return c.run(ctx, cmd, nil, true)
}

// RunInput is Run with stdin (for secrets and content that must not appear in the command line or logs).
func (c *Client) RunInput(ctx context.Context, cmd string, stdin io.Reader) (string, error) {
	return c.run(ctx, cmd, stdin, true)
}

// RunUnprivileged runs cmd as the SSH user (never through sudo).
func (c *Client) RunUnprivileged(ctx context.Context, cmd string) (string, error) {
	return c.run(ctx, cmd, nil, false)
}

// maxLoggedStderr bounds the stderr kept in log records.
const maxLoggedStderr = 4096

func (c *Client) run(ctx context.Context, cmd string, stdin io.Reader, privileged bool) (string, error) {
	full := "sh -c " + Quote(cmd)
	if privileged && !c.root() {
		full = "sudo -n -- " + full
	}
	release, err := c.acquireSession(ctx)
	if err != nil {
		return "", fmt.Errorf("run %q on %s: %w", Shorten(cmd, 200), c.cfg.Host, err)
	}
	defer release()
	var sess *xssh.Session
	err = c.withConn(ctx, cmd, func(cn *conn) (err error) {
		sess, err = cn.ssh.NewSession()
		return err
	})
	var lost *ConnLostError
	if errors.As(err, &lost) {
		c.cfg.Logger.Info("command not run: connection lost", "cmd", cmd, "err", lost.Err)
		return "", err
	}
	if err != nil {
		return "", fmt.Errorf("open session on %s: %w", c.cfg.Host, err)
	}
	defer sess.Close()
	var stdout, stderr bytes.Buffer
	sess.Stdout, sess.Stderr = &stdout, &stderr
	if stdin != nil {
		sess.Stdin = stdin
	}
	start := time.Now()
	if err := sess.Start(full); err != nil {
		if lostConn(ctx, err) { // the exec request may have reached the host
			c.cfg.Logger.Info("command failed: connection lost", "cmd", cmd, "err", err)
			return "", &ConnLostError{Host: c.cfg.Host, Cmd: cmd, Started: true, Err: err}
		}
		return "", fmt.Errorf("start %q on %s: %w", Shorten(cmd, 200), c.cfg.Host, err)
	}
	stop := context.AfterFunc(ctx, func() {
		_ = sess.Signal(xssh.SIGKILL)
		sess.Close()
	})
	err = sess.Wait()
	cancelled := !stop()
	dur := time.Since(start).Round(time.Millisecond)
	log := c.cfg.Logger.With("cmd", cmd, "duration", dur, "stdout_bytes", stdout.Len())
	if stderr.Len() > 0 {
		log = log.With("stderr", Shorten(stderr.String(), maxLoggedStderr))
	}
	if cancelled || (err != nil && ctx.Err() != nil) {
		log.Info("command cancelled", "err", ctx.Err())
		return stdout.String(), fmt.Errorf("run %q on %s: %w", Shorten(cmd, 200), c.cfg.Host, ctx.Err())
	}
	re := &RunError{Host: c.cfg.Host, Cmd: cmd, Stdout: stdout.String(), Stderr: stderr.String()}
	var exitErr *xssh.ExitError
	var missing *xssh.ExitMissingError
	switch {
	case err == nil:
		log.Info("command", "exit", 0)
		return stdout.String(), nil
	case errors.As(err, &exitErr):
		re.ExitCode = exitErr.ExitStatus()
		if exitErr.Signal() != "" {
			re.Signal = exitErr.Signal()
		}
	case errors.As(err, &missing), lostConn(ctx, err):
		// The session ended without an exit status: the connection dropped under the command.
		log.Info("command failed: connection lost", "err", err)
		return stdout.String(), &ConnLostError{Host: c.cfg.Host, Cmd: cmd, Started: true, Err: err}
	default:
		log.Info("command failed", "err", err)
		return stdout.String(), fmt.Errorf("run %q on %s: %w", Shorten(cmd, 200), c.cfg.Host, err)
	}
	log.Info("command", "exit", re.ExitCode, "signal", re.Signal)
	return stdout.String(), re
}

// acquireSession takes a pool-wide and a per-client session slot.
func (c *Client) acquireSession(ctx context.Context) (func(), error) {
	if err := c.pool.sessions.Acquire(ctx, 1); err != nil {
		return nil, err
	}
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		c.pool.sessions.Release(1)
		return nil, ctx.Err()
	}
	return func() {
		<-c.slots
		c.pool.sessions.Release(1)
	}, nil
}

// RunError is a remote command that failed.
type RunError struct {
	Host     string
	Cmd      string
	ExitCode int    // the exit status; 128+n when killed by signal n (a lost connection is a *ConnLostError)
	Signal   string // signal name, when killed by one
	Stdout   string
	Stderr   string
}

// Error names the host, the command, the exit code and the end of stderr.
func (e *RunError) Error() string {
	status := fmt.Sprintf("exit code %d", e.ExitCode)
	if e.Signal != "" {
		status = "killed by signal " + e.Signal
	}
	msg := fmt.Sprintf("run %q on %s: %s", Shorten(e.Cmd, 200), e.Host, status)
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += ": " + lastLines(s, 5, 1000)
	}
	return msg
}

// ReadFile returns the content of a remote file, read with root privileges. A missing file gives an
// error wrapping os.ErrNotExist (a *fs.PathError).
func (c *Client) ReadFile(ctx context.Context, path string) ([]byte, error) {
	q := Quote(path)
	out, err := c.run(ctx, "[ -e "+q+" ] || exit 44; exec cat -- "+q, nil, true)
	var re *RunError
	if errors.As(err, &re) && re.ExitCode == 44 {
		return nil, &fs.PathError{Op: "read", Path: c.cfg.Host + ":" + path, Err: fs.ErrNotExist}
	}
	if err != nil {
		return nil, err
	}
	return []byte(out), nil
}

// DialRemote opens a TCP connection from the host to addr through the SSH connection
// (for example to reach an API server listening on the host's loopback).
func (c *Client) DialRemote(ctx context.Context, network, addr string) (net.Conn, error) {
	var nc net.Conn
	err := c.withConn(ctx, "", func(cn *conn) (err error) {
		nc, err = cn.ssh.DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s through %s: %w", addr, c.cfg.Host, err)
	}
	return nc, nil
}

// tunnel opens a TCP connection from the host to addr on the connection in use, without redialling
// (the pool redials a lost bastion before it dials through it).
func (c *Client) tunnel(ctx context.Context, addr string) (net.Conn, error) {
	cn, err := c.current()
	if err != nil {
		return nil, err
	}
	return cn.ssh.DialContext(ctx, "tcp", addr)
}

// Close closes the connection (and its SFTP session), removing the upload staging directory of a
// non-root user. The bastion it went through stays open for other hosts until the pool closes.
func (c *Client) Close() error {
	var err error
	c.close.Do(func() {
		c.sftpMu.Lock()
		if cn, cerr := c.current(); cerr == nil && c.stageDir != "" && cn.alive() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if _, rerr := c.run(ctx, "rm -rf -- "+Quote(c.stageDir), nil, false); rerr != nil {
				c.cfg.Logger.Warn("remove upload staging directory", "dir", c.stageDir, "err", rerr)
			}
			cancel()
		}
		c.mu.Lock()
		c.closed = true
		cn := c.cur
		c.mu.Unlock()
		if cn.sftp != nil {
			cn.sftp.Close()
		}
		c.sftpMu.Unlock()
		if cerr := cn.ssh.Close(); cerr != nil && cn.alive() {
			err = fmt.Errorf("close connection to %s: %w", c.cfg.Host, cerr)
		}
		<-cn.dead
		c.cfg.Logger.Info("disconnected")
	})
	return err
}

// Quote quotes s for a POSIX shell (single quotes).
func Quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Shorten cuts s to n bytes, saying how many more there were.
func Shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + fmt.Sprintf("...(%d more bytes)", len(s)-n)
}

// lastLines returns the last n lines of s, at most max bytes.
func lastLines(s string, n, max int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	out := strings.Join(lines, "\n")
	if len(out) > max {
		out = "..." + out[len(out)-max:]
	}
	return out
}
