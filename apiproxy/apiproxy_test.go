package apiproxy

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kubeforge/kubeforge/internal/atomicfile"
)

// apiServer is an HTTPS server standing in for an API server: /readyz
// answers with status (200 unless set), every other path with its name.
type apiServer struct {
	*httptest.Server
	name     string
	status   atomic.Int32
	failNext atomic.Int32 // /readyz answers 500 this many more times
	hang     atomic.Bool  // /readyz does not answer
	accepted atomic.Int32 // connections accepted
	checks   atomic.Int32 // /readyz requests answered
}

func newAPIServer(t *testing.T, name string) *apiServer {
	s := &apiServer{name: name}
	s.status.Store(200)
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			io.WriteString(w, s.name)
			return
		}
		if s.hang.Load() {
			<-r.Context().Done()
			return
		}
		defer s.checks.Add(1)
		if n := s.failNext.Load(); n > 0 && s.failNext.CompareAndSwap(n, n-1) {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(int(s.status.Load()))
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.accepted.Add(1)
		}
	}
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

func (s *apiServer) addr() string { return strings.TrimPrefix(s.URL, "https://") }

type fixture struct {
	t      *testing.T
	p      *Proxy
	addr   string
	list   string
	caFile string
	roots  *x509.CertPool
	log    *syncBuffer
}

// options change the fixture's proxy; the zero value is the default.
type options struct {
	timeout   time.Duration                   // of a check; 1.5s unless set
	hung      int                             // Config.Hung
	fileCA    *x509.Certificate               // written as the CA file instead of the servers' certificate
	listener  func(net.Listener) net.Listener // wraps the proxy's listener
	afterDial func(*upstream)
}

// start runs a proxy on loopback for upstreams; every httptest server shares
// one certificate, which serves as the CA.
func start(t *testing.T, ca *x509.Certificate, upstreams ...string) *fixture {
	t.Helper()
	return startWith(t, options{}, ca, upstreams...)
}

func startWith(t *testing.T, o options, ca *x509.Certificate, upstreams ...string) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{t: t, list: filepath.Join(dir, "upstreams"), caFile: filepath.Join(dir, "ca.crt"), roots: x509.NewCertPool(), log: &syncBuffer{}}
	f.roots.AddCert(ca)
	if o.fileCA == nil {
		o.fileCA = ca
	}
	f.writeCA(o.fileCA)
	f.write(upstreams...)
	if o.timeout == 0 {
		// Generous: under -race on a loaded machine a local TLS check can
		// take hundreds of milliseconds.
		o.timeout = 1500 * time.Millisecond
	}
	f.p = New(Config{Upstreams: f.list, CAFile: f.caFile, Interval: 50 * time.Millisecond, Timeout: o.timeout, Hung: o.hung,
		Log: slog.New(slog.NewTextHandler(f.log, nil))})
	f.p.afterDial = o.afterDial
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("proxy log:\n%s", f.log.String())
		}
	})
	if err := f.p.reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	if o.listener != nil {
		ln = o.listener(ln)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.p.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return f
}

// writeCA and write replace the files as kubeforge does on a host: atomically
// (the proxy may read them at any moment; a truncated file read half-way
// logged a second, different error).
func (f *fixture) writeCA(ca *x509.Certificate) {
	if err := atomicfile.Write(f.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) write(upstreams ...string) {
	if err := atomicfile.Write(f.list, []byte("# kubeforge\n"+strings.Join(upstreams, "\n")+"\n"), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// client is an HTTPS client that reaches the upstreams through the proxy,
// verifying their certificate (TLS is end to end).
func (f *fixture) client(keepAlive bool) *http.Client {
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: f.roots, ServerName: "127.0.0.1"},
		DisableKeepAlives: !keepAlive,
	}}
}

