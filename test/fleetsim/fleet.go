package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
)

// Options shape a simulated fleet.
type Options struct {
	N             int
	ControlPlanes int        // the first K endpoints are control planes, the rest workers
	Base          netip.Addr // the first endpoint's address; the others follow, skipping .0 and .255
	Port          int        // every endpoint's port; 0: a free port each
	User          string     // the SSH user the inventory names (root, or a sudo user)
	ClientKey     ssh.PublicKey
	Recording     *Recording
	KeepUploads   bool         // keep SFTP uploads in memory (else count and discard them)
	Latency       bool         // answer each command after its recorded duration
	Refuse        map[int]bool // endpoints (0-based) that close every connection before the SSH banner
}

// Fleet is the simulated fleet: N endpoints, one listener each, in one process.
type Fleet struct {
	opts      Options
	replay    *replay
	Endpoints []*Endpoint
	byIP      map[string]*Endpoint
	started   time.Time
	dir       string // where writeFiles wrote the inventory, key and known_hosts

	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
	wg     sync.WaitGroup
}

// Endpoint is one simulated host.
type Endpoint struct {
	Index int
	Name  string // inventory name and hostname
	IP    netip.Addr
	Port  int
	Role  string
	Key   ssh.PublicKey // its host key

	cfg    *ssh.ServerConfig
	ln     net.Listener
	tmpl   *replayHost
	fill   *strings.Replacer // placeholders -> this endpoint's identity
	unfill [][2]string       // this endpoint's identity -> placeholders, for incoming commands
	refuse bool
	Stats  Stats

	mu         sync.Mutex
	held       map[int]bool      // ports held open for a reachability test
	files      map[string][]byte // SFTP uploads kept in memory (KeepUploads)
	unrecorded []string          // the first few unrecorded commands, shortened
}

// Stats are what one endpoint saw.
type Stats struct {
	Conns        atomic.Int64 // TCP connections accepted
	Handshakes   atomic.Int64 // SSH handshakes completed (authenticated)
	Refused      atomic.Int64 // connections closed before the banner (Options.Refuse)
	Failed       atomic.Int64 // handshakes that did not complete: lost, or a protocol error
	AuthRejected atomic.Int64 // public keys rejected
	Commands     atomic.Int64 // exec requests
	Exact        atomic.Int64 // ...answered from a recorded command as received
	Normalised   atomic.Int64 // ...answered from a recorded command after normalisation
	Modelled     atomic.Int64 // ...answered by the network model
	Unrecorded   atomic.Int64 // ...answered exit 127
	MaxCmdBytes  atomic.Int64 // the longest command
	OverArgMax   atomic.Int64 // commands a real sshd could not run (longer than Linux's MAX_ARG_STRLEN)
	SFTPSessions atomic.Int64
	SFTPFiles    atomic.Int64 // files written and closed
	SFTPBytes    atomic.Int64 // bytes received over SFTP
}

// maxArgStrlen is Linux's limit on one argument (MAX_ARG_STRLEN, 32 pages, with its NUL): sshd runs a
// command as `$SHELL -c COMMAND`, so a longer command fails there with E2BIG.
const maxArgStrlen = 32 * 4096

// NewFleet makes the endpoints' keys and listeners; Serve starts answering.
func NewFleet(o Options) (*Fleet, error) {
	if o.N < 1 || o.ControlPlanes < 1 || o.ControlPlanes > o.N {
		return nil, fmt.Errorf("want 1 <= control planes (%d) <= N (%d)", o.ControlPlanes, o.N)
	}
	if o.ClientKey == nil || o.Recording == nil {
		return nil, errors.New("a fleet needs a client key and a recording")
	}
	if !o.Base.Is4() || !o.Base.IsLoopback() {
		return nil, fmt.Errorf("base address %s is not an IPv4 loopback address", o.Base)
	}
	f := &Fleet{opts: o, replay: newReplay(o.Recording), byIP: map[string]*Endpoint{}, conns: map[net.Conn]bool{}, started: time.Now()}
	addr := o.Base
	for i := range o.N {
		for b := addr.As4(); b[3] == 0 || b[3] == 255; b = addr.As4() {
			addr = addr.Next()
		}
		if !addr.IsLoopback() {
			f.Close()
			return nil, fmt.Errorf("%d endpoints from %s leave 127.0.0.0/8", o.N, o.Base)
		}
		e, err := f.newEndpoint(i, addr)
		if err != nil {
			f.Close()
			return nil, err
		}
		f.Endpoints = append(f.Endpoints, e)
		f.byIP[addr.String()] = e
		addr = addr.Next()
	}
	return f, nil
}

