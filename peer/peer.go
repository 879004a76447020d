// Package peer is the file server kubeforge runs for a few minutes on a host
// that holds verified artifacts, so that other hosts fetch them over the
// cluster network instead of from the workstation (`kubeforge peer-serve`,
// started and stopped over SSH by the artifacts step; see docs/artifacts.md).
//
// It serves only the files it is told (by sha256), only to a client that
// presents the one-time secret it was given on stdin, on the one address it
// was told to bind, and it exits when its stdin closes (the SSH session that
// started it ended) or after Idle without a client. Clients verify every byte
// against the digest they asked for: the server is trusted with nothing.
package peer

import (
	"bufio"
	"context"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kubeforge/kubeforge/internal/accept"
)

// Config is what the server is told on its first line of stdin (JSON).
type Config struct {
	Listen     string            `json:"listen"`     // host:port; port 0 picks one
	Secret     string            `json:"secret"`     // hex; clients send it first
	Files      map[string]string `json:"files"`      // sha256 (hex) -> path of a verified copy
	MaxClients int               `json:"maxClients"` // transfers at once; more wait (0: 4)
	Idle       Duration          `json:"idle"`       // exit after this long with no client (0: 10 min)
}

// Duration is a time.Duration that reads "90s" in JSON.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = Duration(v)
	return err
}

// Stats is what a server did, printed as its last line of stdout.
type Stats struct {
	Served  int   `json:"served"`  // files sent whole
	Bytes   int64 `json:"bytes"`   // bytes sent
	Refused int   `json:"refused"` // requests with a wrong secret or an unknown digest
	Failed  int   `json:"failed"`  // transfers cut short
}

// requestTimeout bounds how long a client may take to send its request line
// (the secret): the deadline to authenticate.
const requestTimeout = 10 * time.Second

// maxUnauthenticated bounds the connections that have not sent their request
// yet: more wait in the listener's backlog, so connections that never speak
// cannot take a file descriptor each.
const maxUnauthenticated = 32

// writeTimeout: a client that takes no bytes for this long is cut off (a
// frozen client must not hold a slot for ever).
const writeTimeout = 30 * time.Second

// Server serves the files of one Config.
type Server struct {
	cfg    Config
	secret []byte
	log    *slog.Logger
	slots  chan struct{} // transfers
	// pending are the connections accepted that have not sent their request;
	// each has authTimeout to do so.
	pending     chan struct{}
	authTimeout time.Duration

	served, refused, failed atomic.Int64
	bytes                   atomic.Int64
	active                  atomic.Int64
	last                    atomic.Int64 // unix nanos of the last request's end
}

// New checks cfg and returns its server.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	secret, err := hex.DecodeString(cfg.Secret)
	if err != nil || len(secret) < 16 {
		return nil, errors.New("peer: the secret must be at least 16 bytes, hex")
	}
	for sum, p := range cfg.Files {
		if b, err := hex.DecodeString(sum); err != nil || len(b) != 32 {
			return nil, fmt.Errorf("peer: %q is not a sha256 digest", sum)
		}
		if !strings.HasPrefix(p, "/") {
			return nil, fmt.Errorf("peer: %q is not an absolute path", p)
		}
	}
	if cfg.MaxClients <= 0 {
		cfg.MaxClients = 4
	}
	if cfg.Idle <= 0 {
		cfg.Idle = Duration(10 * time.Minute)
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Server{cfg: cfg, secret: []byte(hex.EncodeToString(secret)), log: log, slots: make(chan struct{}, cfg.MaxClients),
		pending: make(chan struct{}, maxUnauthenticated), authTimeout: requestTimeout}, nil
}

// Serve listens on cfg.Listen, calls ready with the bound address, and serves
// until ctx ends or the server was idle for cfg.Idle. A failing Accept (too
// many open files) is waited out. It returns once the listener is closed and
// every transfer has ended.
func (s *Server) Serve(ctx context.Context, ready func(net.Addr)) (Stats, error) {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return Stats{}, fmt.Errorf("peer: listen on %s: %w", s.cfg.Listen, err)
	}
	return s.serve(ctx, ln, ready)
}

