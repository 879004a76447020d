package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	certutil "k8s.io/client-go/util/cert"
	netutils "k8s.io/utils/net"

	"github.com/kubeforge/kubeforge/inventory"
)

// Names of the certificate authorities, as kubeadm names them.
const (
	CAName           = "ca"
	EtcdCAName       = "etcd-ca"
	FrontProxyCAName = "front-proxy-ca"
)

// Kubeadm's defaults that kubeforge follows.
const (
	// KubernetesDir is where a node keeps its kubeconfigs; PKIDir its certificates.
	KubernetesDir = "/etc/kubernetes"
	PKIDir        = "/etc/kubernetes/pki"
	// BootstrapClusterName is the cluster entry of bootstrap-kubelet.conf, as
	// kubeadm's token discovery names it (the other kubeconfigs use the
	// inventory's cluster name, as kubeadm uses clusterName).
	BootstrapClusterName = "kubernetes"
	// APIServerPort is the port the API server listens on.
	APIServerPort = inventory.DefaultAPIServerPort
	// DefaultServiceSubnet and DefaultDNSDomain apply when the inventory leaves them empty.
	DefaultServiceSubnet = inventory.DefaultServiceSubnet
	DefaultDNSDomain     = inventory.DefaultDNSDomain
	// ClusterAdminsGroup is the Organization of admin.conf's client certificate.
	ClusterAdminsGroup = "kubeadm:cluster-admins"
	// SystemMastersGroup is the Organization of super-admin.conf's client certificate.
	SystemMastersGroup = "system:masters"
	// NodesGroup is the Organization of kubelet client certificates.
	NodesGroup = "system:nodes"
	// NodeBootstrapTokenAuthGroup is the extra group of kubeadm's default node bootstrap tokens.
	NodeBootstrapTokenAuthGroup = "system:bootstrappers:kubeadm:default-node-token"
	// TokenUser is the kubeconfig user name kubeadm gives a bootstrap token.
	TokenUser = "tls-bootstrap-token-user"
)

// caSpec declares a certificate authority.
type caSpec struct {
	Name     string // "ca", "etcd-ca", "front-proxy-ca"
	BaseName string // path under the pki directory without extension
	CN       string
}

// caSpecs lists the CAs in the order they are made.
var caSpecs = []caSpec{
	{Name: CAName, BaseName: "ca", CN: "kubernetes"},
	{Name: EtcdCAName, BaseName: "etcd/ca", CN: "etcd-ca"},
	{Name: FrontProxyCAName, BaseName: "front-proxy-ca", CN: "front-proxy-ca"},
}

// leafConfig is what a leaf certificate must contain.
type leafConfig struct {
	CN       string
	Org      []string
	Usages   []x509.ExtKeyUsage
	AltNames certutil.AltNames
}

// leafSpec declares one leaf certificate, as kubeadm's cert list does: a name,
// the CA that signs it, where it lives, and how its content follows from the
// inventory. Kubeconfig client certificates are leaves too (Kubeconfig != "").
type leafSpec struct {
	Name       string // kubeadm's name: "apiserver", "etcd-server", "admin.conf"
	BaseName   string // path under the host's pki directory, without extension
	CAName     string
	Kubeconfig string // file name under /etc/kubernetes for kubeconfig client certs
	// Hosts reports whether host h gets this leaf (h is nil for workstation
	// leaves); seed is the control plane the cluster's API endpoint is on
	// without a controlPlaneEndpoint (kubeadm's init node), as the caller
	// decided it.
	Hosts  func(h, seed *inventory.Host) bool
	Config func(inv *inventory.Inventory, h *inventory.Host) (leafConfig, error)
}

func onControlPlanes(h, _ *inventory.Host) bool {
	return h != nil && h.IsControlPlane()
}

func onSeed(h, seed *inventory.Host) bool {
	return h != nil && seed != nil && h.IsControlPlane() && h.Name == seed.Name
}

func onWorkstation(h, _ *inventory.Host) bool { return h == nil }

func fixed(cn string, org []string, usages ...x509.ExtKeyUsage) func(*inventory.Inventory, *inventory.Host) (leafConfig, error) {
	return func(*inventory.Inventory, *inventory.Host) (leafConfig, error) {
		return leafConfig{CN: cn, Org: org, Usages: usages}, nil
	}
}

var (
	serverAuth = x509.ExtKeyUsageServerAuth
	clientAuth = x509.ExtKeyUsageClientAuth
)