func (f *Fleet) newEndpoint(i int, ip netip.Addr) (*Endpoint, error) {
	e := &Endpoint{Index: i, Name: fmt.Sprintf("sim%04d", i+1), IP: ip, Role: "worker", refuse: f.opts.Refuse[i],
		held: map[int]bool{}, files: map[string][]byte{}}
	if i < f.opts.ControlPlanes {
		e.Role = "control-plane"
	}
	signer, err := newSigner()
	if err != nil {
		return nil, fmt.Errorf("make host key of %s: %w", e.Name, err)
	}
	e.Key = signer.PublicKey()
	want := f.opts.ClientKey.Marshal()
	e.cfg = &ssh.ServerConfig{
		PublicKeyCallback: func(c ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
			if c.User() == f.opts.User && string(k.Marshal()) == string(want) {
				return nil, nil
			}
			e.Stats.AuthRejected.Add(1)
			return nil, fmt.Errorf("fleetsim: key %s for user %s not authorised", ssh.FingerprintSHA256(k), c.User())
		},
		ServerVersion: "SSH-2.0-fleetsim",
	}
	e.cfg.AddHostKey(signer)
	e.tmpl = f.replay.templateFor(e.Role)
	e.setIdentity()
	ln, err := net.Listen("tcp", netip.AddrPortFrom(ip, uint16(f.opts.Port)).String())
	if err != nil {
		return nil, fmt.Errorf("listen for %s: %w", e.Name, err)
	}
	e.ln = ln
	e.Port = ln.Addr().(*net.TCPAddr).Port
	return e, nil
}

// setIdentity derives the endpoint's machine-id, product_uuid and MACs from its name, and the
// substitutions between them and its recorded host's placeholders.
func (e *Endpoint) setIdentity() {
	sum := sha256.Sum256([]byte("fleetsim " + e.Name))
	hx := hex.EncodeToString(sum[:])
	id := identity{Name: e.Name, Hostname: e.Name, IP: e.IP.String(), MachineID: hx[:32],
		ProductUUID: hx[32:40] + "-" + hx[40:44] + "-" + hx[44:48] + "-" + hx[48:52] + "-" + hx[52:64]}
	t := e.tmpl.index
	pairs := []string{fmt.Sprintf("{{h%d.name}}", t), id.Name, fmt.Sprintf("{{h%d.hostname}}", t), id.Hostname,
		fmt.Sprintf("{{h%d.ip}}", t), id.IP, fmt.Sprintf("{{h%d.machine_id}}", t), id.MachineID,
		fmt.Sprintf("{{h%d.product_uuid}}", t), id.ProductUUID}
	for k := range e.tmpl.macs {
		mac := fmt.Sprintf("02:f5:%02x:%02x:%02x:%02x", k, e.Index>>16&0xff, e.Index>>8&0xff, e.Index&0xff)
		pairs = append(pairs, fmt.Sprintf("{{h%d.mac%d}}", t, k), mac)
	}
	e.fill = strings.NewReplacer(pairs...)
	e.unfill = [][2]string{{id.IP, fmt.Sprintf("{{h%d.ip}}", t)}, {id.Name, fmt.Sprintf("{{h%d.name}}", t)}}
}

// Serve accepts connections on every endpoint until Close.
func (f *Fleet) Serve() {
	for _, e := range f.Endpoints {
		f.wg.Add(1)
		go f.accept(e)
	}
}

func (f *Fleet) accept(e *Endpoint) {
	defer f.wg.Done()
	for {
		c, err := e.ln.Accept()
		if err != nil {
			if f.isClosed() {
				return
			}
			e.Stats.Failed.Add(1) // out of file descriptors, or the like: a lost connection
			time.Sleep(10 * time.Millisecond)
			continue
		}
		e.Stats.Conns.Add(1)
		if e.refuse {
			e.Stats.Refused.Add(1)
			c.Close()
			continue
		}
		if !f.track(c) {
			c.Close()
			return
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer f.untrack(c)
			f.handle(e, c)
		}()
	}
}

func (f *Fleet) handle(e *Endpoint, c net.Conn) {
	c.SetDeadline(time.Now().Add(time.Minute)) // for the handshake
	sc, chans, reqs, err := ssh.NewServerConn(c, e.cfg)
	if err != nil {
		e.Stats.Failed.Add(1)
		return
	}
	defer sc.Close()
	c.SetDeadline(time.Time{})
	e.Stats.Handshakes.Add(1)
	go ssh.DiscardRequests(reqs) // keepalive@openssh.com: answered "not understood", as by OpenSSH
	serveSessions(chans, "fleetsim", func(ch ssh.Channel, reqs <-chan *ssh.Request) { f.session(e, sc.User(), ch, reqs) })
}

