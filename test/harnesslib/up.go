package harnesslib

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/kubeforge/kubeforge/internal/atomicfile"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
)

// Up starts the nodes o asks for (or reuses the ones a previous Up made with the same options), waits until
// each answers SSH as root and as kube, and writes the key pair, known_hosts, inventory.yaml and harness.json
// into o.Dir. It returns what it made.
func Up(ctx context.Context, o Options) (*Cluster, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("check options: %w", err)
	}
	log := o.Logger
	c, err := plan(o)
	if err != nil {
		return nil, err
	}
	if err := CheckDocker(ctx); err != nil {
		return nil, err
	}
	variants := map[string]string{}
	for i, n := range c.Nodes {
		v, ok := variants[n.Image]
		if !ok {
			out, err := docker(ctx, "image", "inspect", "--format", `{{index .Config.Labels "kubeforge.variant"}}`, n.Image)
			if err != nil {
				return nil, fmt.Errorf("find node image %s (build it: bash test/scripts/node-image.sh): %w", n.Image, err)
			}
			v = strings.TrimSpace(out)
			variants[n.Image] = v
		}
		c.Nodes[i].Variant = v
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create dir %s: %w", c.Dir, err)
	}
	if old, err := Load(c.Dir); err == nil {
		if err := compatible(old, c); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	start := time.Now()
	pub, err := ensureKey(c.KeyFile)
	if err != nil {
		return nil, err
	}
	for i := range c.Networks {
		if err := ensureNetwork(ctx, c, &c.Networks[i]); err != nil {
			return nil, err
		}
	}
	// Save what we are about to make first, so that `down` finds it even if Up fails half-way.
	if err := saveState(c); err != nil {
		return nil, err
	}
	if c.Routed() {
		if err := ensureForwarding(ctx, c); err != nil {
			return nil, err
		}
	}

	keys := make([][]HostKey, len(c.Nodes))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, n := range c.Nodes {
		g.Go(func() error {
			if err := ensureNode(gctx, c, n, pub); err != nil {
				return fmt.Errorf("start %s: %w", n.Name, err)
			}
			hk, err := waitSSH(gctx, n, o.BootTimeout)
			if err != nil {
				return fmt.Errorf("wait for ssh on %s (%s): %w", n.Name, n.Address, err)
			}
			keys[i] = hk
			log.Info("node ssh ready", "node", n.Name, "container", n.Container, "address", n.Address, "after", time.Since(start).Round(time.Millisecond))
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	all := map[string][]HostKey{}
	var order []string
	for i, n := range c.Nodes {
		all[n.Address] = keys[i]
		order = append(order, n.Address)
	}
	if err := atomicfile.Write(c.KnownHosts, knownHostsFile(all, order), 0o644); err != nil {
		return nil, err
	}

	// Log in for real, host key checking on, as root and as the sudo user: what kubeforge will do.
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, n := range c.Nodes {
		g.Go(func() error { return checkNode(gctx, c, n, log) })
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}

	inv, err := inventoryYAML(c)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Write(c.Inventory, inv, 0o644); err != nil {
		return nil, err
	}
	if err := atomicfile.Write(filepath.Join(c.Dir, SSHConfig), sshConfig(c), 0o644); err != nil {
		return nil, err
	}
	if err := saveState(c); err != nil {
		return nil, err
	}
	log.Info("harness up", "nodes", len(c.Nodes), "inventory", c.Inventory, "took", time.Since(start).Round(time.Millisecond))
	return c, nil
}

// compatible reports whether an earlier harness in the same dir can be reused for the new plan.
func compatible(old, c *Cluster) error {
	hint := fmt.Sprintf("run `go run ./test/harness down --dir %s` first", c.Dir)
	switch {
	case old.Instance != c.Instance:
		return fmt.Errorf("dir %s holds harness %q, not %q: %s", c.Dir, old.Instance, c.Instance, hint)
	case old.Network != c.Network || old.Subnet != c.Subnet:
		return fmt.Errorf("dir %s holds a harness on %s %s, not %s %s: %s", c.Dir, old.Network, old.Subnet, c.Network, c.Subnet, hint)
	case len(old.Networks) > 0 && !sameNetworks(old.Networks, c.Networks):
		return fmt.Errorf("dir %s holds a harness on %s, not %s: %s", c.Dir, networkList(old.Networks), networkList(c.Networks), hint)
	case len(old.Nodes) != len(c.Nodes):
		return fmt.Errorf("harness %q has %d nodes, %d asked: %s", c.Instance, len(old.Nodes), len(c.Nodes), hint)
	}
	return nil
}

// sameNetworks reports whether two harnesses have the same networks and subnets.
func sameNetworks(a, b []Network) bool {
	return slices.EqualFunc(a, b, func(x, y Network) bool { return x.Name == y.Name && x.Subnet == y.Subnet })
}

// networkList is "NAME SUBNET, ..." for messages.
func networkList(nets []Network) string {
	var s []string
	for _, n := range nets {
		s = append(s, n.Name+" "+n.Subnet)
	}
	return strings.Join(s, ", ")
}

// ensureNetwork creates a harness network, or checks that the existing one is ours and has the subnet, and
// records its bridge. The networks of routed subnets do not masquerade (this machine routes between them as a
// router does, so a node sees its peers' own addresses) and have MTU 1500.
func ensureNetwork(ctx context.Context, c *Cluster, nw *Network) error {
	inst, ok, err := inspectLabel(ctx, "network", nw.Name, LabelInstance)
	if err != nil {
		return fmt.Errorf("inspect network %s: %w", nw.Name, err)
	}
	if ok {
		if inst != c.Instance {
			return fmt.Errorf("network %s exists but was not made by harness %q; remove it or choose --network", nw.Name, c.Instance)
		}
		sub, err := docker(ctx, "network", "inspect", "--format", "{{range .IPAM.Config}}{{.Subnet}} {{end}}", nw.Name)
		if err != nil {
			return fmt.Errorf("inspect network %s: %w", nw.Name, err)
		}
		if !slices.Contains(strings.Fields(sub), nw.Subnet) {
			return fmt.Errorf("network %s has subnet %q, want %s: run down first", nw.Name, sub, nw.Subnet)
		}
	} else {
		args := []string{"network", "create", "--driver", "bridge", "--subnet", nw.Subnet, "--gateway", nw.Gateway}
		if c.Routed() {
			args = append(args, "-o", "com.docker.network.bridge.enable_ip_masquerade=false", "-o", "com.docker.network.driver.mtu=1500")
		}
		args = append(args, labelArgs(c.Instance, "")...)
		if _, err := docker(ctx, append(args, nw.Name)...); err != nil {
			return fmt.Errorf("create network %s %s (another network may use the subnet: pick --subnet): %w", nw.Name, nw.Subnet, err)
		}
	}
	out, err := docker(ctx, "network", "inspect", "--format", `{{.Id}} {{index .Options "com.docker.network.bridge.name"}}`, nw.Name)
	if err != nil {
		return fmt.Errorf("inspect network %s: %w", nw.Name, err)
	}
	id, name, _ := strings.Cut(out, " ")
	switch {
	case name != "" && name != "<no value>":
		nw.Bridge = name
	case len(id) >= 12:
		nw.Bridge = "br-" + id[:12] // Docker's name for a user-defined bridge
	default:
		return fmt.Errorf("find the bridge of network %s: docker says %q", nw.Name, out)
	}
	return nil
}

// ensureNode runs the node's container (or starts the stopped one), authorises the key and sets the pods'
// resolv.conf.
func ensureNode(ctx context.Context, c *Cluster, n Node, pub string) error {
	inst, ok, err := inspectLabel(ctx, "container", n.Container, LabelInstance)
	if err != nil {
		return err
	}
	switch {
	case ok && inst != c.Instance:
		return fmt.Errorf("container %s exists but was not made by harness %q; remove it or use another --name-prefix", n.Container, c.Instance)
	case ok:
		running, err := docker(ctx, "container", "inspect", "--format", "{{.State.Running}}", n.Container)
		if err != nil {
			return err
		}
		if running != "true" {
			if _, err := docker(ctx, "start", n.Container); err != nil {
				return err
			}
		}
	default:
		for _, v := range n.Volumes {
			if _, err := docker(ctx, append(append([]string{"volume", "create"}, labelArgs(c.Instance, n.Name)...), v)...); err != nil {
				return err
			}
		}
		args := []string{"run", "-d", "--name", n.Container, "--hostname", n.Name,
			"--network", n.Network, "--ip", n.Address,
			"--privileged", "--cgroupns=private",
			"--tmpfs", "/run", "--tmpfs", "/run/lock",
			"-v", n.Volumes[0] + ":/var/lib/containerd",
			"-v", n.Volumes[1] + ":/var/lib/kubelet",
		}
		args = append(args, labelArgs(c.Instance, n.Name)...)
		if _, err := docker(ctx, append(args, n.Image)...); err != nil {
			return err
		}
	}
	// The same key for root and for kube; kube has passwordless sudo (baked into the image).
	script := `set -e
umask 077
mkdir -p /root/.ssh /home/kube/.ssh
cat > /root/.ssh/authorized_keys
cp /root/.ssh/authorized_keys /home/kube/.ssh/authorized_keys
chown -R kube:kube /home/kube/.ssh
umask 022
mkdir -p /etc/kubeforge
printf '# kubeforge harness: DNS for pods (the harness has no upstream DNS)\nnameserver %s\n' "$1" > /etc/kubeforge/resolv.conf
if [ "$2" = resolved ]; then
  # As on Ubuntu: the node resolves through the stub; resolved's upstream is the harness gateway.
  mkdir -p /etc/systemd/resolved.conf.d
  printf '[Resolve]\nDNS=%s\n' "$1" > /etc/systemd/resolved.conf.d/harness.conf
  # systemd may still be booting: wait for resolved, then restart it to read the upstream.
  for i in $(seq 60); do systemctl is-active -q systemd-resolved 2>/dev/null && break; sleep 0.5; done
  systemctl restart systemd-resolved
  printf 'nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n' > /etc/resolv.conf
fi`
	if _, err := dockerIn(ctx, strings.NewReader(pub+"\n"), "exec", "-i", n.Container, "sh", "-c", script, "sh", n.Gateway, n.Variant); err != nil {
		return fmt.Errorf("authorise key: %w", err)
	}
	return nil
}

// waitSSH waits until sshd on n answers ssh-keyscan, and returns the host keys after checking them against the
// keys in the node's /etc/ssh (read out of band, over docker exec).
func waitSSH(ctx context.Context, n Node, timeout time.Duration) ([]HostKey, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	for {
		out, err := exec.CommandContext(ctx, "ssh-keyscan", "-T", "2", "-t", "ed25519,ecdsa,rsa", n.Address).Output()
		scanned := parseHostKeys(string(out), true)
		if err == nil && len(scanned) > 0 {
			files, err := docker(ctx, "exec", n.Container, "sh", "-c", "cat /etc/ssh/ssh_host_*_key.pub")
			if err != nil {
				return nil, fmt.Errorf("read host keys: %w", err)
			}
			own := parseHostKeys(files, false)
			for _, k := range scanned {
				if !slices.Contains(own, k) {
					return nil, fmt.Errorf("host key %s of %s is not one of the node's own keys", k.Type, n.Address)
				}
			}
			return scanned, nil
		}
		if err != nil {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no ssh host key after %s (last: %s): %w", timeout, last, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// checkNode logs in as root and as kube with host key checking on, and checks systemd, and containerd on the
// images that have it (a bare host has none: kubeforge installs it).
func checkNode(ctx context.Context, c *Cluster, n Node, log interface{ Warn(string, ...any) }) error {
	if _, err := c.SSH(ctx, n, "kube", "sudo -n true", nil); err != nil {
		return fmt.Errorf("check sudo as kube on %s: %w", n.Name, err)
	}
	state, _ := c.SSH(ctx, n, "root", "timeout 60 systemctl is-system-running --wait", nil)
	if state != "running" {
		failed, _ := c.SSH(ctx, n, "root", "systemctl --failed --no-legend --plain | cut -d' ' -f1 | xargs", nil)
		log.Warn("node systemd is not fully running", "node", n.Name, "state", state, "failed", failed)
	}
	if c.Routed() {
		// A routed subnet reaches the others only through its gateway, this machine.
		route, err := c.SSH(ctx, n, "root", "ip -4 route show default", nil)
		if err != nil || !strings.Contains(route+" ", "via "+n.Gateway+" ") {
			return fmt.Errorf("check the default route of %s: want via %s, have %q (%v)", n.Name, n.Gateway, route, err)
		}
	}
	if n.Variant != "containerd" {
		return nil
	}
	if _, err := c.SSH(ctx, n, "root", "systemctl is-active containerd", nil); err != nil {
		return fmt.Errorf("check containerd on %s: %w", n.Name, err)
	}
	return nil
}

// SSHError is a failed command run over the ssh CLI.
type SSHError struct {
	Node, User, Command string
	ExitCode            int
	Stderr              string
}

func (e *SSHError) Error() string {
	return fmt.Sprintf("ssh %s@%s %q: exit %d: %s", e.User, e.Node, e.Command, e.ExitCode, e.Stderr)
}

// SSHArgs are the ssh CLI arguments to reach n as user: the harness key, its known_hosts, host key checking on.
func (c *Cluster) SSHArgs(n Node, user string) []string {
	return []string{
		"-i", c.KeyFile, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
		"-o", "UserKnownHostsFile=" + c.KnownHosts, "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
		"-o", "LogLevel=ERROR", user + "@" + n.Address,
	}
}

// SSH runs command on n as user with the ssh CLI (host key checking on) and returns its trimmed stdout.
func (c *Cluster) SSH(ctx context.Context, n Node, user, command string, stdin io.Reader) (string, error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, "ssh", append(c.SSHArgs(n, user), command)...)
	cmd.Stdin = stdin
	cmd.Stdout = &out
	cmd.Stderr = &errb
	if err := cmd.Run(); err != nil {
		code := -1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		return strings.TrimSpace(out.String()), &SSHError{Node: n.Name, User: user, Command: command, ExitCode: code, Stderr: shortErr(errb.Bytes())}
	}
	return strings.TrimSpace(out.String()), nil
}

// Node returns the node named name, or false.
func (c *Cluster) Node(name string) (Node, bool) {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

// NodeStatus is one line of Status.
type NodeStatus struct {
	Container string
	Node      string
	Address   string
	State     string // docker's state: running, exited, ...
}

// Status lists the containers of the harness instance whose state is in dir (or, without state, of the
// instance named prefix).
func Status(ctx context.Context, dir, prefix string) (*Cluster, []NodeStatus, error) {
	c, inst, err := instanceOf(dir, prefix)
	if err != nil {
		return nil, nil, err
	}
	if err := CheckDocker(ctx); err != nil {
		return nil, nil, err
	}
	out, err := docker(ctx, append(append([]string{"ps", "-a"}, instanceFilter(inst)...),
		"--format", `{{.Names}}	{{.Label "`+LabelNode+`"}}	{{.State}}`)...)
	if err != nil {
		return nil, nil, fmt.Errorf("list containers: %w", err)
	}
	var st []NodeStatus
	for _, l := range lines(out) {
		f := strings.Split(l, "\t")
		if len(f) < 3 {
			continue
		}
		s := NodeStatus{Container: f[0], Node: f[1], State: f[2]}
		if c != nil {
			if n, ok := c.Node(s.Node); ok {
				s.Address = n.Address
			}
		}
		st = append(st, s)
	}
	slices.SortFunc(st, func(a, b NodeStatus) int { return nodeIndex(a.Node) - nodeIndex(b.Node) })
	return c, st, nil
}

func nodeIndex(name string) int {
	i, _ := strconv.Atoi(strings.TrimPrefix(name, "node"))
	return i
}

// instanceOf finds the harness instance: from dir's state, else from prefix.
func instanceOf(dir, prefix string) (*Cluster, string, error) {
	c, err := Load(dir)
	switch {
	case err == nil:
		if prefix != "" && prefix != c.Instance {
			return nil, "", fmt.Errorf("dir %s holds harness %q, not %q", dir, c.Instance, prefix)
		}
		return c, c.Instance, nil
	case errors.Is(err, fs.ErrNotExist):
		if prefix == "" {
			prefix = DefaultNamePrefix
		}
		if !prefixRE.MatchString(prefix) {
			return nil, "", fmt.Errorf("name prefix %q: want lower-case letters, digits and '-'", prefix)
		}
		return nil, prefix, nil
	default:
		return nil, "", err
	}
}

// Down removes every container, volume and network labelled with the harness instance whose state is in dir
// (without state: the default instance, kf), and the files Up wrote into dir.
func Down(ctx context.Context, dir string) error { return DownInstance(ctx, dir, "") }

// DownInstance is Down for the instance named prefix when dir holds no state ("" means the default); when dir
// holds state for another instance it refuses.
func DownInstance(ctx context.Context, dir, prefix string) error {
	c, inst, err := instanceOf(dir, prefix)
	if err != nil {
		return err
	}
	if err := CheckDocker(ctx); err != nil {
		return err
	}
	f := instanceFilter(inst)
	ids, err := docker(ctx, append([]string{"ps", "-aq", "--no-trunc"}, f...)...)
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	if ids := lines(ids); len(ids) > 0 {
		thawFrozen(ids)
		// A loaded machine sometimes misses a container's exit event ("did not
		// receive an exit event"): the kill has happened; ask again.
		for attempt := 1; ; attempt++ {
			_, err := docker(ctx, append([]string{"rm", "-f", "-v"}, ids...)...)
			if err == nil {
				break
			}
			if attempt == 4 || ctx.Err() != nil {
				return fmt.Errorf("remove containers: %w", err)
			}
			time.Sleep(time.Duration(attempt) * 2 * time.Second)
			left, lerr := docker(ctx, append([]string{"ps", "-aq"}, f...)...)
			if lerr != nil {
				return fmt.Errorf("list containers: %w", lerr)
			}
			if ids = lines(left); len(ids) == 0 {
				break
			}
		}
	}
	vols, err := docker(ctx, append([]string{"volume", "ls", "-q"}, f...)...)
	if err != nil {
		return fmt.Errorf("list volumes: %w", err)
	}
	if vols := lines(vols); len(vols) > 0 {
		if _, err := docker(ctx, append([]string{"volume", "rm", "-f"}, vols...)...); err != nil {
			return fmt.Errorf("remove volumes: %w", err)
		}
	}
	// The forwarding rules of routed subnets. A harness on one network has none: without iptables (or root)
	// there is nothing to remove.
	if _, err := removeForwarding(ctx, inst); err != nil && c != nil && c.Routed() {
		return err
	}
	nets, err := docker(ctx, append([]string{"network", "ls", "-q"}, f...)...)
	if err != nil {
		return fmt.Errorf("list networks: %w", err)
	}
	if nets := lines(nets); len(nets) > 0 {
		if _, err := docker(ctx, append([]string{"network", "rm"}, nets...)...); err != nil {
			return fmt.Errorf("remove networks: %w", err)
		}
	}
	for _, name := range []string{InventoryFile, KnownHosts, SSHConfig, StateFile, KeyFile, KeyFile + ".pub"} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", name, err)
		}
	}
	return nil
}

// Leftovers lists the containers, volumes and networks still labelled with the harness instance prefix, and
// its forwarding rules (when iptables can list them).
func Leftovers(ctx context.Context, prefix string) ([]string, error) {
	var out []string
	for _, kind := range [][]string{{"ps", "-a", "--format", "container {{.Names}}"}, {"volume", "ls", "--format", "volume {{.Name}}"}, {"network", "ls", "--format", "network {{.Name}}"}} {
		args := append(append([]string{}, kind[:len(kind)-2]...), instanceFilter(prefix)...)
		s, err := docker(ctx, append(args, kind[len(kind)-2:]...)...)
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", kind[0], err)
		}
		out = append(out, lines(s)...)
	}
	if rules, err := iptables(ctx, "-S", forwardChain); err == nil {
		for _, r := range parseForwardRules(rules, prefix) {
			out = append(out, fmt.Sprintf("iptables %s -i %s -o %s ACCEPT", forwardChain, r.In, r.Out))
		}
	}
	return out, nil
}

// thawFrozen thaws cgroup v1 freezer groups left FROZEN inside the nodes (a
// pod container whose creation was cut short): their tasks cannot die, so
// the node container could not be killed. Best effort; cgroup v2 has none.
func thawFrozen(ids []string) {
	for _, id := range ids {
		root := filepath.Join("/sys/fs/cgroup/freezer/docker", id)
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "freezer.state" {
				return nil
			}
			if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) != "THAWED" {
				os.WriteFile(p, []byte("THAWED"), 0o644)
			}
			return nil
		})
	}
}