func (f *fixture) get(c *http.Client) (string, error) {
	resp, err := c.Get("https://" + f.addr + "/api")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// eventually waits until cond holds.
func (f *fixture) eventually(what string, cond func() bool) {
	f.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			f.t.Fatalf("timed out waiting for %s (healthy: %v)", what, f.p.Healthy())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// served counts which upstream answered n requests.
func (f *fixture) served(n int) map[string]int {
	f.t.Helper()
	got := map[string]int{}
	c := f.client(false)
	for range n {
		name, err := f.get(c)
		if err != nil {
			f.t.Fatalf("request through the proxy: %v", err)
		}
		got[name]++
	}
	return got
}

func TestProxySpreadsOverHealthyUpstreamsAndDropsAFailingOne(t *testing.T) {
	a, b := newAPIServer(t, "a"), newAPIServer(t, "b")
	f := start(t, a.Certificate(), a.addr(), b.addr())
	f.eventually("both healthy", func() bool { return len(f.p.Healthy()) == 2 })
	if got := f.served(10); got["a"] == 0 || got["b"] == 0 {
		t.Errorf("10 requests served by %v; want both upstreams", got)
	}
	a.status.Store(500) // etcd lost, say: /readyz fails while the port answers
	f.eventually("a out of rotation", func() bool { return slices.Equal(f.p.Healthy(), []string{b.addr()}) })
	if got := f.served(10); got["b"] != 10 {
		t.Errorf("with a unready, 10 requests served by %v; want b only", got)
	}
	a.status.Store(200)
	f.eventually("a back", func() bool { return len(f.p.Healthy()) == 2 })
}

func TestProxyTakesAHungServerOutOfRotation(t *testing.T) {
	b := newAPIServer(t, "b")
	// A server whose process is stopped: the kernel still accepts, nothing answers.
	hung, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close()
	f := start(t, b.Certificate(), hung.Addr().String(), b.addr())
	f.eventually("only b healthy", func() bool { return slices.Equal(f.p.Healthy(), []string{b.addr()}) })
	if got := f.served(6); got["b"] != 6 {
		t.Errorf("served by %v; want b only", got)
	}
}

func TestProxyClosesConnectionsOfAnUpstreamThatFails(t *testing.T) {
	a := newAPIServer(t, "a")
	f := start(t, a.Certificate(), a.addr())
	_, u := f.keptAlive(a)
	a.status.Store(500)
	f.eventually("its connections closed", func() bool { return tracked(u) == 0 })
}

func TestProxyFollowsTheUpstreamFile(t *testing.T) {
	a, b := newAPIServer(t, "a"), newAPIServer(t, "b")
	f := start(t, a.Certificate(), a.addr())
	f.eventually("a healthy", func() bool { return len(f.p.Healthy()) == 1 })
	f.write(b.addr()) // a control plane removed, another added
	f.eventually("b only", func() bool { return slices.Equal(f.p.Healthy(), []string{b.addr()}) })
	if got := f.served(4); got["b"] != 4 {
		t.Errorf("after the file changed, served by %v; want b only", got)
	}
	f.write("not an address")
	time.Sleep(200 * time.Millisecond) // four intervals
	if !slices.Equal(f.p.Upstreams(), []string{b.addr()}) {
		t.Errorf("a bad file replaced the list: %v", f.p.Upstreams())
	}
	if n := strings.Count(f.log.String(), "files not read again"); n != 1 {
		t.Errorf("the bad file was logged %d times over four intervals; want once", n)
	}
}

func TestParseUpstreams(t *testing.T) {
	got, err := ParseUpstreams([]byte("# comment\n\n10.0.0.1:6443\n[fd00::1]:6443\n10.0.0.1:6443\n"))
	if err != nil || !slices.Equal(got, []string{"10.0.0.1:6443", "[fd00::1]:6443"}) {
		t.Errorf("got %v, %v", got, err)
	}
	if _, err := ParseUpstreams([]byte("10.0.0.1\n")); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("a line without a port: %v", err)
	}
}

func TestHealthNeedsFallFailuresToLeaveAndRisePassesToReturn(t *testing.T) {
	for _, tc := range []struct {
		name    string
		checks  string // + passed, - failed
		inAfter string // u in rotation, d out, after each check
	}{
		{"a new upstream enters on its first pass", "+", "u"},
		{"a new upstream that fails enters on its first pass after", "--+", "ddu"},
		{"fewer than fall failures in a row keep it", "+--+--+", "uuuuuuu"},
		{"fall failures in a row take it out", "+---", "uuud"},
		{"one pass does not bring it back, rise passes do", "+---+-++", "uuuddddu"},
		{"a failure resets the passes", "+----+-++", "uuudddddu"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h health
			var got strings.Builder
			for _, c := range tc.checks {
				h.record(c == '+', 3, 2)
				if h.up {
					got.WriteByte('u')
				} else {
					got.WriteByte('d')
				}
			}
			if got.String() != tc.inAfter {
				t.Errorf("after checks %s: %s; want %s", tc.checks, got.String(), tc.inAfter)
			}
		})
	}
}

