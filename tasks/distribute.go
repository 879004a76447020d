package tasks

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/kubeforge/kubeforge/internal/atomicfile"
	"github.com/kubeforge/kubeforge/ssh"
)

// How artifacts reach the hosts (docs/artifacts.md). The workstation uploads
// each file to the first host that needs it; the other hosts fetch it from
// hosts that already hold a verified copy, over the cluster network, in
// levels: each holder feeds at most Options.Fanout hosts of the next level at
// once, so the workstation sends about one copy of each artifact whatever
// the number of hosts. Every fetched file is checked against the digest the
// workstation computed before it is renamed into place; a file a peer could
// not deliver comes from the workstation. A holder serves with `kubeforge
// peer-serve`, run over SSH for the length of the step: it binds the host's
// cluster address, answers only a one-time secret and exits when its SSH
// session ends.

// PeerBinaryPath is where the hosts that serve their peers keep the binary
// that runs peer-serve: kubeforge-peer (3 MB), or kubeforge itself when this
// build does not carry it (removed with the artifacts by reset). Like the
// digest cache it is kubeforge's own transport, not the cluster's state: it
// is written where a run needs a server, and neither planned nor reported
// as a change.
const PeerBinaryPath = RemoteArtifactsDir + "/bin/kubeforge-peer"

// DefaultFanout is how many hosts one holder feeds at once.
const DefaultFanout = 4

// distribution is the artifacts step's state for one run.
type distribution struct {
	mu      sync.Mutex
	off     string         // why peers are not used ("" when they are)
	level   map[string]int // host -> its batch
	last    int            // the last batch: its hosts serve no one
	held    bool           // batch 0 is the hosts that held everything already
	holders []*holder      // hosts whose copies are verified, in the order they got them
	servers map[string]*peerServer
	bad     map[string]string   // holder -> why it serves no more
	server  map[string]ssh.File // GOARCH -> the binary that runs peer-serve
	stats   DistributionStats
}

// holder is a host with verified copies of files (digest -> path).
type holder struct {
	h     *Host
	files map[string]string
}

// peerServer is a peer-serve running on a holder.
type peerServer struct {
	holder  *holder
	proc    *ssh.Process
	port    int
	secret  string
	clients int // hosts of the current batch sent to it
}

// DistributionStats says where the artifacts came from in this run.
type DistributionStats struct {
	Uploaded      int   `json:"uploaded"`      // files sent by the workstation
	UploadedBytes int64 `json:"uploadedBytes"` //
	Fetched       int   `json:"fetched"`       // files fetched from peers
	FetchedBytes  int64 `json:"fetchedBytes"`  //
	Fallbacks     int   `json:"fallbacks"`     // files a peer failed to deliver, then uploaded
}

func (e *Env) distribution() *distribution {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.dist == nil {
		e.dist = &distribution{level: map[string]int{}, servers: map[string]*peerServer{}, bad: map[string]string{}, server: map[string]ssh.File{}}
	}
	return e.dist
}

