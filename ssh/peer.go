package ssh

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	xssh "golang.org/x/crypto/ssh"
)

// Process is a command left running on a host (Start): a server whose life
// is the SSH session's. Closing its stdin (Stop) is how it is told to exit;
// when the workstation dies, sshd closes it too.
type Process struct {
	c       *Client
	cmd     string
	sess    *xssh.Session
	stdin   io.WriteCloser
	lines   chan string
	stderr  bytes.Buffer // guarded by mu
	mu      sync.Mutex
	done    chan struct{}
	err     error
	release func()
	start   time.Time
}

// Start runs cmd (privileged, as Run) and returns at once, with input
// already written to its stdin and stdin left open. It takes one of the
// connection's session slots until the command exits, not a pool-wide one:
// a server waits, it does not work.
func (c *Client) Start(ctx context.Context, cmd string, input []byte) (*Process, error) {
	full := "sh -c " + Quote(cmd)
	if !c.root() {
		full = "sudo -n -- " + full
	}
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	release := func() { <-c.slots }
	var sess *xssh.Session
	err := c.withConn(ctx, cmd, func(cn *conn) (err error) {
		sess, err = cn.ssh.NewSession()
		return err
	})
	if err != nil {
		release()
		return nil, fmt.Errorf("open session on %s: %w", c.cfg.Host, err)
	}
	p := &Process{c: c, cmd: cmd, sess: sess, lines: make(chan string, 16), done: make(chan struct{}), release: release, start: time.Now()}
	stdin, err1 := sess.StdinPipe()
	stdout, err2 := sess.StdoutPipe()
	sess.Stderr = &boundedWriter{mu: &p.mu, w: &p.stderr}
	if err := errors.Join(err1, err2); err != nil {
		sess.Close()
		release()
		return nil, fmt.Errorf("start %q on %s: %w", Shorten(cmd, 200), c.cfg.Host, err)
	}
	p.stdin = stdin
	if err := sess.Start(full); err != nil {
		sess.Close()
		release()
		return nil, fmt.Errorf("start %q on %s: %w", Shorten(cmd, 200), c.cfg.Host, err)
	}
	c.cfg.Logger.Info("started", "cmd", cmd)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	go func() {
		p.err = sess.Wait()
		close(p.done)
	}()
	if _, err := stdin.Write(input); err != nil {
		p.Stop(5 * time.Second)
		return nil, fmt.Errorf("start %q on %s: write its input: %w", Shorten(cmd, 200), c.cfg.Host, err)
	}
	return p, nil
}

type boundedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *boundedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w.Len() > maxLoggedStderr {
		return len(b), nil
	}
	return l.w.Write(b)
}

// Line returns the process's next line of stdout, waiting at most timeout.
// A process that exits first gives an error with its stderr.
func (p *Process) Line(timeout time.Duration) (string, error) {
	select {
	case l, ok := <-p.lines:
		if ok {
			return l, nil
		}
		<-p.done
		return "", p.failure("exited")
	case <-time.After(timeout):
		return "", p.failure(fmt.Sprintf("printed nothing in %s", timeout))
	}
}

func (p *Process) failure(what string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return &RunError{Host: p.c.cfg.Host, Cmd: p.cmd, Stderr: p.stderr.String(), ExitCode: exitCode(p.err), Signal: what}
}

func exitCode(err error) int {
	var ee *xssh.ExitError
	if errors.As(err, &ee) {
		return ee.ExitStatus()
	}
	if err != nil {
		return -1
	}
	return 0
}

// Stop closes the process's stdin and waits up to grace for it to exit (then
// kills it and closes the session). It returns the rest of its stdout and
// its error, a *RunError when it failed or had to be killed.
func (p *Process) Stop(grace time.Duration) (string, error) {
	_ = p.stdin.Close()
	var rest []string
	timer := time.NewTimer(grace)
	defer timer.Stop()
	killed := false
loop:
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				break loop
			}
			rest = append(rest, l)
		case <-timer.C:
			killed = true
			_ = p.sess.Signal(xssh.SIGKILL)
			p.sess.Close()
			for l := range p.lines {
				rest = append(rest, l)
			}
			break loop
		}
	}
	<-p.done
	p.sess.Close()
	p.release()
	out := strings.Join(rest, "\n")
	log := p.c.cfg.Logger.With("cmd", p.cmd, "duration", time.Since(p.start).Round(time.Millisecond))
	switch {
	case killed:
		log.Info("stopped: killed", "grace", grace)
		return out, p.failure(fmt.Sprintf("did not exit within %s of its stdin closing; killed", grace))
	case p.err != nil:
		log.Info("stopped", "err", p.err)
		return out, p.failure("")
	}
	log.Info("stopped", "exit", 0)
	return out, nil
}

