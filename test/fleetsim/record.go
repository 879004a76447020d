package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	"gopkg.in/yaml.v3"
)

// recordMain is `fleetsim record`: an SSH proxy per real host (a harness made by test/harness) that
// forwards every exec to the host and saves the transcript.
func recordMain(args []string) (int, error) {
	fs := flag.NewFlagSet("fleetsim record", flag.ContinueOnError)
	harness := fs.String("harness", "", "harness directory (inventory.yaml, id_ed25519, known_hosts from `harness up`)")
	dir := fs.String("dir", "", "where to write the proxies' inventories, key and known_hosts (default: a temp dir)")
	out := fs.String("out", "", "recording to write (JSON)")
	base := fs.String("base", "127.3.0.1", "address of the first proxy")
	users := fs.String("users", "root,kube", "SSH users the proxies accept (one inventory-USER.yaml each)")
	source := fs.String("source", "real harness hosts (test/harness, image kubeforge-node:bookworm)", "what was recorded, for the file")
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	if *harness == "" || *out == "" {
		return 2, errors.New("record needs -harness and -out")
	}
	first, err := netip.ParseAddr(*base)
	if err != nil {
		return 2, fmt.Errorf("-base: %w", err)
	}
	if *dir == "" {
		if *dir, err = os.MkdirTemp("", "fleetsim-record-"); err != nil {
			return 1, err
		}
	}
	if *dir, err = filepath.Abs(*dir); err != nil {
		return 1, err
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return 1, err
	}
	r, err := newRecorder(*harness, *dir, first, strings.Split(*users, ","))
	if err != nil {
		return 1, err
	}
	defer r.close()
	fmt.Fprintf(os.Stderr, "fleetsim record: proxies for %d hosts; inventories %s/inventory-{%s}.yaml\n", len(r.up), *dir, *users)

	code := 0
	if cmdArgs := fs.Args(); len(cmdArgs) > 0 {
		cmd := exec.Command(cmdArgs[0], cmdArgs[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.Env = append(os.Environ(), "FLEETSIM_DIR="+*dir)
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			code = ee.ExitCode()
			fmt.Fprintf(os.Stderr, "fleetsim record: %s exited %d (recorded anyway)\n", cmdArgs[0], code)
		case err != nil:
			return 1, fmt.Errorf("run %s: %w", cmdArgs[0], err)
		}
	} else {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
		<-sigs
	}
	r.close()
	rec, err := r.recording(*source)
	if err != nil {
		return 1, err
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return 1, err
	}
	if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
		return 1, fmt.Errorf("write recording: %w", err)
	}
	n := 0
	for _, h := range rec.Hosts {
		n += len(h.Exchanges)
	}
	fmt.Fprintf(os.Stderr, "fleetsim record: %d exchanges from %d hosts written to %s\n", n, len(rec.Hosts), *out)
	return code, nil
}

// harnessInventory is what record reads of the harness's inventory.yaml.
type harnessInventory struct {
	Cluster map[string]any `yaml:"cluster"`
	SSH     struct {
		IdentityFiles []string `yaml:"identityFiles"`
		KnownHosts    []string `yaml:"knownHosts"`
	} `yaml:"ssh"`
	Hosts []struct {
		Name            string   `yaml:"name"`
		Address         string   `yaml:"address"`
		InternalAddress string   `yaml:"internalAddress"`
		Port            int      `yaml:"port"`
		Roles           []string `yaml:"roles"`
	} `yaml:"hosts"`
}

// recorder is one proxy per upstream host.
type recorder struct {
	inv      harnessInventory
	upAuth   ssh.Signer
	upKnown  ssh.HostKeyCallback
	up       []*upstream
	wg       sync.WaitGroup
	closeOne sync.Once
}

type upstream struct {
	name, nodeIP, addr, role string
	ln                       net.Listener
	mu                       sync.Mutex
	exchanges                []Exchange
	sftpBytes                int64
}