// Distribution returns where this run's artifacts came from.
func (e *Env) Distribution() DistributionStats {
	d := e.distribution()
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

// peersOff says why files cannot go host to host ("" when they can), after
// finding the binary each host's server would run.
func (d *distribution) peersOff(env *Env, hosts []*Host) string {
	switch {
	case env.Opts.Fanout <= 0:
		return "--fanout 0"
	case len(hosts) < 2:
		return "one host"
	}
	for _, h := range hosts {
		arch := ""
		if h.Facts != nil {
			arch = goArch[h.Facts.Arch]
		}
		if _, ok := d.server[arch]; ok || arch == "" {
			if arch == "" {
				return "the architecture of " + h.Name + " is not known"
			}
			continue
		}
		f, err := peerServerFile(env, arch)
		if err != nil {
			return fmt.Sprintf("no server binary for %s (linux/%s): %v", h.Name, arch, err)
		}
		d.server[arch] = f
	}
	return ""
}

// peerServerFile is the binary that runs peer-serve on linux/arch: the
// kubeforge-peer this build carries (written once into the state dir's
// cache), else this kubeforge when it is linux/arch itself.
func peerServerFile(env *Env, arch string) (ssh.File, error) {
	if env.Opts.PeerServer != nil {
		if b, ok := env.Opts.PeerServer(arch); ok {
			p := filepath.Join(env.StateDir, "cache", "kubeforge-peer-linux-"+arch)
			if old, err := os.ReadFile(p); err != nil || !bytes.Equal(old, b) {
				if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
					return ssh.File{}, err
				}
				if err := atomicfile.Write(p, b, 0o700); err != nil {
					return ssh.File{}, err
				}
			}
			sum := sha256.Sum256(b)
			return ssh.File{Path: PeerBinaryPath, Mode: 0o755, Source: p, SHA256: hex.EncodeToString(sum[:])}, nil
		}
	}
	self, err := selfBinary()
	if err != nil {
		return ssh.File{}, err
	}
	if runtime.GOOS != "linux" || runtime.GOARCH != arch {
		return ssh.File{}, fmt.Errorf("this kubeforge is %s/%s and carries no kubeforge-peer for linux/%s (build it with make build)", runtime.GOOS, runtime.GOARCH, arch)
	}
	a, err := env.artifact(self, false)
	if err != nil {
		return ssh.File{}, err
	}
	return ssh.File{Path: PeerBinaryPath, Mode: 0o755, Source: self, SHA256: a.sha256}, nil
}

// PeerPush is a host step that puts files on the hosts, host to host where
// it can (one per run: the Env keeps one distribution). Its Batches, and
// StartPeerServers and StopPeerServers, go in the step with its Run.
type PeerPush struct {
	// Files lists what h must hold (each with Source and SHA256 to go host
	// to host; others come from the workstation).
	Files func(env *Env, h *Host) ([]ssh.File, error)
}

// Batches orders the step: the hosts that already hold every file the plan
// checked come first (they only serve), then one host gets everything from
// the workstation, then each batch is at most Fanout times as large as the
// holders before it. Control planes come first: they need every file a
// worker needs, and kubectl and kubeadm too.
func (p PeerPush) Batches(env *Env, hosts []*Host) [][]*Host {
	d := env.distribution()
	d.mu.Lock()
	defer d.mu.Unlock()
	var held, rest []*Host
	for _, h := range hosts {
		files, err := p.Files(env, h)
		if err == nil && len(h.unverified(files)) == 0 {
			held = append(held, h)
		} else {
			rest = append(rest, h)
		}
	}
	if d.off = d.peersOff(env, hosts); d.off == "" && len(rest) == 0 {
		d.off = "every host holds its files"
	}
	if d.off != "" {
		env.Log.Info("files go from here to every host that lacks them", "why", d.off)
		return [][]*Host{hosts}
	}
	sort.SliceStable(rest, func(i, j int) bool { return rest[i].IsControlPlane() && !rest[j].IsControlPlane() })
	var batches [][]*Host
	if len(held) > 0 {
		batches = append(batches, held)
		d.held = true
	}
	pool := len(held)
	for len(rest) > 0 {
		n := max(1, pool*env.Opts.Fanout)
		n = min(n, len(rest))
		batches = append(batches, rest[:n])
		pool += n
		rest = rest[n:]
	}
	for i, b := range batches {
		for _, h := range b {
			d.level[h.Name] = i
		}
	}
	d.last = len(batches) - 1
	return batches
}