// PeerFile is a file h fetches from a peer's server (peer-serve) instead of
// the workstation. File.SHA256 is required: nothing else is trusted.
type PeerFile struct {
	File
	Size   int64  // the file's size: the fetch takes exactly this many bytes
	Addr   string // the server's host
	Port   int
	Secret string // sent on stdin, never on a command line
}

// FetchResult is what became of one PeerFile.
type FetchResult struct {
	Path    string
	OK      bool
	Failure FetchFailure // whose failure it was, when not OK
	Reason  string       // why not, for people: "unreachable", "short: 67108864 of 209715200 bytes, exit 124", ...
}

// FetchFailure says whose failure a failed fetch was.
type FetchFailure int

const (
	// FetchFailed is any other failure: the host has no bash, the command said nothing of the file.
	FetchFailed FetchFailure = iota
	// FetchUnreachable: the host could not connect to the peer.
	FetchUnreachable
	// FetchBadPeer: the peer's bytes do not make the file (other bytes, too many, too few, too
	// slowly): it should serve no one else.
	FetchBadPeer
	// FetchHostFailed: the fetching host could not write the file (its disk is full, ...): the peer
	// is not at fault. Reason names the path and the cause.
	FetchHostFailed
)

// fetchScript defines f PATH MODE SHA256 HOST PORT SECONDS SIZE: it reads the
// secret from stdin, probes the peer (5 s), streams the file into a temp name
// in the target directory, at most SIZE+1 bytes and under a deadline, checks
// its size and digest, then gives it its mode and owner, fsyncs and renames
// it into place and records its digest in the sums cache. It prints "ok
// PATH", "fail PATH REASON" (the peer's or the network's failure) or "error
// PATH REASON" (this host's: a write, a directory, the rename); nothing is
// left at PATH or beside it unless the bytes matched. bash is needed for
// /dev/tcp (and PIPESTATUS); coreutils' timeout kills the transfer's whole
// process group; head stops it as soon as there is a byte too many, and only
// head writes the file, so its failure is this host's.
const fetchScript = `
say() { printf '%s %s %s\n' "$1" "$2" "$(printf '%s' "$3" | tr '\n' ' ')"; }
f() {
  IFS= read -r s || s=
  d=$(dirname -- "$1"); b=$(basename -- "$1")
  e=$(mkdir -p -- "$d" 2>&1) || { say error "$1" "create the directory $d: $e"; return; }
  if ! timeout 5 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$4" "$5" 2>/dev/null; then echo "fail $1 unreachable"; return; fi
  t=$(mktemp -- "$d/.$b.kubeforge-XXXXXX" 2>&1) || { say error "$1" "create a temp file in $d: $t"; return; }
  r=$(printf '%s %s\n' "$s" "$3" | timeout "$6" bash -c 'exec 3<>"/dev/tcp/$0/$1" || exit 2; IFS= read -r l; printf "%s\n" "$l" >&3; exec cat <&3' "$4" "$5" 2>/dev/null | LC_ALL=C head -c "$(($7 + 1))" 2>&1 >"$t"; echo "#${PIPESTATUS[1]} ${PIPESTATUS[2]}")
  st=${r##*#}; rc=${st% *}; wc=${st#* }; msg=${r%#*}; msg=${msg%$'\n'}
  if [ "$wc" != 0 ]; then
    rm -f -- "$t"; free=$(df -Pk -- "$d" 2>/dev/null | awk 'NR==2 {print $4}')
    say error "$1" "write $t: ${msg:-head exited $wc}; ${free:-?} KiB free in $d, the file needs $7 bytes"; return
  fi
  n=$(stat -c %s -- "$t")
  if [ "$n" -gt "$7" ]; then rm -f -- "$t"; echo "fail $1 oversize: more than $7 bytes"; return; fi
  if [ "$n" -lt "$7" ]; then rm -f -- "$t"; echo "fail $1 short: $n of $7 bytes, exit $rc"; return; fi
  got=$(sha256sum < "$t" | cut -d' ' -f1)
  if [ "$got" != "$3" ]; then rm -f -- "$t"; echo "fail $1 digest-mismatch: $n bytes"; return; fi
  if e=$( { chmod "$2" -- "$t" && chown 0:0 -- "$t" && { sync -- "$t" 2>/dev/null || sync; } && mv -f -- "$t" "$1"; } 2>&1 ); then
    record "$1" "$3" ours; echo "ok $1"
  else rm -f -- "$t"; say error "$1" "install $t: $e"; fi
}
`

