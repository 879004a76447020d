// Package ssh is kubeforge's transport to hosts: SSH connections (keys, agent, password, bastions,
// ~/.ssh/config), host key verification against known_hosts, privileged commands through sudo,
// and atomic SFTP uploads that skip unchanged files.
//
// A Pool owns every connection of a run and bounds concurrent dials, sessions and uploads;
// steps share one Client per host.
package ssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"syscall"
	"time"

	xssh "golang.org/x/crypto/ssh"
	"golang.org/x/sync/semaphore"
)

// Limits bound concurrency: sshd's default MaxStartups 10:30:100 drops handshake floods.
// Zero fields get the defaults 10, 64, 8.
type Limits struct{ Dials, Sessions, Uploads int }

// Pool dials hosts with shared limits, reuses one connection per host and one per bastion.
// It is safe for concurrent use.
type Pool struct {
	dials    *semaphore.Weighted
	sessions *semaphore.Weighted
	uploads  *semaphore.Weighted
	hostKeys hostKeys

	// dial retry policy for transient errors
	attempts int
	backoff  time.Duration

	mu     sync.Mutex
	conns  map[string]*poolEntry
	closed bool
}

type poolEntry struct {
	ready  chan struct{}
	client *Client
	err    error
}

// NewPool returns a pool with limits l (defaults for zero fields).
func NewPool(l Limits) *Pool {
	if l.Dials <= 0 {
		l.Dials = DefaultDials
	}
	if l.Sessions <= 0 {
		l.Sessions = DefaultSessions
	}
	if l.Uploads <= 0 {
		l.Uploads = DefaultUploads
	}
	return &Pool{
		dials:    semaphore.NewWeighted(int64(l.Dials)),
		sessions: semaphore.NewWeighted(int64(l.Sessions)),
		uploads:  semaphore.NewWeighted(int64(l.Uploads)),
		attempts: 4,
		backoff:  500 * time.Millisecond,
		conns:    map[string]*poolEntry{},
	}
}

// Dial returns the connection to the host cfg describes, connecting (through its bastion, if any) when
// there is none yet, and redialling it when it was lost (the same *Client, so its holders keep
// working). Transient errors (refused, reset, timeouts, dropped handshakes) are retried with backoff;
// host key and authentication failures are not. They are *HostKeyError and *AuthError.
func (p *Pool) Dial(ctx context.Context, cfg Config) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	key := cfg.key()
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, fmt.Errorf("connect to %s: pool closed", cfg.Host)
		}
		e, ok := p.conns[key]
		if !ok {
			e = &poolEntry{ready: make(chan struct{})}
			p.conns[key] = e
			p.mu.Unlock()
			sc, err := p.dial(ctx, cfg)
			if err != nil {
				e.err = err
				p.forget(key, e)
			} else {
				e.client = newClient(p, cfg, key, sc)
			}
			close(e.ready)
			return e.client, e.err
		}
		p.mu.Unlock()
		select {
		case <-e.ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to %s: %w", cfg.Host, ctx.Err())
		}
		if e.err != nil {
			return nil, e.err
		}
		cn, err := e.client.current()
		if err != nil { // closed by its user: dial a new one
			p.forget(key, e)
			continue
		}
		if !cn.alive() { // lost: the client redials, for every holder of it
			if _, err := e.client.reconnect(ctx, cn); err != nil {
				return nil, err
			}
		}
		return e.client, nil
	}
}

// forget drops e from the pool if it is still the entry for key.
func (p *Pool) forget(key string, e *poolEntry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns[key] == e {
		delete(p.conns, key)
	}
}