// Run puts h's files on it: from peers where a server holds them, from the
// workstation otherwise. Contents shared by several paths travel once.
func (p PeerPush) Run(ctx context.Context, env *Env, h *Host) error {
	files, err := p.Files(env, h)
	if err != nil || len(files) == 0 {
		return err
	}
	d := env.distribution()
	if bin, ok := d.serverFor(h); ok {
		// The hosts that will serve their peers need the server's binary: fetched like the rest.
		files = append(files, bin)
	}
	err = uploadDedup(ctx, h, files, func(ctx context.Context, unique []ssh.File) ([]string, error) {
		diffs, err := h.Client.Check(ctx, unique)
		if err != nil {
			return nil, err
		}
		stale := map[string]bool{}
		for _, df := range diffs {
			stale[df.Path] = true
		}
		var todo []ssh.File
		for _, f := range unique {
			if stale[f.Path] {
				todo = append(todo, f)
			}
		}
		return d.obtain(ctx, env, h, todo)
	})
	if err != nil {
		return err
	}
	h.verify(files)
	d.hold(h, files)
	return nil
}

// serverFor returns the server binary h gets with its files, to serve a
// later batch. The hosts that held everything already get it only when they
// are picked to serve (StartPeerServers).
func (d *distribution) serverFor(h *Host) (ssh.File, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	l, ok := d.level[h.Name]
	if d.off != "" || !ok || l >= d.last || (d.held && l == 0) || h.Facts == nil {
		return ssh.File{}, false
	}
	f, ok := d.server[goArch[h.Facts.Arch]]
	return f, ok
}

// StartPeerServers runs before each batch of the artifacts step: it starts
// peer-serve on enough holders to feed the batch (Fanout hosts each),
// preferring those that hold the most files and those already serving.
func StartPeerServers(ctx context.Context, env *Env, batch []*Host) error {
	d := env.distribution()
	d.mu.Lock()
	if d.off != "" || len(d.holders) == 0 {
		d.mu.Unlock()
		return nil
	}
	for _, s := range d.servers {
		s.clients = 0
	}
	want := (len(batch) + env.Opts.Fanout - 1) / env.Opts.Fanout
	cands := make([]*holder, 0, len(d.holders))
	for _, ho := range d.holders {
		if d.bad[ho.h.Name] == "" {
			cands = append(cands, ho)
		}
	}
	sort.SliceStable(cands, func(i, j int) bool {
		_, si := d.servers[cands[i].h.Name]
		_, sj := d.servers[cands[j].h.Name]
		if si != sj {
			return si
		}
		return len(cands[i].files) > len(cands[j].files)
	})
	var start []*holder
	running := 0
	for _, ho := range cands {
		if running+len(start) >= want {
			break
		}
		if _, ok := d.servers[ho.h.Name]; ok {
			running++
		} else {
			start = append(start, ho)
		}
	}
	d.mu.Unlock()

	inParallel(len(start), func(i int) {
		ho := start[i]
		s, err := startPeerServer(ctx, env, ho)
		d.mu.Lock()
		defer d.mu.Unlock()
		if err != nil {
			d.bad[ho.h.Name] = err.Error()
			env.warn(fmt.Sprintf("%s cannot serve artifacts to its peers (they come from elsewhere): %v", ho.h.Name, err))
			return
		}
		d.servers[ho.h.Name] = s
	})
	return nil
}

// inParallel runs f(0), ..., f(n-1), 32 at once: servers start and stop on
// many holders together, between the runner's batches.
func inParallel(n int, f func(i int)) {
	var g errgroup.Group
	g.SetLimit(32)
	for i := range n {
		g.Go(func() error { f(i); return nil })
	}
	_ = g.Wait()
}

// peerServeIdle: a server no client visits for this long exits by itself
// (its SSH session normally ends it long before).
const peerServeIdle = 10 * time.Minute