func TestProxyKeepsAnUpstreamAndItsConnectionsThroughFewerThanFallFailedChecks(t *testing.T) {
	a := newAPIServer(t, "a")
	f := start(t, a.Certificate(), a.addr())
	c, u := f.keptAlive(a)
	a.failNext.Store(2) // two slow or failed answers in a row: a loaded server
	f.eventually("the two failed checks", func() bool { return a.failNext.Load() == 0 })
	after := a.checks.Load()
	f.eventually("two checks after them", func() bool { return a.checks.Load() >= after+2 })
	if n := tracked(u); n != 2 {
		t.Errorf("after two failed checks a carries %d connections; want its 2 kept", n)
	}
	if _, reused, err := f.getReused(c); err != nil || !reused {
		t.Errorf("the next request on the kept-alive client: reused %v, %v; want the same connection", reused, err)
	}
	if strings.Contains(f.log.String(), "unhealthy") {
		t.Errorf("two failed checks took a out of rotation:\n%s", f.log.String())
	}
}

func TestProxyKeepsTheConnectionsOfASlowUpstreamUntilItIsHung(t *testing.T) {
	a := newAPIServer(t, "a")
	f := startWith(t, options{timeout: 300 * time.Millisecond, hung: 6}, a.Certificate(), a.addr())
	c, u := f.keptAlive(a)
	a.hang.Store(true) // /readyz takes longer than the timeout; other requests are served
	f.eventually("a out of rotation", func() bool { return len(f.p.Healthy()) == 0 })
	if n := tracked(u); n != 2 {
		t.Fatalf("a slow upstream out of rotation carries %d connections; want its 2 kept", n)
	}
	if name, reused, err := f.getReused(c); err != nil || !reused || name != "a" {
		t.Errorf("a request on the kept connection: %q, reused %v, %v; want a's answer on it", name, reused, err)
	}
	f.eventually("its connections closed after 6 checks without an answer", func() bool { return tracked(u) == 0 })
	if !strings.Contains(f.log.String(), "failedChecks=6") {
		t.Errorf("the close is not logged at the 6th failed check:\n%s", f.log.String())
	}
}

func TestProxyDoesNotKeepAConnectionToAnUpstreamClosedWhileDialling(t *testing.T) {
	a, b := newAPIServer(t, "a"), newAPIServer(t, "b")
	names := map[string]string{a.addr(): "a", b.addr(): "b"}
	var closed atomic.Pointer[upstream]
	// Between the dial and the tracking of the connection, the upstream's
	// connections are closed, as when it leaves rotation or the file.
	hook := func(u *upstream) {
		if closed.CompareAndSwap(nil, u) {
			u.closeAll()
		}
	}
	f := startWith(t, options{afterDial: hook}, a.Certificate(), a.addr(), b.addr())
	f.eventually("both healthy", func() bool { return len(f.p.Healthy()) == 2 })
	got, _, err := f.getReused(f.client(true))
	if err != nil {
		t.Fatal(err)
	}
	u := closed.Load()
	if got == names[u.addr] {
		t.Errorf("served by %s, whose connections were closed after the dial; want the other upstream", got)
	}
	if n := tracked(u); n != 0 {
		t.Errorf("%s carries %d connections after they were closed; want none", names[u.addr], n)
	}
}

func TestProxyVerifiesChecksAgainstTheCAAfterItChanges(t *testing.T) {
	a := newAPIServer(t, "a")
	f := startWith(t, options{fileCA: otherCA(t)}, a.Certificate(), a.addr())
	f.eventually("three checks refused by a's TLS", func() bool { return a.accepted.Load() >= 3 })
	if h := f.p.Healthy(); len(h) != 0 {
		t.Fatalf("healthy %v with a CA that did not sign a; want none", h)
	}
	f.writeCA(a.Certificate()) // the CA rotated
	f.eventually("a healthy under the new CA", func() bool { return len(f.p.Healthy()) == 1 })
}