// Close closes every connection of the pool.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	entries := p.conns
	p.conns = map[string]*poolEntry{}
	p.mu.Unlock()
	var errs []error
	for _, e := range entries {
		<-e.ready
		if e.client != nil {
			if err := e.client.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// dial connects with retries of transient errors. Each attempt gets the bastion's connection from
// the pool, so a lost bastion is redialled too.
func (p *Pool) dial(ctx context.Context, cfg Config) (*xssh.Client, error) {
	delay := p.backoff
	for attempt := 1; ; attempt++ {
		var via *Client
		if cfg.Bastion != nil {
			var err error
			if via, err = p.Dial(ctx, *cfg.Bastion); err != nil {
				return nil, fmt.Errorf("connect to %s through bastion: %w", cfg.Host, err)
			}
		}
		sc, err := p.dialOnce(ctx, cfg, via)
		if err == nil {
			return sc, nil
		}
		if attempt >= p.attempts || !transient(ctx, err) {
			return nil, err
		}
		wait := delay/2 + rand.N(delay/2+1)
		cfg.Logger.Info("dial failed, retrying", "attempt", attempt, "in", wait, "err", err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to %s: %w (last error: %w)", cfg.Host, ctx.Err(), err)
		}
		delay *= 2
	}
}

// transient reports whether a dial error may go away on retry.
func transient(ctx context.Context, err error) bool {
	var hk *HostKeyError
	var ae *AuthError
	switch {
	case ctx.Err() != nil, errors.As(err, &hk), errors.As(err, &ae):
		return false
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// dialOnce makes one connection attempt: TCP (direct or through via), handshake, auth.
func (p *Pool) dialOnce(ctx context.Context, cfg Config, via *Client) (*xssh.Client, error) {
	if err := p.dials.Acquire(ctx, 1); err != nil {
		return nil, fmt.Errorf("connect to %s: %w", cfg.Host, err)
	}
	defer p.dials.Release(1)

	start := time.Now()
	addr := cfg.addr()
	hctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	timedOut := func(err error) error {
		if ctx.Err() != nil {
			return fmt.Errorf("connect to %s (%s): %w", cfg.Host, addr, ctx.Err())
		}
		return fmt.Errorf("connect to %s (%s): no answer within %s (%w): %w", cfg.Host, addr, cfg.ConnectTimeout, context.DeadlineExceeded, err)
	}

	var conn net.Conn
	var err error
	if via != nil {
		conn, err = via.tunnel(hctx, addr)
	} else {
		d := net.Dialer{KeepAlive: 30 * time.Second}
		conn, err = d.DialContext(hctx, "tcp", addr)
	}
	if err != nil {
		if hctx.Err() != nil {
			return nil, timedOut(err)
		}
		return nil, fmt.Errorf("connect to %s (%s): %w", cfg.Host, addr, err)
	}
	// The handshake has no context: closing the connection on timeout or cancel unblocks it.
	stop := context.AfterFunc(hctx, func() { conn.Close() })

	hostKeyCallback, algos, err := p.hostKeys.callback(&cfg)
	if err != nil {
		stop()
		conn.Close()
		return nil, fmt.Errorf("connect to %s: %w", cfg.Host, err)
	}
	methods, names, closeAgent, err := authMethods(&cfg)
	if err != nil {
		stop()
		conn.Close()
		return nil, fmt.Errorf("connect to %s: %w", cfg.Host, err)
	}
	defer closeAgent()
	sc, chans, reqs, err := xssh.NewClientConn(conn, addr, &xssh.ClientConfig{
		User:              cfg.User,
		Auth:              methods,
		HostKeyCallback:   hostKeyCallback,
		HostKeyAlgorithms: algos,
		Timeout:           cfg.ConnectTimeout,
	})
	if !stop() { // the timer fired: the connection is closed
		if err == nil {
			sc.Close()
		}
		return nil, timedOut(err)
	}
	if err != nil {
		conn.Close()
		var hk *HostKeyError
		if errors.As(err, &hk) {
			return nil, hk
		}
		if isAuthFailure(err) {
			return nil, &AuthError{Host: cfg.Host, User: cfg.User, Address: addr, Methods: names, Err: err}
		}
		return nil, fmt.Errorf("connect to %s (%s): %w", cfg.Host, addr, err)
	}
	cfg.Logger.Info("connected", "address", addr, "user", cfg.User, "via", bastionName(via), "duration", time.Since(start).Round(time.Millisecond))
	return xssh.NewClient(sc, chans, reqs), nil
}

func bastionName(via *Client) string {
	if via == nil {
		return ""
	}
	return via.cfg.Host
}