// leafSpecs is kubeadm 1.37's certificate list (phases/certs/certlist.go) plus the
// client certificates of the kubeconfigs (phases/kubeconfig). Every control plane
// gets its own leaves, as after kubeadm init/join; the workstation gets its own
// admin.conf and super-admin.conf.
var leafSpecs = []leafSpec{
	{Name: "apiserver", BaseName: "apiserver", CAName: CAName, Hosts: onControlPlanes, Config: apiserverConfig},
	{Name: "apiserver-kubelet-client", BaseName: "apiserver-kubelet-client", CAName: CAName, Hosts: onControlPlanes,
		Config: fixed("kube-apiserver-kubelet-client", nil, clientAuth)},
	{Name: "front-proxy-client", BaseName: "front-proxy-client", CAName: FrontProxyCAName, Hosts: onControlPlanes,
		Config: fixed("front-proxy-client", nil, clientAuth)},
	{Name: "etcd-server", BaseName: "etcd/server", CAName: EtcdCAName, Hosts: onControlPlanes, Config: etcdConfig},
	{Name: "etcd-peer", BaseName: "etcd/peer", CAName: EtcdCAName, Hosts: onControlPlanes, Config: etcdConfig},
	{Name: "etcd-healthcheck-client", BaseName: "etcd/healthcheck-client", CAName: EtcdCAName, Hosts: onControlPlanes,
		Config: fixed("kube-etcd-healthcheck-client", nil, clientAuth)},
	{Name: "apiserver-etcd-client", BaseName: "apiserver-etcd-client", CAName: EtcdCAName, Hosts: onControlPlanes,
		Config: fixed("kube-apiserver-etcd-client", nil, clientAuth)},

	{Name: "admin.conf", BaseName: "kubeconfig/admin", CAName: CAName, Kubeconfig: "admin.conf",
		Hosts:  func(h, _ *inventory.Host) bool { return h == nil || h.IsControlPlane() },
		Config: fixed("kubernetes-admin", []string{ClusterAdminsGroup}, clientAuth)},
	{Name: "super-admin.conf", BaseName: "kubeconfig/super-admin", CAName: CAName, Kubeconfig: "super-admin.conf",
		Hosts: func(h, seed *inventory.Host) bool {
			return onWorkstation(h, seed) || onSeed(h, seed)
		},
		Config: fixed("kubernetes-super-admin", []string{SystemMastersGroup}, clientAuth)},
	{Name: "controller-manager.conf", BaseName: "kubeconfig/controller-manager", CAName: CAName,
		Kubeconfig: "controller-manager.conf", Hosts: onControlPlanes,
		Config: fixed("system:kube-controller-manager", nil, clientAuth)},
	{Name: "scheduler.conf", BaseName: "kubeconfig/scheduler", CAName: CAName, Kubeconfig: "scheduler.conf",
		Hosts: onControlPlanes, Config: fixed("system:kube-scheduler", nil, clientAuth)},
	{Name: "kubelet.conf", BaseName: "kubeconfig/kubelet", CAName: CAName, Kubeconfig: "kubelet.conf",
		Hosts: onControlPlanes,
		Config: func(_ *inventory.Inventory, h *inventory.Host) (leafConfig, error) {
			return leafConfig{CN: "system:node:" + h.Name, Org: []string{NodesGroup}, Usages: []x509.ExtKeyUsage{clientAuth}}, nil
		}},
}

// renewAll are the names `certs renew all` renews: kubeadm's list (kubelet.conf is
// rotated by the kubelet itself, as in kubeadm).
func renewAll(name string) bool { return name != "kubelet.conf" }

func leafSpecByName(name string) (leafSpec, bool) {
	for _, s := range leafSpecs {
		if s.Name == name {
			return s, true
		}
	}
	return leafSpec{}, false
}

// LeafNames returns the names Renew accepts besides "all".
func LeafNames() []string {
	out := make([]string, 0, len(leafSpecs))
	for _, s := range leafSpecs {
		out = append(out, s.Name)
	}
	return out
}

// advertiseIP is the address the API server and etcd of h advertise.
func advertiseIP(h *inventory.Host) (net.IP, error) {
	ip := netutils.ParseIPSloppy(h.NodeIP())
	if ip == nil {
		return nil, fmt.Errorf("host %s: address %q is not an IP address (set internalAddress to the node IP)", h.Name, h.NodeIP())
	}
	return ip, nil
}

