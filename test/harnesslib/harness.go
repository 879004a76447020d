// Package harnesslib makes and removes kubeforge's test hosts: systemd containers from the kubeforge-node image
// on dedicated docker networks with fixed addresses, reachable over real OpenSSH with a key pair and host keys
// the harness collects, plus a ready kubeforge inventory for them. The nodes share one network, or are spread
// over several subnets that only this machine routes between (a fleet without L2 adjacency). The test/harness
// command and the end-to-end tests use it. It shells out to the docker CLI (and to iptables for routed subnets).
package harnesslib

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Defaults used when Options leaves a field empty.
const (
	DefaultImage = "kubeforge-node:bookworm"
	// ContainerdImage is the node image with Debian's containerd 1.6 preinstalled; ResolvedImage runs
	// systemd-resolved (test/scripts/node-image.sh).
	ContainerdImage   = DefaultImage + "-containerd"
	ResolvedImage     = DefaultImage + "-resolved"
	DefaultNamePrefix = "kf"
	DefaultSubnet     = "172.31.250.0/24"
	DefaultDir        = ".harness"
	DefaultNetwork    = "kubeforge-harness"

	// LabelHarness marks every container, volume and network the harness makes.
	LabelHarness = "kubeforge.harness"
	// LabelInstance holds the name prefix of the harness instance that made an object.
	LabelInstance = "kubeforge.harness.instance"
	// LabelNode holds the node name (node1, node2, ...) on containers and volumes.
	LabelNode = "kubeforge.harness.node"

	// FirstHostOctet is the last octet of node1's address; node i gets FirstHostOctet+i-1.
	FirstHostOctet = 11
	// MaxSubnets bounds Options.Subnets.
	MaxSubnets = 8

	// KubernetesVersion is the version the harness inventory asks for without artifacts; with them, the version
	// their VERSION file names.
	KubernetesVersion = "v1.37.2"
	// PodResolvConf is the resolv.conf on every node that pods can use (kubelet's resolvConf).
	PodResolvConf = "/etc/kubeforge/resolv.conf"
)

// Files the harness writes into its directory.
const (
	StateFile     = "harness.json"
	InventoryFile = "inventory.yaml"
	KnownHosts    = "known_hosts"
	KeyFile       = "id_ed25519"
	SSHConfig     = "ssh_config" // for people: ssh -F DIR/ssh_config node1
)

// Options says what Up makes. Zero values take the defaults above.
type Options struct {
	Nodes         int    // number of nodes (>= 1)
	ControlPlanes int    // the first ControlPlanes nodes are control planes (default 1), the rest workers
	Dir           string // state directory: key pair, known_hosts, inventory.yaml, harness.json
	Artifacts     string // artifacts directory written into the inventory (cluster.artifacts); optional
	NamePrefix    string // containers are PREFIX-node1, ...; also names the instance (labels)
	User          string // SSH user written into the inventory: "root" (default) or "kube" (passwordless sudo)
	Network       string // docker network; default kubeforge-harness for prefix kf, kubeforge-harness-PREFIX otherwise
	Subnet        string // IPv4 subnet of the network (default 172.31.250.0/24); the first one with Subnets > 1
	// Subnets spreads the nodes over this many docker networks (default 1): subnet k is the k-th prefix of
	// Subnet's size from Subnet on (172.31.200.0/24, 172.31.201.0/24, ...), network k is NETWORK-k, and node i
	// joins subnet (i-1) mod Subnets, so control planes and workers land on every subnet. A node's address keeps
	// the last octet FirstHostOctet+i-1 in its subnet. The nodes share no L2 segment: each routes through its own
	// bridge's gateway, this machine, which forwards between exactly these bridges (iptables rules in
	// DOCKER-USER, removed by Down) without masquerading. Needs iptables and the egress fence of prereqs.sh.
	Subnets int
	Image   string // node image (default kubeforge-node:bookworm, a bare host)
	// NodeImages overrides Image per node ("node3" -> "kubeforge-node:bookworm-containerd").
	NodeImages map[string]string
	// BootTimeout bounds waiting for SSH on every node (default 2m).
	BootTimeout time.Duration
	Logger      *slog.Logger
}