func newRecorder(harnessDir, dir string, first netip.Addr, users []string) (*recorder, error) {
	b, err := os.ReadFile(filepath.Join(harnessDir, "inventory.yaml"))
	if err != nil {
		return nil, fmt.Errorf("read harness inventory: %w", err)
	}
	r := &recorder{}
	if err := yaml.Unmarshal(b, &r.inv); err != nil {
		return nil, fmt.Errorf("parse harness inventory: %w", err)
	}
	if len(r.inv.SSH.IdentityFiles) == 0 || len(r.inv.SSH.KnownHosts) == 0 || len(r.inv.Hosts) == 0 {
		return nil, errors.New("the harness inventory names no identity file, known_hosts or host")
	}
	kb, err := os.ReadFile(r.inv.SSH.IdentityFiles[0])
	if err != nil {
		return nil, fmt.Errorf("read harness key: %w", err)
	}
	if r.upAuth, err = ssh.ParsePrivateKey(kb); err != nil {
		return nil, fmt.Errorf("parse harness key: %w", err)
	}
	if r.upKnown, err = knownhosts.New(r.inv.SSH.KnownHosts...); err != nil {
		return nil, fmt.Errorf("read harness known_hosts: %w", err)
	}
	key := filepath.Join(dir, "id_ed25519")
	client, err := clientKey(key)
	if err != nil {
		return nil, err
	}
	var known strings.Builder
	var hosts []inventoryHost
	addr := first
	for _, h := range r.inv.Hosts {
		ip := h.InternalAddress
		if ip == "" {
			ip = h.Address
		}
		port := h.Port
		if port == 0 {
			port = 22
		}
		role := "worker"
		for _, ro := range h.Roles {
			if ro == "control-plane" {
				role = ro
			}
		}
		u := &upstream{name: h.Name, nodeIP: ip, addr: net.JoinHostPort(h.Address, fmt.Sprint(port)), role: role}
		signer, err := newSigner()
		if err != nil {
			r.close()
			return nil, fmt.Errorf("make the proxy's host key for %s: %w", h.Name, err)
		}
		cfg := &ssh.ServerConfig{PublicKeyCallback: func(c ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
			if bytes.Equal(k.Marshal(), client.PublicKey().Marshal()) {
				return nil, nil
			}
			return nil, errors.New("fleetsim record: key not authorised")
		}}
		cfg.AddHostKey(signer)
		if u.ln, err = net.Listen("tcp", netip.AddrPortFrom(addr, 0).String()); err != nil {
			r.close()
			return nil, fmt.Errorf("listen for the proxy of %s: %w", h.Name, err)
		}
		lport := u.ln.Addr().(*net.TCPAddr).Port
		known.WriteString(knownHostsLine(addr.String(), lport, signer.PublicKey()) + "\n")
		hosts = append(hosts, inventoryHost{Name: h.Name, Address: addr.String(), InternalAddress: ip, Port: lport, Roles: h.Roles})
		r.up = append(r.up, u)
		r.wg.Add(1)
		go r.accept(u, cfg)
		addr = addr.Next()
	}
	kh := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(kh, []byte(known.String()), 0o600); err != nil {
		r.close()
		return nil, fmt.Errorf("write known_hosts: %w", err)
	}
	for _, user := range users {
		inv := inventoryFile{APIVersion: "kubeforge.io/v1alpha1", Kind: "Cluster", Cluster: r.inv.Cluster,
			SSH: inventorySSH{User: user, IdentityFiles: []string{key}, KnownHosts: []string{kh}}, Hosts: hosts}
		if err := writeInventory(filepath.Join(dir, "inventory-"+user+".yaml"), inv); err != nil {
			r.close()
			return nil, err
		}
	}
	return r, nil
}

func (r *recorder) accept(u *upstream, cfg *ssh.ServerConfig) {
	defer r.wg.Done()
	for {
		c, err := u.ln.Accept()
		if err != nil {
			return
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			if err := r.proxy(u, c, cfg); err != nil {
				fmt.Fprintf(os.Stderr, "fleetsim record: %s: %v\n", u.name, err)
			}
		}()
	}
}

// proxy serves one client connection through one upstream connection, as the same user.
func (r *recorder) proxy(u *upstream, c net.Conn, cfg *ssh.ServerConfig) error {
	defer c.Close()
	sc, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return fmt.Errorf("handshake with the client: %w", err)
	}
	defer sc.Close()
	go ssh.DiscardRequests(reqs)
	upc, err := ssh.Dial("tcp", u.addr, &ssh.ClientConfig{User: sc.User(), Auth: []ssh.AuthMethod{ssh.PublicKeys(r.upAuth)},
		HostKeyCallback: r.upKnown, Timeout: 30 * time.Second})
	if err != nil {
		return fmt.Errorf("connect to %s: %w", u.addr, err)
	}
	defer upc.Close()
	serveSessions(chans, "fleetsim record", func(ch ssh.Channel, reqs <-chan *ssh.Request) {
		defer ch.Close()
		if err := u.session(upc, sc.User(), ch, reqs); err != nil {
			fmt.Fprintf(os.Stderr, "fleetsim record: %s: %v\n", u.name, err)
		}
	})
	return nil
}

