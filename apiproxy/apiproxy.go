// Package apiproxy is the node-local API server proxy that kubeforge runs on
// the workers of a cluster with several control planes and no
// controlPlaneEndpoint: a TCP proxy on loopback that forwards to every API
// server that is healthy, as kubespray's nginx-proxy, RKE2's agent load
// balancer and k0s's node-local load balancer do.
//
// TLS is not terminated: the kubelet and kube-proxy talk to the API server
// end to end, so the proxy holds no key. Each upstream is health-checked with
// GET /readyz over TLS, verified against the cluster CA. An upstream leaves
// rotation after Fall failed checks in a row and comes back after Rise passing
// ones, so one slow answer moves nothing. When it leaves, the connections it
// carries are closed (their clients reconnect to a live one at once) if it is
// gone or says it is not ready; if it only answers slowly (a loaded server, or
// a hung process that keeps its port open) they are kept until it has failed
// Hung checks in a row, so a busy API server does not lose every watch at
// once. The upstream list and the CA are files that kubeforge rewrites; the
// proxy reads them again when they change, without a restart.
package apiproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/kubeforge/kubeforge/internal/accept"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
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
	Fall      int           // failed checks in a row that take an upstream out of rotation (default 3)
	Rise      int           // passing checks in a row that put it back (default 2)
	Hung      int           // checks in a row without an answer after which a slow upstream's connections are closed too (default 10)
	Log       *slog.Logger
}

// Proxy forwards connections to healthy upstreams.
type Proxy struct {
	cfg  Config
	next atomic.Uint64

	// afterDial, when set (by tests), runs in handle between the dial of an
	// upstream and the tracking of the connection.
	afterDial func(*upstream)

	mu        sync.Mutex
	upstreams map[string]*upstream
	order     []string
	listFile  []byte         // the upstream file as last read
	caFile    []byte         // the CA file as last read
	pool      *x509.CertPool // from caFile
}

type upstream struct {
	addr   string
	cancel context.CancelFunc

	mu      sync.Mutex
	healthy bool
	gen     uint64                // bumped by closeAll: a connection dialled before is not tracked after
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
	if cfg.Fall == 0 {
		cfg.Fall = 3
	}
	if cfg.Rise == 0 {
		cfg.Rise = 2
	}
	if cfg.Hung == 0 {
		cfg.Hung = 10
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

// Run listens and serves until ctx ends. It reads the CA and the upstream
// file first (refusing to start without a CA and one upstream) and then every
// interval.
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

// Serve accepts on ln until ctx ends. An error from Accept (EMFILE, say) is
// logged and retried after a pause that doubles from 5ms to 1s, as net/http's
// Server does; only a closed listener ends Serve early.
func (p *Proxy) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	go p.follow(ctx)
	defer p.stopAll()
	for {
		c, err := accept.Next(ctx, ln, p.cfg.Log)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		go p.handle(ctx, c)
	}
}

// follow reads the CA and the upstream file every interval until ctx ends. It
// logs a failure once, not every interval, and when the files are good again.
func (p *Proxy) follow(ctx context.Context) {
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	var last string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		switch err := p.reload(ctx); {
		case err != nil && err.Error() != last:
			last = err.Error()
			p.cfg.Log.Warn("files not read again; keeping the last good CA and upstream list", "err", err)
		case err == nil && last != "":
			last = ""
			p.cfg.Log.Info("files read again", "ca", p.cfg.CAFile, "upstreams", p.cfg.Upstreams)
		}
	}
}

// reload reads the CA and the upstream file and applies what changed. Without
// a CA yet it does not start health checks.
func (p *Proxy) reload(ctx context.Context) error {
	caErr := p.reloadCA()
	if p.roots() == nil {
		return caErr
	}
	return errors.Join(caErr, p.reloadList(ctx))
}