// apiserverConfig follows kubeadm's GetAPIServerAltNames.
func apiserverConfig(inv *inventory.Inventory, h *inventory.Host) (leafConfig, error) {
	adv, err := advertiseIP(h)
	if err != nil {
		return leafConfig{}, err
	}
	vip, err := apiServerVirtualIP(inv.Cluster.ServiceSubnet)
	if err != nil {
		return leafConfig{}, err
	}
	domain := inv.Cluster.DNSDomain
	if domain == "" {
		domain = DefaultDNSDomain
	}
	alt := certutil.AltNames{
		DNSNames: []string{h.Name, "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc." + domain},
		IPs:      []net.IP{vip, adv},
	}
	if inv.UsesAPIProxy() {
		// The workers' node-local proxy passes TLS through: clients dial 127.0.0.1.
		alt.IPs = append(alt.IPs, net.ParseIP(inventory.APIProxyHost))
	}
	if host, _, ok := inv.ConfiguredEndpoint(); ok {
		if ip := netutils.ParseIPSloppy(host); ip != nil {
			alt.IPs = append(alt.IPs, ip)
		} else {
			alt.DNSNames = append(alt.DNSNames, host)
		}
	}
	for _, san := range inv.Cluster.CertSANs {
		switch {
		case netutils.ParseIPSloppy(san) != nil:
			alt.IPs = append(alt.IPs, netutils.ParseIPSloppy(san))
		case len(validation.IsDNS1123Subdomain(san)) == 0, len(validation.IsWildcardDNS1123Subdomain(san)) == 0:
			alt.DNSNames = append(alt.DNSNames, san)
		default:
			return leafConfig{}, fmt.Errorf("certSANs entry %q is neither an IP address nor an RFC 1123 DNS name", san)
		}
	}
	return leafConfig{CN: "kube-apiserver", Usages: []x509.ExtKeyUsage{serverAuth}, AltNames: alt}, nil
}

// etcdConfig follows kubeadm's getAltNames for etcd server and peer: CN = node
// name; SANs name, localhost, advertise address, 127.0.0.1, ::1.
func etcdConfig(_ *inventory.Inventory, h *inventory.Host) (leafConfig, error) {
	adv, err := advertiseIP(h)
	if err != nil {
		return leafConfig{}, err
	}
	return leafConfig{
		CN:     h.Name,
		Usages: []x509.ExtKeyUsage{serverAuth, clientAuth},
		AltNames: certutil.AltNames{
			DNSNames: []string{h.Name, "localhost"},
			IPs:      []net.IP{adv, net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		},
	}, nil
}

// apiServerVirtualIP is the first address of the service subnet (the kubernetes
// Service's ClusterIP). With dual-stack subnets the first one counts.
func apiServerVirtualIP(subnet string) (net.IP, error) {
	if subnet == "" {
		subnet = DefaultServiceSubnet
	}
	first := strings.TrimSpace(strings.Split(subnet, ",")[0])
	_, cidr, err := netutils.ParseCIDRSloppy(first)
	if err != nil {
		return nil, fmt.Errorf("parse service subnet %q: %w", subnet, err)
	}
	ip, err := netutils.GetIndexedIP(cidr, 1)
	if err != nil {
		return nil, fmt.Errorf("get first IP of service subnet %q: %w", subnet, err)
	}
	return ip, nil
}

// ServerURL is the cluster's API endpoint (inventory.ServerURL) with seed the
// control plane it is on without a controlPlaneEndpoint, or an error when
// there is neither.
func ServerURL(inv *inventory.Inventory, seed *inventory.Host) (string, error) {
	if h, _ := inv.Endpoint(seed); h == "" {
		return "", errNoEndpoint
	}
	return inv.ServerURL(seed), nil
}

// NodeServerURL is the server of the nodes' kubelets and kube-proxy
// (inventory.NodeServerURL), or an error when the inventory has neither a
// controlPlaneEndpoint nor a control plane.
func NodeServerURL(inv *inventory.Inventory) (string, error) {
	if _, _, ok := inv.ConfiguredEndpoint(); !ok && len(inv.ControlPlanes()) == 0 {
		return "", errNoEndpoint
	}
	return inv.NodeServerURL(), nil
}

var errNoEndpoint = errors.New("get API server endpoint: the inventory has no control-plane host and no controlPlaneEndpoint")

// LocalServerURL is the API server of control plane h: https://<node IP>:6443.
func LocalServerURL(h *inventory.Host) string {
	return "https://" + net.JoinHostPort(h.NodeIP(), strconv.Itoa(APIServerPort))
}