// Reinstall replaces the named nodes of the harness in dir with new hosts at
// the same addresses, as a reinstalled machine: each container and its volumes
// are removed and made again from the image (new host keys, which known_hosts
// then lists); the other nodes are left running as they are.
func Reinstall(ctx context.Context, dir string, names []string, log *slog.Logger) (*Cluster, error) {
	c, err := Load(dir)
	if err != nil {
		return nil, err
	}
	cps := 0
	for _, n := range c.Nodes {
		if slices.Contains(n.Roles, "control-plane") {
			cps++
		}
	}
	for _, name := range names {
		n, ok := c.Node(name)
		if !ok {
			return nil, fmt.Errorf("reinstall: no node %s in %s", name, dir)
		}
		if _, err := docker(ctx, "rm", "-f", "-v", n.Container); err != nil {
			return nil, fmt.Errorf("reinstall %s: %w", name, err)
		}
		for _, v := range n.Volumes {
			if _, err := docker(ctx, "volume", "rm", "-f", v); err != nil {
				return nil, fmt.Errorf("reinstall %s: %w", name, err)
			}
		}
	}
	images := map[string]string{}
	for _, n := range c.Nodes {
		if n.Image != "" && n.Image != c.Image {
			images[n.Name] = n.Image
		}
	}
	network := c.Network
	if c.Routed() {
		network = strings.TrimSuffix(network, "-1") // Up names the routed networks NETWORK-1, NETWORK-2, ...
	}
	return Up(ctx, Options{Nodes: len(c.Nodes), ControlPlanes: cps, Dir: c.Dir, Artifacts: c.Artifacts, NamePrefix: c.Instance,
		User: c.User, Network: network, Subnet: c.Subnet, Subnets: max(len(c.Networks), 1), Image: c.Image, NodeImages: images, Logger: log})
}
