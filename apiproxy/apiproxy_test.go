package apiproxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// apiServer is an HTTPS server standing in for an API server: /readyz
// answers with status (200 unless set), every other path with its name.
type apiServer struct {
	*httptest.Server
	name   string
	status atomic.Int32
}

func newAPIServer(t *testing.T, name string) *apiServer {
	s := &apiServer{name: name}
	s.status.Store(200)
	s.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			w.WriteHeader(int(s.status.Load()))
			return
		}
		io.WriteString(w, s.name)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *apiServer) addr() string { return strings.TrimPrefix(s.URL, "https://") }

type fixture struct {
	t     *testing.T
	p     *Proxy
	addr  string
	list  string
	roots *x509.CertPool
}

// start runs a proxy on loopback for upstreams; every httptest server shares
// one certificate, which serves as the CA.
func start(t *testing.T, ca *x509.Certificate, upstreams ...string) *fixture {
	t.Helper()
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, list: filepath.Join(dir, "upstreams"), roots: x509.NewCertPool()}
	f.roots.AddCert(ca)
	f.write(upstreams...)
	f.p = New(Config{Upstreams: f.list, CAFile: caFile, Interval: 50 * time.Millisecond, Timeout: 1500 * time.Millisecond})
	// The timeout is generous: under -race on a loaded machine a local TLS
	// check can take hundreds of milliseconds, and one failed check takes an
	// upstream out (and closes its connections), which the tests would see.
	if err := f.p.reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
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

func (f *fixture) write(upstreams ...string) {
	if err := os.WriteFile(f.list, []byte("# kubeforge\n"+strings.Join(upstreams, "\n")+"\n"), 0o644); err != nil {
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
	f.eventually("a healthy", func() bool { return len(f.p.Healthy()) == 1 })
	c := f.client(true)
	if _, err := f.get(c); err != nil {
		t.Fatal(err)
	}
	u := f.p.upstreams[a.addr()]
	f.eventually("the kept-alive connection tracked", func() bool { u.mu.Lock(); defer u.mu.Unlock(); return len(u.conns) == 2 })
	a.status.Store(500)
	f.eventually("its connections closed", func() bool { u.mu.Lock(); defer u.mu.Unlock(); return len(u.conns) == 0 })
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
	time.Sleep(200 * time.Millisecond)
	if !slices.Equal(f.p.Upstreams(), []string{b.addr()}) {
		t.Errorf("a bad file replaced the list: %v", f.p.Upstreams())
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