func TestServeGoesOnAfterAcceptErrors(t *testing.T) {
	a := newAPIServer(t, "a")
	var ln *failingListener
	f := startWith(t, options{listener: func(l net.Listener) net.Listener {
		ln = &failingListener{Listener: l}
		ln.fails.Store(4)
		return ln
	}}, a.Certificate(), a.addr())
	if name, _, err := f.getReused(f.client(false)); err != nil || name != "a" {
		t.Fatalf("a request after four failed accepts: %q, %v", name, err)
	}
	if n := ln.fails.Load(); n != 0 {
		t.Errorf("%d failures not returned by Accept", n)
	}
	if n := strings.Count(f.log.String(), "accept failed"); n != 1 {
		t.Errorf("four failed accepts logged %d times; want once", n)
	}
}

func TestServeEndsWhenItsListenerIsClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := New(Config{Upstreams: filepath.Join(t.TempDir(), "none"), Interval: time.Hour})
	if err := p.Serve(ctx, ln); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve on a closed listener: %v; want net.ErrClosed", err)
	}
}

// failingListener's Accept fails with EMFILE while fails is above zero.
type failingListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	l.fails.Store(0)
	return l.Listener.Accept()
}

// keptAlive makes a request to s through the proxy on a kept-alive client,
// and waits until s's upstream carries its connection.
func (f *fixture) keptAlive(s *apiServer) (*http.Client, *upstream) {
	f.t.Helper()
	f.eventually(s.name+" healthy", func() bool { return slices.Contains(f.p.Healthy(), s.addr()) })
	c := f.client(true)
	if _, err := f.get(c); err != nil {
		f.t.Fatal(err)
	}
	u := f.p.upstreams[s.addr()]
	f.eventually("the kept-alive connection tracked", func() bool { return tracked(u) == 2 })
	return c, u
}

// getReused is get that also says whether the request went on a kept-alive connection.
func (f *fixture) getReused(c *http.Client) (name string, reused bool, err error) {
	var r atomic.Bool
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { r.Store(i.Reused) }})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+f.addr+"/api", nil)
	if err != nil {
		return "", false, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", false, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), r.Load(), err
}

// tracked is how many connections u carries.
func tracked(u *upstream) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.conns)
}

// otherCA is a self-signed certificate that signed none of the servers'.
func otherCA(t *testing.T) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// syncBuffer is a bytes.Buffer safe for the proxy's goroutines to log into.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// An upstream whose port no longer accepts connections (its process or host
// is gone) leaves rotation at its first failed check, with its connections:
// only an upstream that still takes connections may be merely loaded.
func TestProxyDropsAnUpstreamThatRefusesAtItsFirstFailedCheck(t *testing.T) {
	a, b := newAPIServer(t, "a"), newAPIServer(t, "b")
	f := start(t, a.Certificate(), a.addr(), b.addr())
	f.eventually("both healthy", func() bool { return len(f.p.Healthy()) == 2 })
	a.Close() // the listener goes: connections are refused
	f.eventually("a out of rotation", func() bool { return slices.Equal(f.p.Healthy(), []string{b.addr()}) })
	// Out at its first refused check, before Fall (3) failures: the check
	// under way when the listener closed may fail first in another way (its
	// handshake cut), so the refusal is the first or the second failure.
	var out string
	for _, l := range strings.Split(f.log.String(), "\n") {
		if strings.Contains(l, "out of rotation") && strings.Contains(l, a.addr()) {
			out = l
			break
		}
	}
	if !strings.Contains(out, "connection refused") || !strings.Contains(out, "failedChecks=1 ") && !strings.Contains(out, "failedChecks=2 ") {
		t.Errorf("a refusing upstream was not taken out at its first refused check (want failedChecks 1, or 2 after a cut handshake, and a refusal): %q\n%s", out, f.log.String())
	}
}
