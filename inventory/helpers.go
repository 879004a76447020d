package inventory

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	netutils "k8s.io/utils/net"
)

// EffectiveSSH returns the SSH settings used to reach h: the inventory-wide
// settings, overridden by the non-zero fields of h.SSH, then by h.User and
// h.Port. Lists (identity files, known_hosts files) and the bastion are
// replaced, not merged. The result shares no slice or pointer with inv.
func (inv *Inventory) EffectiveSSH(h *Host) SSH {
	out := copySSH(inv.SSH)
	if o := h.SSH; o != nil {
		if o.User != "" {
			out.User = o.User
		}
		if o.Port != 0 {
			out.Port = o.Port
		}
		if len(o.IdentityFiles) > 0 {
			out.IdentityFiles = append([]string(nil), o.IdentityFiles...)
		}
		if o.UseAgent != nil {
			v := *o.UseAgent
			out.UseAgent = &v
		}
		if o.PasswordEnv != "" {
			out.PasswordEnv = o.PasswordEnv
		}
		if o.PasswordPrompt {
			out.PasswordPrompt = true
		}
		if o.PassphraseEnv != "" {
			out.PassphraseEnv = o.PassphraseEnv
		}
		if len(o.KnownHosts) > 0 {
			out.KnownHosts = append([]string(nil), o.KnownHosts...)
		}
		if o.ConnectTimeout.Duration != 0 {
			out.ConnectTimeout = o.ConnectTimeout
		}
		if o.Bastion != nil {
			out.Bastion = copyBastion(o.Bastion)
		}
	}
	if h.User != "" {
		out.User = h.User
	}
	if h.Port != 0 {
		out.Port = h.Port
	}
	return out
}

func copySSH(s SSH) SSH {
	s.IdentityFiles = append([]string(nil), s.IdentityFiles...)
	s.KnownHosts = append([]string(nil), s.KnownHosts...)
	if s.UseAgent != nil {
		v := *s.UseAgent
		s.UseAgent = &v
	}
	s.Bastion = copyBastion(s.Bastion)
	return s
}

func copyBastion(b *Bastion) *Bastion {
	if b == nil {
		return nil
	}
	c := *b
	c.IdentityFiles = append([]string(nil), b.IdentityFiles...)
	if b.UseAgent != nil {
		v := *b.UseAgent
		c.UseAgent = &v
	}
	return &c
}

// ConfiguredEndpoint returns the host and port of cluster.controlPlaneEndpoint
// (port 6443 when it names none); ok is false when it is not set.
func (inv *Inventory) ConfiguredEndpoint() (host string, port int, ok bool) {
	ep := inv.Cluster.ControlPlaneEndpoint
	if ep == "" {
		return "", DefaultAPIServerPort, false
	}
	if h, p, err := splitHostPort(ep); err == nil {
		if p == 0 {
			p = DefaultAPIServerPort
		}
		return h, p, true
	}
	return ep, DefaultAPIServerPort, true
}

// Endpoint returns the host and port clients use to reach the API server:
// cluster.controlPlaneEndpoint when set (port 6443 when it has none), else the
// node IP of seed and port 6443. seed is the control plane the run decided
// the cluster's API is on (observed on the hosts, or the one a new cluster is
// initialised on); the inventory does not hold it. host is empty when there
// is neither an endpoint nor a seed.
func (inv *Inventory) Endpoint(seed *Host) (host string, port int) {
	if h, p, ok := inv.ConfiguredEndpoint(); ok {
		return h, p
	}
	if seed != nil {
		return seed.NodeIP(), DefaultAPIServerPort
	}
	return "", DefaultAPIServerPort
}

// ServerURL is the API server URL of the cluster with seed as in Endpoint,
// "https://host:port", with IPv6 addresses in brackets.
func (inv *Inventory) ServerURL(seed *Host) string {
	h, p := inv.Endpoint(seed)
	return "https://" + net.JoinHostPort(h, strconv.Itoa(p))
}

// ServiceIP returns the n-th address of the (first) service subnet: 1 is the
// "kubernetes" service, 10 the cluster DNS service.
func (inv *Inventory) ServiceIP(n int) (net.IP, error) {
	subnet := inv.Cluster.ServiceSubnet
	if subnet == "" {
		subnet = DefaultServiceSubnet
	}
	first := strings.TrimSpace(strings.Split(subnet, ",")[0])
	_, ipnet, err := netutils.ParseCIDRSloppy(first)
	if err != nil {
		return nil, fmt.Errorf("parse service subnet: %w", err)
	}
	if n < 0 {
		return nil, fmt.Errorf("service IP index %d is negative", n)
	}
	ip, err := netutils.GetIndexedIP(ipnet, n)
	if err != nil {
		return nil, fmt.Errorf("service IP index %d is outside the service subnet %s", n, ipnet)
	}
	return ip, nil
}

// StateDir is the default state directory: "<inventory dir>/<cluster name>.kubeforge".
func (inv *Inventory) StateDir() string {
	name := inv.Cluster.Name
	if name == "" {
		name = DefaultClusterName
	}
	return filepath.Join(inv.Dir(), name+".kubeforge")
}

// splitHostPort splits "host", "host:port", "[v6]:port" or a bare IPv6
// address. port is 0 when absent.
func splitHostPort(s string) (string, int, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.String(), 0, nil
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		return s[1 : len(s)-1], 0, nil
	}
	if !strings.Contains(s, ":") {
		return s, 0, nil
	}
	h, ps, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.Atoi(ps)
	if err != nil || p < 1 || p > 65535 {
		return "", 0, fmt.Errorf("port %q must be a number between 1 and 65535", ps)
	}
	return h, p, nil
}

// Active returns inv without the hosts marked `remove: true`: the cluster as it
// should be. The copy shares the hosts and settings with inv.
func (inv *Inventory) Active() *Inventory {
	out := *inv
	out.Hosts = nil
	for _, h := range inv.Hosts {
		if !h.Remove {
			out.Hosts = append(out.Hosts, h)
		}
	}
	return &out
}

// Leaving returns the hosts marked `remove: true`, in file order.
func (inv *Inventory) Leaving() []*Host {
	var out []*Host
	for _, h := range inv.Hosts {
		if h.Remove {
			out = append(out, h)
		}
	}
	return out
}

// APIProxyHost is the loopback address of the node-local API proxy on the
// workers (docs/ha.md); on a control plane the same address reaches its own
// API server.
const APIProxyHost = "127.0.0.1"

// UsesAPIProxy reports whether nodes reach the API through the node-local
// proxy: several control planes and no controlPlaneEndpoint. With one
// control plane there is nothing to fail over to; with an endpoint, the
// endpoint balances.
func (inv *Inventory) UsesAPIProxy() bool {
	return inv.Cluster.ControlPlaneEndpoint == "" && len(inv.ControlPlanes()) > 1
}

// NodeServerURL is the API server URL of the workers' kubelets and of
// kube-proxy: https://127.0.0.1:6443 with the node-local proxy, else the
// cluster's endpoint: the controlPlaneEndpoint, or the address of the one
// control plane (with one, it is the seed whatever was observed).
func (inv *Inventory) NodeServerURL() string {
	if inv.UsesAPIProxy() {
		return "https://" + net.JoinHostPort(APIProxyHost, strconv.Itoa(DefaultAPIServerPort))
	}
	var only *Host
	if cps := inv.ControlPlanes(); len(cps) > 0 {
		only = cps[0]
	}
	return inv.ServerURL(only)
}