// serveSessions accepts a connection's session channels (and rejects any other kind, as who says what) and
// serves each with serve in its own goroutine, until the connection ends and every session is done.
func serveSessions(chans <-chan ssh.NewChannel, who string, serve func(ssh.Channel, <-chan *ssh.Request)) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, who+": only session channels")
			continue
		}
		ch, reqs, err := nc.Accept()
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			serve(ch, reqs)
		}()
	}
}

// session serves one session channel: an exec, or the sftp subsystem.
func (f *Fleet) session(e *Endpoint, user string, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	for req := range reqs {
		switch req.Type {
		case "exec", "subsystem":
			var p struct{ Value string }
			if err := ssh.Unmarshal(req.Payload, &p); err != nil || (req.Type == "subsystem" && p.Value != "sftp") {
				req.Reply(false, nil)
				continue
			}
			req.Reply(true, nil)
			go ssh.DiscardRequests(reqs)
			if req.Type == "subsystem" {
				f.serveSFTP(e, ch)
				return
			}
			status := f.exec(e, ch, p.Value)
			ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(status)}))
			return
		case "env":
			req.Reply(true, nil)
		default: // pty-req, shell, ...: not what kubeforge asks for
			req.Reply(false, nil)
		}
	}
}

// exec answers one command and returns its exit status.
func (f *Fleet) exec(e *Endpoint, ch ssh.Channel, cmd string) int {
	e.Stats.Commands.Add(1)
	for n := int64(len(cmd)); ; {
		if m := e.Stats.MaxCmdBytes.Load(); n <= m || e.Stats.MaxCmdBytes.CompareAndSwap(m, n) {
			break
		}
	}
	if len(cmd) >= maxArgStrlen { // as OpenSSH's session.c: execve fails, perror(shell), exit 1
		e.Stats.OverArgMax.Add(1)
		fmt.Fprintf(ch.Stderr(), "/bin/sh: Argument list too long (fleetsim: a real sshd runs the command as one argument "+
			"of the user's shell, and Linux limits one argument to %d bytes; this one has %d)\n", maxArgStrlen-1, len(cmd))
		return 1
	}
	script := unwrapShell(cmd)
	if script == "sh -s" {
		// The script comes on stdin (kubeforge sends long ones so): read it whole, as the shell would.
		b, err := io.ReadAll(io.LimitReader(ch, 16<<20))
		if err != nil {
			fmt.Fprintf(ch.Stderr(), "fleetsim: read the script from stdin: %v\n", err)
			return 1
		}
		script = string(b)
	} else {
		go io.Copy(io.Discard, ch) // stdin, if any
	}
	if out, ok := f.model(e, script); ok {
		e.Stats.Modelled.Add(1)
		io.WriteString(ch, out)
		return 0
	}
	x, kind := f.replay.lookup(e.tmpl, replaceTokens(cmd, e.unfill))
	switch kind {
	case matchExact:
		e.Stats.Exact.Add(1)
	case matchNormalised:
		e.Stats.Normalised.Add(1)
	default:
		e.Stats.Unrecorded.Add(1)
		e.mu.Lock()
		if len(e.unrecorded) < 5 {
			e.unrecorded = append(e.unrecorded, shorten(cmd, 300))
		}
		e.mu.Unlock()
		fmt.Fprintf(ch.Stderr(), "fleetsim: unrecorded command (endpoint %s; a simulation answers only what was recorded): %s\n", e.Name, shorten(cmd, 300))
		return 127
	}
	if f.opts.Latency {
		time.Sleep(time.Duration(x.DurationMS * float64(time.Millisecond)))
	}
	io.WriteString(ch, e.answer(x.Stdout))
	io.WriteString(ch.Stderr(), e.answer(x.Stderr))
	return x.Exit
}

// answer fills a recorded answer with the endpoint's identity and the time.
func (e *Endpoint) answer(s string) string {
	if !strings.Contains(s, "{{") {
		return s
	}
	s = e.fill.Replace(s)
	if strings.Contains(s, "{{clock}}") {
		now := time.Now()
		s = strings.ReplaceAll(s, "{{clock}}", fmt.Sprintf("%d.%09d", now.Unix(), now.Nanosecond()))
	}
	return s
}

func (f *Fleet) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.conns[c] = true
	return true
}

func (f *Fleet) untrack(c net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.conns, c)
}

func (f *Fleet) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// Close stops every listener and connection and waits for their goroutines.
func (f *Fleet) Close() {
	f.mu.Lock()
	f.closed = true
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	for _, e := range f.Endpoints {
		e.ln.Close()
	}
	f.wg.Wait()
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + fmt.Sprintf("...(%d more bytes)", len(s)-n)
}