func (s *Server) serve(ctx context.Context, ln net.Listener, ready func(net.Addr)) (Stats, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.last.Store(time.Now().UnixNano())
	go func() { // idle exit
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if s.active.Load() == 0 && time.Since(time.Unix(0, s.last.Load())) > time.Duration(s.cfg.Idle) {
					s.log.Info("idle: exiting", "idle", time.Duration(s.cfg.Idle))
					cancel()
					return
				}
			}
		}
	}()
	var conns sync.Map
	go func() {
		<-ctx.Done()
		ln.Close()
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
	}()
	if ready != nil {
		ready(ln.Addr())
	}
	var wg sync.WaitGroup
	for {
		select { // a place among the unauthenticated, or wait in the backlog
		case s.pending <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		c, err := accept.Next(ctx, ln, s.log)
		if err != nil {
			<-s.pending
			if ctx.Err() != nil {
				break
			}
			cancel()
			wg.Wait()
			return s.stats(), fmt.Errorf("peer: accept: %w", err)
		}
		conns.Store(c, nil)
		s.active.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { conns.Delete(c); c.Close(); s.last.Store(time.Now().UnixNano()); s.active.Add(-1) }()
			s.handle(ctx, c, sync.OnceFunc(func() { <-s.pending }))
		}()
	}
	wg.Wait()
	return s.stats(), nil
}

func (s *Server) stats() Stats {
	return Stats{Served: int(s.served.Load()), Bytes: s.bytes.Load(), Refused: int(s.refused.Load()), Failed: int(s.failed.Load())}
}

// handle reads "SECRET SHA256\n" and sends that file's bytes, then closes.
// Anything else is closed without an answer. It calls authenticated once
// the request is read (or never will be).
func (s *Server) handle(ctx context.Context, c net.Conn, authenticated func()) {
	defer authenticated()
	_ = c.SetReadDeadline(time.Now().Add(s.authTimeout))
	line, err := bufio.NewReaderSize(io.LimitReader(c, 256), 256).ReadString('\n')
	authenticated()
	if err != nil {
		if line != "" { // a bare connect-and-close is a reachability probe
			s.refused.Add(1)
		}
		return
	}
	secret, sum, _ := strings.Cut(strings.TrimSpace(line), " ")
	p, known := s.cfg.Files[sum]
	if subtle.ConstantTimeCompare([]byte(secret), s.secret) != 1 || !known {
		s.refused.Add(1)
		s.log.Warn("refused a request", "from", c.RemoteAddr().String(), "known_digest", known)
		return
	}
	select { // a slot, or wait for one
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-s.slots }()
	f, err := os.Open(p)
	if err != nil {
		s.failed.Add(1)
		s.log.Warn("open", "path", p, "err", err)
		return
	}
	defer f.Close()
	n, err := io.Copy(&deadlineWriter{c}, f)
	s.bytes.Add(n)
	if err != nil {
		s.failed.Add(1)
		s.log.Warn("send", "path", p, "to", c.RemoteAddr().String(), "bytes", n, "err", err)
		return
	}
	s.served.Add(1)
	s.log.Info("sent", "path", p, "to", c.RemoteAddr().String(), "bytes", n)
}

// deadlineWriter gives every write writeTimeout.
type deadlineWriter struct{ c net.Conn }

func (w *deadlineWriter) Write(p []byte) (int, error) {
	_ = w.c.SetWriteDeadline(time.Now().Add(writeTimeout))
	return w.c.Write(p)
}

// Run is `kubeforge peer-serve`: the Config on stdin's first line, then
// "listening ADDR" on stdout once bound; it serves until stdin closes, and
// prints its Stats (JSON) as the last line.
func Run(ctx context.Context, stdin io.Reader, stdout io.Writer, log *slog.Logger) error {
	br := bufio.NewReader(stdin)
	line, err := br.ReadString('\n')
	if err != nil {
		return fmt.Errorf("peer: read the configuration from stdin: %w", err)
	}
	var cfg Config
	if err := json.Unmarshal([]byte(line), &cfg); err != nil {
		return fmt.Errorf("peer: configuration: %w", err)
	}
	srv, err := New(cfg, log)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { // the SSH session ended (or the workstation said so): stop
		_, _ = io.Copy(io.Discard, br)
		cancel()
	}()
	st, err := srv.Serve(ctx, func(a net.Addr) { fmt.Fprintf(stdout, "listening %s\n", a) })
	b, _ := json.Marshal(st)
	fmt.Fprintf(stdout, "%s\n", b)
	return err
}