func startPeerServer(ctx context.Context, env *Env, ho *holder) (*peerServer, error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	d := env.distribution()
	d.mu.Lock()
	bin, ok := d.server[goArch[ho.h.Facts.Arch]]
	d.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("no server binary for linux/%s", ho.h.Facts.Arch)
	}
	if _, ok := ho.files[bin.SHA256]; !ok {
		changed, err := ho.h.Client.Upload(ctx, []ssh.File{bin}) // not a change of the host's state (see PeerBinaryPath)
		if err != nil {
			return nil, err
		}
		if len(changed) > 0 {
			var n int64
			if fi, err := os.Stat(bin.Source); err == nil {
				n = fi.Size()
			}
			d.count(func(st *DistributionStats) { st.Uploaded++; st.UploadedBytes += n })
		}
		ho.files[bin.SHA256] = PeerBinaryPath
	}
	s := &peerServer{holder: ho, secret: hex.EncodeToString(secret)}
	cfg, err := json.Marshal(map[string]any{
		"listen": net.JoinHostPort(ho.h.NodeIP(), "0"), "secret": s.secret, "files": ho.files,
		"maxClients": env.Opts.Fanout, "idle": peerServeIdle.String(),
	})
	if err != nil {
		return nil, err
	}
	proc, err := ho.h.Client.Start(ctx, ssh.Quote(ho.files[bin.SHA256])+" peer-serve", append(cfg, '\n'))
	if err != nil {
		return nil, err
	}
	line, err := proc.Line(20 * time.Second)
	if err == nil {
		s.port, err = ssh.PeerPort(line)
	}
	if err != nil {
		_, _ = proc.Stop(5 * time.Second)
		return nil, err
	}
	s.proc = proc
	ho.h.Log.Info("serving artifacts to peers", "addr", net.JoinHostPort(ho.h.NodeIP(), strconv.Itoa(s.port)), "files", len(ho.files))
	return s, nil
}

// StopPeerServers runs after the artifacts step (whatever its outcome): it
// ends every peer-serve and waits for each to exit.
func StopPeerServers(ctx context.Context, env *Env, _ []*Host) error {
	d := env.distribution()
	d.mu.Lock()
	servers := make([]*peerServer, 0, len(d.servers))
	for _, s := range d.servers {
		servers = append(servers, s)
	}
	d.servers = map[string]*peerServer{}
	st := d.stats
	d.mu.Unlock()
	inParallel(len(servers), func(i int) {
		s := servers[i]
		out, err := s.proc.Stop(15 * time.Second)
		if err != nil {
			env.warn(fmt.Sprintf("the artifact server on %s did not stop cleanly: %v", s.holder.h.Name, err))
			return
		}
		s.holder.h.Log.Info("stopped serving artifacts", "stats", strings.TrimSpace(out))
	})
	if st.Fetched+st.Uploaded > 0 {
		env.Log.Info("artifacts distributed", "uploaded", st.Uploaded, "uploaded_bytes", st.UploadedBytes,
			"fetched_from_peers", st.Fetched, "fetched_bytes", st.FetchedBytes, "fallbacks", st.Fallbacks)
	}
	return nil
}

// source picks, for a file with digest sum, the least loaded running server
// that holds it (nil: none).
func (d *distribution) source(sum string, counted map[*peerServer]bool) *peerServer {
	var best *peerServer
	for _, s := range d.servers {
		if _, ok := s.holder.files[sum]; !ok || d.bad[s.holder.h.Name] != "" {
			continue
		}
		if best == nil || s.clients < best.clients || (s.clients == best.clients && s.holder.h.Name < best.holder.h.Name) {
			best = s
		}
	}
	if best != nil && !counted[best] {
		best.clients++
		counted[best] = true
	}
	return best
}

