// Package apiproxy is the node-local API server proxy that kubeforge runs on
// the workers of a cluster with several control planes and no
// controlPlaneEndpoint: a TCP proxy on loopback that forwards to every API
// server that is healthy, as kubespray's nginx-proxy, RKE2's agent load
// balancer and k0s's node-local load balancer do.
//
// TLS is not terminated: the kubelet and kube-proxy talk to the API server
// end to end, so the proxy holds no key. Each upstream is health-checked with
// GET /readyz over TLS, verified against the cluster CA: an API server that
// stops answering (a hung process keeps its port open) is taken out of
// rotation after one failed check, and the connections it carries are closed
// so their clients reconnect to a live one at once. The upstream list is a
// file that kubeforge rewrites when control planes are added or removed; the
// proxy reads it again when it changes, without a restart.
package apiproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config is what the proxy is told.
type Config struct {
	Listen    string        // "127.0.0.1:6443"
	Upstreams string        // the file listing upstreams, one host:port per line
	CAFile    string        // the cluster CA, for the health checks
	Interval  time.Duration // between health checks (default 2s)
	Timeout   time.Duration // of one health check and of a dial (default 2s)
	Log       *slog.Logger
}

// Proxy forwards connections to healthy upstreams.
type Proxy struct {
	cfg  Config
	next atomic.Uint64

	mu        sync.Mutex
	upstreams map[string]*upstream
	order     []string
	listFile  []byte // the upstream file as last read
}

type upstream struct {
	addr    string
	healthy atomic.Bool
	cancel  context.CancelFunc
	mu      sync.Mutex
	conns   map[net.Conn]struct{} // client-side and upstream-side connections it carries
}

// New returns a proxy for cfg, with defaults filled in.
func New(cfg Config) *Proxy {
	if cfg.Interval == 0 {
		cfg.Interval = 2 * time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Proxy{cfg: cfg, upstreams: map[string]*upstream{}}
}

// ParseUpstreams reads an upstream file: one host:port per line; blank lines
// and lines starting with # are ignored.
func ParseUpstreams(b []byte) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if _, _, err := net.SplitHostPort(line); err != nil {
			return nil, fmt.Errorf("line %d: %q is not host:port: %w", n, line, err)
		}
		if !slices.Contains(out, line) {
			out = append(out, line)
		}
	}
	return out, sc.Err()
}

// Run listens and serves until ctx ends. It reads the upstream file first
// (refusing to start without one upstream) and then every interval.
func (p *Proxy) Run(ctx context.Context) error {
	if err := p.reload(ctx); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", p.cfg.Listen)
	if err != nil {
		return err
	}
	p.cfg.Log.Info("listening", "address", ln.Addr().String(), "upstreams", p.Upstreams())
	return p.Serve(ctx, ln)
}

// Serve accepts on ln until ctx ends.
func (p *Proxy) Serve(ctx context.Context, ln net.Listener) error {
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	go func() {
		t := time.NewTicker(p.cfg.Interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := p.reload(ctx); err != nil {
					p.cfg.Log.Warn("upstream file not reloaded; keeping the last list", "file", p.cfg.Upstreams, "err", err)
				}
			}
		}
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				p.stopAll()
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		go p.handle(ctx, c)
	}
}

// reload reads the upstream file and starts or stops health checks to match.
func (p *Proxy) reload(ctx context.Context) error {
	b, err := os.ReadFile(p.cfg.Upstreams)
	if err != nil {
		return err
	}
	p.mu.Lock()
	same := bytes.Equal(b, p.listFile)
	p.mu.Unlock()
	if same {
		return nil
	}
	list, err := ParseUpstreams(b)
	if err != nil {
		return fmt.Errorf("%s: %w", p.cfg.Upstreams, err)
	}
	if len(list) == 0 {
		return fmt.Errorf("%s lists no upstream", p.cfg.Upstreams)
	}
	roots, err := p.roots()
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.listFile = b
	for addr, u := range p.upstreams {
		if !slices.Contains(list, addr) {
			u.cancel()
			u.closeAll()
			delete(p.upstreams, addr)
			p.cfg.Log.Info("upstream removed", "upstream", addr)
		}
	}
	for _, addr := range list {
		if _, ok := p.upstreams[addr]; ok {
			continue
		}
		cctx, cancel := context.WithCancel(ctx)
		u := &upstream{addr: addr, cancel: cancel, conns: map[net.Conn]struct{}{}}
		p.upstreams[addr] = u
		p.cfg.Log.Info("upstream added", "upstream", addr)
		go p.check(cctx, u, roots)
	}
	p.order = list
	return nil
}