// Node is one harness host.
type Node struct {
	Name      string   `json:"name"`              // node1, node2, ...: the inventory host name and the hostname
	Container string   `json:"container"`         // docker container name
	Address   string   `json:"address"`           // fixed address on the node's harness network
	Network   string   `json:"network,omitempty"` // the node's docker network
	Gateway   string   `json:"gateway,omitempty"` // its gateway: this machine's address on that network
	Roles     []string `json:"roles"`             // control-plane or worker
	Volumes   []string `json:"volumes"`           // docker volumes for /var/lib/containerd and /var/lib/kubelet
	Image     string   `json:"image"`             // node image
	// Variant is the image's kubeforge.variant label: bare, containerd (a preinstalled runtime) or
	// resolved (systemd-resolved active); set by Up.
	Variant string `json:"variant,omitempty"`
}

// Network is one docker network of the harness.
type Network struct {
	Name    string `json:"name"`
	Subnet  string `json:"subnet"`
	Gateway string `json:"gateway"`          // .1: this machine's address on the bridge, the nodes' default route
	Bridge  string `json:"bridge,omitempty"` // the bridge's interface name (br-ID), set by Up
}

// Cluster is what Up made; it is saved as DIR/harness.json.
type Cluster struct {
	Dir      string `json:"dir"` // absolute
	Instance string `json:"instance"`
	// Network, Subnet and Gateway are those of the first network (the only one unless Networks has more).
	Network    string    `json:"network"`
	Subnet     string    `json:"subnet"`
	Gateway    string    `json:"gateway"`
	Networks   []Network `json:"networks,omitempty"` // every network, node i on Networks[(i-1) mod len]
	Image      string    `json:"image"`
	User       string    `json:"user"`
	Artifacts  string    `json:"artifacts,omitempty"`
	KeyFile    string    `json:"keyFile"`    // private key, 0600
	KnownHosts string    `json:"knownHosts"` // host keys collected after boot
	Inventory  string    `json:"inventory"`  // kubeforge inventory for the nodes
	Nodes      []Node    `json:"nodes"`
}

var prefixRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,30}$`)

// withDefaults validates o and fills in defaults. It touches nothing.
func (o Options) withDefaults() (Options, error) {
	var errs []error
	if o.NamePrefix == "" {
		o.NamePrefix = DefaultNamePrefix
	}
	if !prefixRE.MatchString(o.NamePrefix) {
		errs = append(errs, fmt.Errorf("name prefix %q: want lower-case letters, digits and '-', at most 31", o.NamePrefix))
	}
	if o.Nodes < 1 {
		errs = append(errs, fmt.Errorf("node count %d: want at least 1", o.Nodes))
	}
	if o.ControlPlanes == 0 {
		o.ControlPlanes = 1
	}
	if o.ControlPlanes < 1 || o.ControlPlanes > o.Nodes && o.Nodes >= 1 {
		errs = append(errs, fmt.Errorf("control planes %d: want 1..%d (the node count)", o.ControlPlanes, o.Nodes))
	}
	if o.Dir == "" {
		o.Dir = DefaultDir
	}
	if o.User == "" {
		o.User = "root"
	}
	if o.User != "root" && o.User != "kube" {
		errs = append(errs, fmt.Errorf("user %q: want root or kube", o.User))
	}
	if o.Network == "" {
		o.Network = DefaultNetwork
		if o.NamePrefix != DefaultNamePrefix {
			o.Network = DefaultNetwork + "-" + o.NamePrefix
		}
	}
	if o.Subnet == "" {
		o.Subnet = DefaultSubnet
	}
	if o.Subnets == 0 {
		o.Subnets = 1
	}
	if o.Subnets < 1 || o.Subnets > MaxSubnets {
		errs = append(errs, fmt.Errorf("subnets %d: want 1..%d", o.Subnets, MaxSubnets))
	} else if o.Subnets > o.Nodes && o.Nodes >= 1 {
		errs = append(errs, fmt.Errorf("subnets %d: want at most one per node (%d nodes)", o.Subnets, o.Nodes))
	}
	if o.Image == "" {
		o.Image = DefaultImage
	}
	for n := range o.NodeImages {
		if i, err := strconv.Atoi(strings.TrimPrefix(n, "node")); err != nil || !strings.HasPrefix(n, "node") || i < 1 || i > o.Nodes {
			errs = append(errs, fmt.Errorf("node image for %q: no such node (node1..node%d)", n, o.Nodes))
		}
	}
	if o.BootTimeout == 0 {
		o.BootTimeout = 2 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if len(errs) == 0 {
		if _, _, err := layout(o); err != nil {
			errs = append(errs, err)
		}
	}
	return o, errors.Join(errs...)
}

// subnets returns n consecutive IPv4 prefixes of first's size, first one first.
func subnets(first string, n int) ([]netip.Prefix, error) {
	p, err := netip.ParsePrefix(first)
	if err != nil {
		return nil, fmt.Errorf("parse subnet %q: %w", first, err)
	}
	if !p.Addr().Is4() {
		return nil, fmt.Errorf("subnet %q: want an IPv4 prefix", first)
	}
	if p.Masked() != p {
		return nil, fmt.Errorf("subnet %q: host bits set (want %s)", first, p.Masked())
	}
	out := []netip.Prefix{p}
	size := uint64(1) << (32 - p.Bits())
	for len(out) < n {
		a := p.Addr().As4()
		next := (uint64(a[0])<<24 | uint64(a[1])<<16 | uint64(a[2])<<8 | uint64(a[3])) + size
		if next > 0xffffffff {
			return nil, fmt.Errorf("subnet %q: no room for %d subnets of its size after it", first, n)
		}
		p = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(next >> 24), byte(next >> 16), byte(next >> 8), byte(next)}), p.Bits())
		out = append(out, p)
	}
	return out, nil
}

// placement is where one node goes: its network (an index into the networks) and its address.
type placement struct {
	Network int
	Address string
}

// layout returns the networks of o (already defaulted) and where each node goes: node i (0-based) joins network
// i mod len(networks) at the address with offset FirstHostOctet+i in that network's subnet.
func layout(o Options) ([]Network, []placement, error) {
	prefixes, err := subnets(o.Subnet, o.Subnets)
	if err != nil {
		return nil, nil, err
	}
	nets := make([]Network, len(prefixes))
	for k, p := range prefixes {
		name := o.Network
		if len(prefixes) > 1 {
			name = fmt.Sprintf("%s-%d", o.Network, k+1)
		}
		nets[k] = Network{Name: name, Subnet: p.String(), Gateway: p.Addr().Next().String()}
	}
	out := make([]placement, 0, o.Nodes)
	for i := 0; i < o.Nodes; i++ {
		k := i % len(prefixes)
		p := prefixes[k]
		a := p.Addr()
		for j := 0; j < FirstHostOctet+i; j++ {
			a = a.Next()
		}
		if !p.Contains(a) || !p.Contains(a.Next()) || i >= 200 { // not past the broadcast address
			return nil, nil, fmt.Errorf("subnet %q: too small for %d nodes", p, o.Nodes)
		}
		out = append(out, placement{Network: k, Address: a.String()})
	}
	return nets, out, nil
}

// plan returns the cluster Up will make for o (already defaulted), without touching anything.
func plan(o Options) (*Cluster, error) {
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("resolve dir %q: %w", o.Dir, err)
	}
	nets, places, err := layout(o)
	if err != nil {
		return nil, err
	}
	art := o.Artifacts
	if art != "" {
		if art, err = filepath.Abs(art); err != nil {
			return nil, fmt.Errorf("resolve artifacts %q: %w", o.Artifacts, err)
		}
	}
	c := &Cluster{
		Dir: dir, Instance: o.NamePrefix, Network: nets[0].Name, Subnet: nets[0].Subnet, Gateway: nets[0].Gateway,
		Networks: nets, Image: o.Image, User: o.User, Artifacts: art,
		KeyFile:    filepath.Join(dir, KeyFile),
		KnownHosts: filepath.Join(dir, KnownHosts),
		Inventory:  filepath.Join(dir, InventoryFile),
	}
	for i, pl := range places {
		name := fmt.Sprintf("node%d", i+1)
		ctr := o.NamePrefix + "-" + name
		role := "worker"
		if i < o.ControlPlanes {
			role = "control-plane"
		}
		img := o.Image
		if v := o.NodeImages[name]; v != "" {
			img = v
		}
		c.Nodes = append(c.Nodes, Node{
			Name: name, Container: ctr, Address: pl.Address, Network: nets[pl.Network].Name, Gateway: nets[pl.Network].Gateway,
			Roles: []string{role}, Volumes: []string{ctr + "-containerd", ctr + "-kubelet"}, Image: img,
		})
	}
	return c, nil
}

// Routed reports whether the nodes are spread over more than one subnet, routed through this machine.
func (c *Cluster) Routed() bool { return len(c.Networks) > 1 }

// shortErr trims docker's output for error messages.
func shortErr(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 2000 {
		s = s[:2000] + "..."
	}
	return s
}