// obtain puts the distinct-content files (already known to differ on h) on
// h: from peers where a server holds them, from the workstation otherwise or
// when a peer fails. A peer that sent wrong bytes serves no one else; a file
// h itself could not write (its disk is full) is h's error, not the peer's.
// It returns the paths written.
func (d *distribution) obtain(ctx context.Context, env *Env, h *Host, files []ssh.File) ([]string, error) {
	var fetch []ssh.PeerFile
	var direct []ssh.File
	from := map[string]*peerServer{}
	d.mu.Lock()
	counted := map[*peerServer]bool{}
	for _, f := range files {
		var s *peerServer
		if d.off == "" && f.SHA256 != "" && f.Source != "" {
			s = d.source(f.SHA256, counted)
		}
		if s == nil {
			direct = append(direct, f)
			continue
		}
		st, err := os.Stat(f.Source)
		if err != nil {
			direct = append(direct, f)
			continue
		}
		from[f.Path] = s
		fetch = append(fetch, ssh.PeerFile{File: f, Size: st.Size(), Addr: s.holder.h.NodeIP(), Port: s.port, Secret: s.secret})
	}
	d.mu.Unlock()

	var changed []string
	if len(fetch) > 0 {
		res, err := h.Client.Fetch(ctx, fetch)
		if err != nil {
			return nil, err
		}
		var failed []string
		var hostErrs []error
		unreachable := 0
		for i, r := range res {
			if r.OK {
				changed = append(changed, r.Path)
				d.count(func(st *DistributionStats) { st.Fetched++; st.FetchedBytes += fetch[i].Size })
				continue
			}
			s := from[r.Path]
			if r.Failure == ssh.FetchHostFailed {
				// h's own failure (its disk is full, ...): the peer served well, and
				// the same bytes from here would fail the same way.
				hostErrs = append(hostErrs, fmt.Errorf("write %s on %s (fetched from %s, not at fault): %s", r.Path, h.Name, s.holder.h.Name, r.Reason))
				continue
			}
			d.mu.Lock()
			if r.Failure == ssh.FetchBadPeer && d.bad[s.holder.h.Name] == "" {
				// A copy that does not match its digest or size, or a transfer cut short or too slow: no more clients for it.
				d.bad[s.holder.h.Name] = r.Reason
			}
			d.stats.Fallbacks++
			d.mu.Unlock()
			if r.Failure == ssh.FetchUnreachable {
				unreachable++
			}
			failed = append(failed, fmt.Sprintf("%s from %s (%s)", r.Path, s.holder.h.Name, r.Reason))
			direct = append(direct, fetch[i].File)
		}
		if len(hostErrs) > 0 {
			return changed, errors.Join(hostErrs...)
		}
		if len(failed) > 0 {
			env.warn(fmt.Sprintf("%s: %d of %d files could not be fetched from peers and were uploaded from here: %s",
				h.Name, len(failed), len(res), strings.Join(failed, "; ")))
		}
		d.mu.Lock()
		if unreachable == len(res) && d.stats.Fetched == 0 && d.off == "" {
			// Nobody got anything from a peer and this host reached none: the
			// cluster network does not carry the servers' ports. Direct from now on.
			d.off = "peers cannot reach each other: " + h.Name + " could not connect to " + fetch[0].Addr
			env.Log.Warn("artifacts go from here to every host from now on", "why", d.off)
		}
		d.mu.Unlock()
	}
	if len(direct) > 0 {
		up, err := h.Client.Upload(ctx, direct)
		if err != nil {
			return changed, err
		}
		var n int64
		for _, f := range direct {
			if st, err := os.Stat(f.Source); err == nil && slices.Contains(up, f.Path) {
				n += st.Size()
			}
		}
		d.count(func(st *DistributionStats) { st.Uploaded += len(up); st.UploadedBytes += n })
		changed = append(changed, up...)
	}
	return changed, nil
}

func (d *distribution) count(f func(*DistributionStats)) {
	d.mu.Lock()
	f(&d.stats)
	d.mu.Unlock()
}

// hold records that h now holds verified copies of files.
func (d *distribution) hold(h *Host, files []ssh.File) {
	ho := &holder{h: h, files: map[string]string{}}
	for _, f := range files {
		if f.SHA256 != "" && f.Source != "" {
			if _, ok := ho.files[f.SHA256]; !ok {
				ho.files[f.SHA256] = f.Path
			}
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.off == "" {
		d.holders = append(d.holders, ho)
	}
}