func (p *Proxy) roots() (*x509.CertPool, error) {
	pem, err := os.ReadFile(p.cfg.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no certificate", p.cfg.CAFile)
	}
	return pool, nil
}

// check health-checks u every interval: GET /readyz, verified against the CA.
// 200 is healthy; 401 and 403 also say the server is serving (anonymous
// requests refused). A failed check takes u out of rotation and closes the
// connections it carries; a passing one puts it back.
func (p *Proxy) check(ctx context.Context, u *upstream, roots *x509.CertPool) {
	host, _, _ := net.SplitHostPort(u.addr)
	client := &http.Client{Timeout: p.cfg.Timeout, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots, ServerName: host, MinVersion: tls.VersionTLS12},
		DisableKeepAlives: true,
	}}
	probe := func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+u.addr+"/readyz", nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK, http.StatusUnauthorized, http.StatusForbidden:
			return nil
		}
		return fmt.Errorf("/readyz: %s", resp.Status)
	}
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		err := probe()
		if ctx.Err() != nil {
			return
		}
		was := u.healthy.Swap(err == nil)
		switch {
		case err == nil && !was:
			p.cfg.Log.Info("upstream healthy", "upstream", u.addr)
		case err != nil && was:
			n := u.closeAll()
			p.cfg.Log.Warn("upstream unhealthy: out of rotation", "upstream", u.addr, "err", err, "closed", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Upstreams lists the upstreams in the file's order.
func (p *Proxy) Upstreams() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.order)
}

// Healthy lists the upstreams in rotation.
func (p *Proxy) Healthy() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, a := range p.order {
		if u := p.upstreams[a]; u != nil && u.healthy.Load() {
			out = append(out, a)
		}
	}
	return out
}

// candidates are the upstreams to try for a new connection: the healthy
// ones, starting at the next in round-robin order; when none is healthy
// (all checks failing, or none run yet), every upstream.
func (p *Proxy) candidates() []*upstream {
	p.mu.Lock()
	defer p.mu.Unlock()
	var healthy, all []*upstream
	for _, a := range p.order {
		u := p.upstreams[a]
		all = append(all, u)
		if u.healthy.Load() {
			healthy = append(healthy, u)
		}
	}
	list := healthy
	if len(list) == 0 {
		list = all
	}
	if len(list) == 0 {
		return nil
	}
	k := int(p.next.Add(1) % uint64(len(list)))
	return append(slices.Clone(list[k:]), list[:k]...)
}

func (p *Proxy) handle(ctx context.Context, c net.Conn) {
	var last error
	for _, u := range p.candidates() {
		d := net.Dialer{Timeout: p.cfg.Timeout, KeepAlive: 15 * time.Second}
		up, err := d.DialContext(ctx, "tcp", u.addr)
		if err != nil {
			last = err
			continue
		}
		u.track(c, up)
		pipe(c, up)
		u.untrack(c, up)
		return
	}
	p.cfg.Log.Warn("no upstream answered", "client", c.RemoteAddr().String(), "err", last)
	c.Close()
}

// pipe copies both ways until either side ends, then closes both.
func pipe(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	// One side ended: give the other a moment to finish its half, then close.
	t := time.NewTimer(5 * time.Second)
	select {
	case <-done:
	case <-t.C:
	}
	t.Stop()
	a.Close()
	b.Close()
}

func (u *upstream) track(cs ...net.Conn) {
	u.mu.Lock()
	for _, c := range cs {
		u.conns[c] = struct{}{}
	}
	u.mu.Unlock()
}

func (u *upstream) untrack(cs ...net.Conn) {
	u.mu.Lock()
	for _, c := range cs {
		delete(u.conns, c)
	}
	u.mu.Unlock()
}

// closeAll closes the connections u carries; it returns how many pairs.
func (u *upstream) closeAll() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	for c := range u.conns {
		c.Close()
	}
	n := len(u.conns) / 2
	clear(u.conns)
	return n
}

func (p *Proxy) stopAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, u := range p.upstreams {
		u.cancel()
		u.closeAll()
	}
}