// session forwards one exec (recording it) or the sftp subsystem (counting its bytes only).
func (u *upstream) session(upc *ssh.Client, user string, ch ssh.Channel, reqs <-chan *ssh.Request) error {
	for req := range reqs {
		if req.Type != "exec" && req.Type != "subsystem" {
			req.Reply(req.Type == "env", nil)
			continue
		}
		var p struct{ Value string }
		if err := ssh.Unmarshal(req.Payload, &p); err != nil {
			req.Reply(false, nil)
			continue
		}
		sess, err := upc.NewSession()
		if err != nil {
			req.Reply(false, nil)
			return fmt.Errorf("open upstream session: %w", err)
		}
		defer sess.Close()
		req.Reply(true, nil)
		go ssh.DiscardRequests(reqs)
		if req.Type == "subsystem" {
			return u.pipeSubsystem(sess, p.Value, ch)
		}
		var stdout, stderr bytes.Buffer
		stdin := &countingReader{r: ch}
		sess.Stdin, sess.Stdout, sess.Stderr = stdin, io.MultiWriter(ch, &stdout), io.MultiWriter(ch.Stderr(), &stderr)
		start := time.Now()
		err = sess.Run(p.Value)
		d := time.Since(start)
		code := 0
		var ee *ssh.ExitError
		switch {
		case errors.As(err, &ee):
			code = ee.ExitStatus()
		case err != nil:
			return fmt.Errorf("run %q upstream: %w", shorten(p.Value, 100), err)
		}
		ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(code)}))
		if unwrapShell(p.Value) == "sh -s" {
			return nil // a script on stdin (the peer probes): the network model answers it, never the recording
		}
		u.mu.Lock()
		u.exchanges = append(u.exchanges, Exchange{User: user, Cmd: p.Value, Stdout: stdout.String(), Stderr: stderr.String(),
			Exit: code, StdinBytes: stdin.n, DurationMS: float64(d.Microseconds()) / 1000})
		u.mu.Unlock()
		return nil
	}
	return nil
}

func (u *upstream) pipeSubsystem(sess *ssh.Session, name string, ch ssh.Channel) error {
	in, err := sess.StdinPipe()
	if err != nil {
		return err
	}
	out, err := sess.StdoutPipe()
	if err != nil {
		return err
	}
	if err := sess.RequestSubsystem(name); err != nil {
		return fmt.Errorf("start upstream %s: %w", name, err)
	}
	go func() {
		io.Copy(ch, out)
		ch.CloseWrite()
	}()
	n, _ := io.Copy(in, ch)
	in.Close()
	u.mu.Lock()
	u.sftpBytes += n
	u.mu.Unlock()
	return nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (r *recorder) close() {
	r.closeOne.Do(func() {
		for _, u := range r.up {
			u.ln.Close()
		}
	})
	r.wg.Wait()
}

// recording templates what the proxies saw: every host's identity, read from its facts, becomes
// placeholders. A host whose facts were never gathered is an error.
func (r *recorder) recording(source string) (*Recording, error) {
	cl := map[string]any{}
	for k, v := range r.inv.Cluster {
		cl[k] = v
	}
	rec := &Recording{Note: simulationNote, Recorded: time.Now().UTC().Truncate(time.Second), Source: source, Cluster: cl}
	if a, _ := cl["artifacts"].(string); a != "" {
		if b, err := os.ReadFile(filepath.Join(a, "runtime", "VERSIONS")); err == nil {
			rec.RuntimeVersions = string(b)
		}
	}
	delete(cl, "artifacts") // a path on the recording machine; serve names its own
	var ids []identity
	for _, u := range r.up {
		var id identity
		found := false
		for _, e := range u.exchanges {
			if id, found = factsIdentity(e.Stdout); found {
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("no facts were gathered from %s through the proxy: nothing to replay", u.name)
		}
		id.Name, id.IP = u.name, u.nodeIP
		ids = append(ids, id)
		rec.Hosts = append(rec.Hosts, RecordedHost{Role: u.role, Exchanges: u.exchanges})
		if u.sftpBytes > 0 {
			fmt.Fprintf(os.Stderr, "fleetsim record: %s: %d bytes over SFTP (forwarded, not recorded)\n", u.name, u.sftpBytes)
		}
	}
	template(rec.Hosts, ids)
	return rec, nil
}
