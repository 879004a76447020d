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

// Client is one connection to a host. It is safe for concurrent use.
type Client struct {
	pool  *Pool
	cfg   Config
	key   string
	ssh   *xssh.Client
	slots chan struct{} // per-connection session slots
	dead  chan struct{} // closed when the connection ends
	close sync.Once

	sudoOnce sync.Once
	sudoErr  error

	sftpMu   sync.Mutex
	sftp     *sftp.Client
	stageDir string
}

func newClient(p *Pool, cfg Config, key string, sc *xssh.Client) *Client {
	c := &Client{pool: p, cfg: cfg, key: key, ssh: sc, slots: make(chan struct{}, maxSessionsPerConn), dead: make(chan struct{})}
	go func() {
		sc.Wait()
		close(c.dead)
	}()
	if cfg.KeepAlive > 0 {
		go c.keepAlive(cfg.KeepAlive)
	}
	return c
}

// keepAlive sends keepalive@openssh.com requests; a connection that does not answer within
// three intervals is closed, so the next Dial reconnects.
func (c *Client) keepAlive(interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-c.dead:
			return
		case <-t.C:
		}
		watchdog := time.AfterFunc(3*interval, func() {
			c.cfg.Logger.Warn("connection lost: no answer to keepalive", "after", 3*interval)
			c.ssh.Close()
		})
		_, _, err := c.ssh.SendRequest("keepalive@openssh.com", true, nil)
		watchdog.Stop()
		if err != nil {
			return
		}
	}
}

func (c *Client) alive() bool {
	select {
	case <-c.dead:
		return false
	default:
		return true
	}
}

// Host returns the inventory name of the host.
func (c *Client) Host() string { return c.cfg.Host }

// User returns the SSH user.
func (c *Client) User() string { return c.cfg.User }

// Logger returns the per-host logger.
func (c *Client) Logger() *slog.Logger { return c.cfg.Logger }

func (c *Client) root() bool { return c.cfg.User == "root" }

// Privileged reports whether the client can run privileged commands: true for root or when
// passwordless sudo works. It is checked once, on first use.
func (c *Client) Privileged() bool {
	c.sudoOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.ConnectTimeout+20*time.Second)
		defer cancel()
		c.sudoErr = c.CheckSudo(ctx)
	})
	return c.sudoErr == nil
}

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
		return "", fmt.Errorf("run %q on %s: %w", shorten(cmd, 200), c.cfg.Host, err)
	}
	defer release()
	sess, err := c.ssh.NewSession()
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
		return "", fmt.Errorf("start %q on %s: %w", shorten(cmd, 200), c.cfg.Host, err)
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
		log = log.With("stderr", shorten(stderr.String(), maxLoggedStderr))
	}
	if cancelled || (err != nil && ctx.Err() != nil) {
		log.Info("command cancelled", "err", ctx.Err())
		return stdout.String(), fmt.Errorf("run %q on %s: %w", shorten(cmd, 200), c.cfg.Host, ctx.Err())
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
	case errors.As(err, &missing):
		re.ExitCode = -1
	default:
		log.Info("command failed: connection", "err", err)
		return stdout.String(), fmt.Errorf("run %q on %s: %w", shorten(cmd, 200), c.cfg.Host, err)
	}
	log.Info("command", "exit", re.ExitCode, "signal", re.Signal)
	return stdout.String(), re
}

// acquireSession takes a pool-wide and a per-connection session slot.
func (c *Client) acquireSession(ctx context.Context) (func(), error) {
	if err := c.pool.sessions.Acquire(ctx, 1); err != nil {
		return nil, err
	}
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		c.pool.sessions.Release(1)
		return nil, ctx.Err()
	case <-c.dead:
		c.pool.sessions.Release(1)
		return nil, fmt.Errorf("connection to %s closed", c.cfg.Host)
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
	ExitCode int    // -1 when the command ended without an exit status (killed by a signal)
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
	msg := fmt.Sprintf("run %q on %s: %s", shorten(e.Cmd, 200), e.Host, status)
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
	conn, err := c.ssh.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s through %s: %w", addr, c.cfg.Host, err)
	}
	return conn, nil
}

// Close closes the connection (and its SFTP session), removing the upload staging directory of a
// non-root user. The bastion it went through stays open for other hosts until the pool closes.
func (c *Client) Close() error {
	var err error
	c.close.Do(func() {
		c.sftpMu.Lock()
		if c.stageDir != "" && c.alive() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if _, rerr := c.run(ctx, "rm -rf -- "+Quote(c.stageDir), nil, false); rerr != nil {
				c.cfg.Logger.Warn("remove upload staging directory", "dir", c.stageDir, "err", rerr)
			}
			cancel()
		}
		if c.sftp != nil {
			c.sftp.Close()
		}
		c.sftpMu.Unlock()
		if cerr := c.ssh.Close(); cerr != nil && c.alive() {
			err = fmt.Errorf("close connection to %s: %w", c.cfg.Host, cerr)
		}
		<-c.dead
		c.cfg.Logger.Info("disconnected")
	})
	return err
}

// Quote quotes s for a POSIX shell (single quotes).
func Quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func shorten(s string, n int) string {
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