// fetchRate is the slowest transfer accepted from a peer: a slower (or
// frozen) one is cut off and the file comes from the workstation instead.
const fetchRate = 8 << 20 // bytes per second

// Fetch has the host fetch files from peers, in ONE command, each verified
// against its Size and SHA256 before it is renamed into place. It reports per
// file, saying whose failure each was; a file that failed is untouched on the
// host. A host without bash fails every file ("no bash").
func (c *Client) Fetch(ctx context.Context, files []PeerFile) ([]FetchResult, error) {
	if len(files) == 0 {
		return nil, nil
	}
	var body, secrets strings.Builder
	for _, f := range files {
		if f.SHA256 == "" || !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path {
			return nil, fmt.Errorf("fetch %s on %s: needs a clean absolute path and a digest", f.Path, c.cfg.Host)
		}
		perm := f.Mode.Perm()
		if f.Mode == 0 {
			perm = 0o644
		}
		secs := 20 + f.Size/fetchRate
		fmt.Fprintf(&body, "f %s %o %s %s %d %d %d\n", Quote(f.Path), perm, strings.ToLower(f.SHA256), Quote(f.Addr), f.Port, secs, f.Size)
		secrets.WriteString(f.Secret + "\n")
	}
	// The per-file lines are the script's body; the secrets are its stdin.
	script := "command -v bash >/dev/null 2>&1 || { echo nobash; exit 0; }\nexec bash -c " + Quote(c.checkScript()+fetchScript+body.String())
	out, err := c.run(ctx, script, strings.NewReader(secrets.String()), true)
	if err != nil {
		return nil, fmt.Errorf("fetch files from peers on %s: %w", c.cfg.Host, err)
	}
	res := make([]FetchResult, len(files))
	byPath := map[string]int{}
	for i, f := range files {
		res[i] = FetchResult{Path: f.Path, Reason: "no answer"}
		byPath[f.Path] = i
	}
	if strings.TrimSpace(out) == "nobash" {
		for i := range res {
			res[i].Reason = "no bash on the host"
		}
		return res, nil
	}
	for _, l := range strings.Split(out, "\n") {
		fields := strings.Fields(l)
		if len(fields) < 2 {
			continue
		}
		i, ok := byPath[fields[1]]
		if !ok {
			continue
		}
		switch fields[0] {
		case "ok":
			res[i] = FetchResult{Path: fields[1], OK: true}
			c.cfg.Logger.Info("fetched from a peer", "path", fields[1], "peer", files[i].Addr, "sha256", files[i].SHA256)
		case "fail":
			res[i].Reason = strings.Join(fields[2:], " ")
			res[i].Failure = FetchBadPeer
			if res[i].Reason == "unreachable" {
				res[i].Failure = FetchUnreachable
			}
			c.cfg.Logger.Info("fetch from a peer failed", "path", fields[1], "peer", files[i].Addr, "reason", res[i].Reason)
		case "error":
			res[i].Reason = strings.Join(fields[2:], " ")
			res[i].Failure = FetchHostFailed
			c.cfg.Logger.Warn("could not write a file fetched from a peer", "path", fields[1], "peer", files[i].Addr, "reason", res[i].Reason)
		}
	}
	return res, nil
}

// PeerPort parses the "listening HOST:PORT" line of peer-serve.
func PeerPort(line string) (int, error) {
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if !ok {
		return 0, fmt.Errorf("unexpected first line %q", Shorten(line, 100))
	}
	i := strings.LastIndex(addr, ":")
	port, err := strconv.Atoi(addr[i+1:])
	if i < 0 || err != nil {
		return 0, fmt.Errorf("unexpected address %q", addr)
	}
	return port, nil
}