// reloadCA reads the CA file; when it changed, health checks verify against
// it from their next round.
func (p *Proxy) reloadCA() error {
	b, err := os.ReadFile(p.cfg.CAFile)
	if err != nil {
		return fmt.Errorf("read the CA: %w", err)
	}
	p.mu.Lock()
	same := bytes.Equal(b, p.caFile)
	p.mu.Unlock()
	if same {
		return nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return fmt.Errorf("read the CA: %s holds no certificate", p.cfg.CAFile)
	}
	p.mu.Lock()
	changed := p.pool != nil
	p.caFile, p.pool = b, pool
	p.mu.Unlock()
	if changed {
		p.cfg.Log.Info("CA changed; health checks verify against it from now on", "file", p.cfg.CAFile)
	}
	return nil
}

// roots is the CA pool the health checks verify against.
func (p *Proxy) roots() *x509.CertPool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pool
}

// reloadList reads the upstream file and starts or stops health checks to match.
func (p *Proxy) reloadList(ctx context.Context) error {
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
		go p.check(cctx, u)
	}
	p.order = list
	return nil
}

// check health-checks u every interval: GET /readyz, verified against the CA
// as last read. 200 is healthy; 401 and 403 also say the server is serving
// (anonymous requests refused). Fall failed checks in a row take u out of
// rotation and Rise passing ones put it back (a new upstream enters on its
// first). Leaving rotation closes the connections u carries, unless u only
// answers slowly: then they are closed once Hung checks in a row have failed.
func (p *Proxy) check(ctx context.Context, u *upstream) {
	host, _, _ := net.SplitHostPort(u.addr)
	var (
		roots   *x509.CertPool
		client  *http.Client
		h       health
		drained = true // u's connections were closed since it was last in rotation
	)
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		if r := p.roots(); r != roots {
			roots = r
			client = &http.Client{Timeout: p.cfg.Timeout, Transport: &http.Transport{
				TLSClientConfig:   &tls.Config{RootCAs: roots, ServerName: host, MinVersion: tls.VersionTLS12},
				DisableKeepAlives: true,
			}}
		}
		slow, unreachable, err := probe(ctx, client, u.addr)
		if ctx.Err() != nil {
			return
		}
		fall := p.cfg.Fall
		if unreachable {
			fall = 1 // nothing accepts its connections: gone (stopped, crashed), not loaded
		}
		changed := h.record(err == nil, fall, p.cfg.Rise)
		if changed {
			u.setHealthy(h.up)
		}
		switch {
		case changed && h.up:
			drained = false
			p.cfg.Log.Info("upstream healthy: in rotation", "upstream", u.addr)
		case changed && slow && h.failed < p.cfg.Hung:
			p.cfg.Log.Warn("upstream unhealthy: out of rotation; it answers too slowly, so its connections are kept for now",
				"upstream", u.addr, "failedChecks", h.failed, "err", err)
		case changed:
			drained = true
			p.cfg.Log.Warn("upstream unhealthy: out of rotation", "upstream", u.addr, "failedChecks", h.failed, "err", err,
				"closedConnections", u.closeAll())
		case !h.up && !drained && err != nil && (!slow || h.failed >= p.cfg.Hung):
			drained = true
			p.cfg.Log.Warn("upstream still failing: its connections closed", "upstream", u.addr, "failedChecks", h.failed, "err", err,
				"closedConnections", u.closeAll())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probe is one health check of addr. A failure is slow when addr took the
// connection but did not answer in time: a loaded API server, or a hung one.
// Any other failure (refused, reset, unreachable, a TLS error, not ready)
// says the server is gone or not serving.
// Unreachable is a failure to connect at all: a server that is loaded still
// completes the TCP handshake (the kernel does), so nothing accepting the
// connection means nothing serves there.
func probe(ctx context.Context, client *http.Client, addr string) (slow, unreachable bool, err error) {
	var connected atomic.Bool
	trace := &httptrace.ClientTrace{ConnectDone: func(_, _ string, err error) {
		if err == nil {
			connected.Store(true)
		}
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodGet, "https://"+addr+"/readyz", nil)
	if err != nil {
		return false, false, err
	}
	resp, err := client.Do(req)
	if err != nil {
		var ne net.Error
		return connected.Load() && errors.As(err, &ne) && ne.Timeout(), !connected.Load(), err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK, http.StatusUnauthorized, http.StatusForbidden:
		return false, false, nil
	}
	return false, false, fmt.Errorf("/readyz: %s", resp.Status)
}

// health is an upstream's place in rotation, from its checks in a row.
type health struct {
	up     bool
	wasUp  bool // it has been in rotation before
	failed int  // checks failed in a row
	passed int  // checks passed in a row
}

// record adds one check's result and reports whether up changed: it turns
// false after fall failures in a row and true after rise passes in a row, or
// after one pass for an upstream never in rotation yet.
func (h *health) record(ok bool, fall, rise int) bool {
	if ok {
		h.passed, h.failed = h.passed+1, 0
	} else {
		h.failed, h.passed = h.failed+1, 0
	}
	if !h.wasUp {
		rise = 1
	}
	switch {
	case !h.up && h.passed >= rise:
		h.up, h.wasUp = true, true
	case h.up && h.failed >= fall:
		h.up = false
	default:
		return false
	}
	return true
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
		if u := p.upstreams[a]; u != nil {
			if healthy, _ := u.state(); healthy {
				out = append(out, a)
			}
		}
	}
	return out
}

// candidate is an upstream to try, with its generation when it was chosen.
type candidate struct {
	u   *upstream
	gen uint64
}

// candidates are the upstreams to try for a new connection: the healthy
// ones, starting at the next in round-robin order; when none is healthy
// (all checks failing, or none run yet), every upstream.
func (p *Proxy) candidates() []candidate {
	p.mu.Lock()
	defer p.mu.Unlock()
	var healthy, all []candidate
	for _, a := range p.order {
		u := p.upstreams[a]
		ok, gen := u.state()
		all = append(all, candidate{u, gen})
		if ok {
			healthy = append(healthy, candidate{u, gen})
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

// handle connects c to the first candidate that answers. An upstream whose
// connections were closed after it was chosen (it left rotation, or the file)
// is not used: the next candidate is tried.
func (p *Proxy) handle(ctx context.Context, c net.Conn) {
	var last error
	for _, cand := range p.candidates() {
		u := cand.u
		d := net.Dialer{Timeout: p.cfg.Timeout, KeepAlive: 15 * time.Second}
		up, err := d.DialContext(ctx, "tcp", u.addr)
		if err != nil {
			last = err
			continue
		}
		if p.afterDial != nil {
			p.afterDial(u)
		}
		if !u.track(cand.gen, c, up) {
			up.Close()
			last = fmt.Errorf("connect to %s: its connections were closed meanwhile", u.addr)
			continue
		}
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

// state says whether u is in rotation, and its generation.
func (u *upstream) state() (healthy bool, gen uint64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.healthy, u.gen
}

func (u *upstream) setHealthy(healthy bool) {
	u.mu.Lock()
	u.healthy = healthy
	u.mu.Unlock()
}

// track records cs as carried by u, unless u closed its connections since
// generation gen; it reports whether it did. Under the lock that closeAll
// holds, so no connection escapes a close.
func (u *upstream) track(gen uint64, cs ...net.Conn) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.gen != gen {
		return false
	}
	for _, c := range cs {
		u.conns[c] = struct{}{}
	}
	return true
}

func (u *upstream) untrack(cs ...net.Conn) {
	u.mu.Lock()
	for _, c := range cs {
		delete(u.conns, c)
	}
	u.mu.Unlock()
}

// closeAll closes the connections u carries and those dialled for it but not
// tracked yet (see track); it returns how many pairs it closed.
func (u *upstream) closeAll() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.gen++
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
