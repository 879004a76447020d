package inventory

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	pathpkg "path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
	"k8s.io/apimachinery/pkg/api/validate/content"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/version"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
)

// Limits taken from kubeadm's validation (cmd/kubeadm/app/constants).
const (
	// minServiceAddresses: the DNS service takes the tenth address.
	minServiceAddresses = 10
	// maxServiceSubnetBits: the service subnet is at most /12 (IPv4) or /108 (IPv6).
	maxServiceSubnetBits = 20
	minPodAddresses      = 14
	// podNodeMaskMaxDiff: a node's pod range is at most 16 bits longer than the pod subnet's mask.
	podNodeMaskMaxDiff = 16
	defaultNodeMaskV4  = 24
	defaultNodeMaskV6  = 64
)

// SupportedKubernetesVersions describes the Kubernetes versions kubeforge installs.
const SupportedKubernetesVersions = "v1.35.x, v1.36.x and v1.37.x"

// supportedMinors are the Kubernetes minors kubeforge renders files for.
var supportedMinors = []uint{35, 36, 37}

// previewMinors are the next minors, whose pre-releases kubeforge renders
// files for (their kubeadm's pins are known and parity is checked against its
// beta) but installs only when the inventory sets allowPreRelease.
var previewMinors = []uint{38}

// supportedVersion reports whether v is a release (vMAJOR.MINOR.PATCH, no
// pre-release) of a supported minor or, when allowPreRelease is set, a
// pre-release (v1.38.0-beta.0) of a supported or preview minor.
func supportedVersion(v string, allowPreRelease bool) bool {
	if !strings.HasPrefix(v, "v") {
		return false
	}
	ver, err := version.ParseSemantic(v)
	if err != nil || ver.BuildMetadata() != "" || ver.Major() != 1 {
		return false
	}
	if ver.PreRelease() == "" {
		return slices.Contains(supportedMinors, ver.Minor())
	}
	return allowPreRelease && (slices.Contains(supportedMinors, ver.Minor()) || slices.Contains(previewMinors, ver.Minor()))
}

// imageRepositoryRe is a registry host (with optional port) and path, as in image references.
var imageRepositoryRe = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*$`)

// Validate checks an inventory that already has its defaults (see SetDefaults)
// and returns a *ValidationError listing every problem when at least one is
// not a warning. Warnings are stored in inv.Warnings. An inventory built in
// code has no lines in its problems; Load gives them.
func (inv *Inventory) Validate() error {
	return newChecker(inv, nil).finish(inv)
}

// checker collects problems while validating.
type checker struct {
	inv      *Inventory
	loc      locator
	problems []Problem
	// decodeFailed are the fields whose value could not be decoded.
	decodeFailed []string
}

func newChecker(inv *Inventory, root *yaml.Node) *checker {
	return &checker{inv: inv, loc: locator{root: root}}
}

// finish validates inv and returns the outcome: nil (warnings, if any, in
// inv.Warnings) or a *ValidationError.
func (c *checker) finish(inv *Inventory) error {
	decoding := len(c.problems)
	c.validate()
	// A value that could not be decoded was left empty: what validation says
	// of it, or of what holds it, would be a false second message.
	kept := c.problems[:decoding]
	for _, p := range c.problems[decoding:] {
		drop := false
		for _, f := range c.decodeFailed {
			if caused(f, p.Field) {
				drop = true
			}
		}
		if !drop {
			kept = append(kept, p)
		}
	}
	c.problems = kept
	sortProblems(c.problems)
	inv.Warnings = nil
	failed := false
	for _, p := range c.problems {
		if p.Warning {
			inv.Warnings = append(inv.Warnings, p)
		} else {
			failed = true
		}
	}
	if failed {
		return &ValidationError{Problems: c.problems}
	}
	return nil
}

// path is a field path: mapping keys (string) and sequence indexes (int).
type path []any

func (p path) with(elems ...any) path {
	return append(append(path{}, p...), elems...)
}

func (c *checker) add(warning bool, at path, hint, format string, args ...any) {
	line := c.loc.line(at...)
	if line == 0 && len(at) >= 2 && at[0] == "hosts" {
		if i, ok := at[1].(int); ok && i < len(c.inv.Hosts) && c.inv.Hosts[i] != nil {
			line = c.inv.Hosts[i].Line
		}
	}
	c.problems = append(c.problems, Problem{
		File: c.inv.Path, Line: line, Field: fieldString(at),
		Message: fmt.Sprintf(format, args...), Hint: hint, Warning: warning,
	})
}

// present returns the first of paths written in the file (the last one when
// none is), so that a problem between two fields points at the one the user wrote.
func (c *checker) present(paths ...path) path {
	for _, p := range paths {
		if c.loc.node(p...) != nil {
			return p
		}
	}
	return paths[len(paths)-1]
}

func (c *checker) errorf(at path, hint, format string, args ...any) {
	c.add(false, at, hint, format, args...)
}

func (c *checker) warnf(at path, hint, format string, args ...any) {
	c.add(true, at, hint, format, args...)
}

func (c *checker) validate() {
	inv := c.inv
	switch inv.APIVersion {
	case APIVersion:
	case "":
		c.errorf(path{"apiVersion"}, "add apiVersion: "+APIVersion, "apiVersion is missing")
	default:
		c.errorf(path{"apiVersion"}, "use apiVersion: "+APIVersion, "unsupported apiVersion %+.80q", inv.APIVersion)
	}
	switch inv.Kind {
	case Kind:
	case "":
		c.errorf(path{"kind"}, "add kind: "+Kind, "kind is missing")
	default:
		c.errorf(path{"kind"}, "use kind: "+Kind, "unsupported kind %+.80q", inv.Kind)
	}
	c.cluster()
	c.ssh(path{"ssh"}, &inv.SSH, true)
	c.hosts()
}

func (c *checker) cluster() {
	cl := &c.inv.Cluster
	at := path{"cluster"}

	if errs := validation.IsDNS1123Subdomain(cl.Name); len(errs) > 0 {
		c.errorf(at.with("name"), "use lower-case letters, digits, '-' and '.', such as \"prod-eu1\"", "invalid cluster name %+.80q: %s", cl.Name, strings.Join(errs, "; "))
	}
	if !supportedVersion(cl.KubernetesVersion, cl.AllowPreRelease) {
		c.errorf(at.with("kubernetesVersion"), "kubeforge supports "+SupportedKubernetesVersions+"; for example "+DefaultKubernetesVersion,
			"unsupported Kubernetes version %+.80q", cl.KubernetesVersion)
	}
	if ep := cl.ControlPlaneEndpoint; ep != "" {
		if msg := checkHostPort(ep); msg != "" {
			c.errorf(at.with("controlPlaneEndpoint"), "write host[:port], such as \"10.0.0.10:6443\", \"api.example.com\" or \"[fd00::10]:6443\"",
				"invalid controlPlaneEndpoint %+.80q: %s", ep, msg)
		}
	}

	pods := c.subnets(at.with("podSubnet"), cl.PodSubnet, "pod", minPodAddresses)
	services := c.subnets(at.with("serviceSubnet"), cl.ServiceSubnet, "service", minServiceAddresses)
	for _, s := range services {
		if host := s.Addr().BitLen() - s.Bits(); host > maxServiceSubnetBits {
			c.errorf(at.with("serviceSubnet"), fmt.Sprintf("use a mask of /%d or longer, such as %s", s.Addr().BitLen()-maxServiceSubnetBits, DefaultServiceSubnet),
				"service subnet %s is too large: for %d-bit addresses the mask must be >= %d", s, s.Addr().BitLen(), s.Addr().BitLen()-maxServiceSubnetBits)
		}
	}
	if v := c.inv.Cluster.ControllerManager.ExtraArgs["allocate-node-cidrs"]; v != "false" {
		for _, p := range pods {
			c.podNodeMask(at.with("podSubnet"), p)
		}
	}
	for _, p := range pods {
		for _, s := range services {
			if p.Overlaps(s) {
				c.errorf(c.present(at.with("serviceSubnet"), at.with("podSubnet")), "choose disjoint ranges, such as podSubnet "+DefaultPodSubnet+" and serviceSubnet "+DefaultServiceSubnet,
					"service subnet %s overlaps pod subnet %s", s, p)
			}
		}
	}

	if errs := validation.IsDNS1123Subdomain(cl.DNSDomain); len(errs) > 0 {
		c.errorf(at.with("dnsDomain"), "such as "+DefaultDNSDomain, "invalid dnsDomain %+.80q: %s", cl.DNSDomain, strings.Join(errs, "; "))
	}
	for i, san := range cl.CertSANs {
		if _, err := netip.ParseAddr(san); err == nil {
			continue
		}
		if errs := validation.IsWildcardDNS1123Subdomain(strings.ToLower(san)); len(errs) == 0 {
			continue
		}
		if errs := validation.IsDNS1123Subdomain(strings.ToLower(san)); len(errs) > 0 {
			c.errorf(at.with("certSANs", i), "a SAN is an IP address or a DNS name such as api.example.com or *.example.com",
				"invalid certificate SAN %+.80q", san)
		}
	}
	if !imageRepositoryRe.MatchString(cl.ImageRepository) {
		c.errorf(at.with("imageRepository"), "a registry and path without scheme, such as registry.k8s.io or registry.local:5000/k8s",
			"invalid imageRepository %+.80q", cl.ImageRepository)
	}
	if cl.Artifacts != "" {
		c.artifacts(at.with("artifacts"), cl.Artifacts, cl.KubernetesVersion)
	}
	if ep := cl.ContainerRuntimeEndpoint; !strings.HasPrefix(ep, "unix:///") {
		c.errorf(at.with("containerRuntimeEndpoint"), "use unix:// and an absolute socket path, such as "+DefaultContainerRuntimeEndpoint,
			"invalid containerRuntimeEndpoint %+.80q", ep)
	}
	if cl.CertificateValidity.Duration < 0 {
		c.errorf(at.with("certificateValidity"), "such as 8760h (one year)", "certificateValidity %s must be positive", cl.CertificateValidity.Duration)
	}
	switch cl.KeyType {
	case KeyTypeRSA, KeyTypeECDSA:
	default:
		c.errorf(at.with("keyType"), "use rsa or ecdsa", "unsupported keyType %+.80q", cl.KeyType)
	}
	switch cl.CNI.Plugin {
	case "", CNIBridge, CNIFlannel:
		if cl.CNI.Manifest != "" {
			c.warnf(at.with("cni", "manifest"), "set cni.plugin: manifest to apply it", "cni.manifest is ignored without cni.plugin: manifest")
		}
		if cl.CNI.Plugin == CNIFlannel {
			if _, n, err := net.ParseCIDR(cl.PodSubnet); err == nil && n.IP.To4() == nil {
				c.errorf(at.with("cni", "plugin"), "use bridge for an IPv6 pod subnet", "cni.plugin flannel supports an IPv4 podSubnet only, not %s", cl.PodSubnet)
			}
		}
	case CNIManifest:
		if cl.CNI.Manifest == "" {
			c.errorf(at.with("cni", "plugin"), "set cni.manifest to a local YAML file (for example a Calico or Cilium manifest)", "cni.plugin manifest needs cni.manifest")
		} else if msg := checkReadableFile(cl.CNI.Manifest); msg != "" {
			c.errorf(at.with("cni", "manifest"), "paths are relative to the inventory file's directory", "cannot read cni.manifest: %s", msg)
		}
	default:
		c.errorf(at.with("cni", "plugin"), "use flannel (the default), bridge or manifest", "unsupported cni.plugin %+.80q", cl.CNI.Plugin)
	}
	switch cl.Runtime.Install {
	case RuntimeInstallIfMissing, RuntimeInstallAlways, RuntimeInstallNever:
	default:
		c.errorf(at.with("runtime", "install"), "use ifMissing (the default), always or never", "unsupported runtime.install %+.80q", cl.Runtime.Install)
	}
	if cl.Runtime.Install == RuntimeInstallAlways && cl.Artifacts == "" {
		c.errorf(at.with("runtime", "install"), "set cluster.artifacts to a directory with runtime/ (make artifacts builds one)", "runtime.install always needs the runtime from cluster.artifacts")
	}
	switch cl.Kubelet.CgroupDriver {
	case CgroupDriverSystemd, CgroupDriverCgroupfs:
	default:
		c.errorf(at.with("kubelet", "cgroupDriver"), "use systemd (the default) or cgroupfs, the same as the container runtime", "unsupported kubelet.cgroupDriver %+.80q", cl.Kubelet.CgroupDriver)
	}
	for _, comp := range []struct {
		field string
		args  map[string]string
	}{{"kubelet", cl.Kubelet.ExtraArgs}, {"apiServer", cl.APIServer.ExtraArgs}, {"controllerManager", cl.ControllerManager.ExtraArgs},
		{"scheduler", cl.Scheduler.ExtraArgs}, {"etcd", cl.Etcd.ExtraArgs}} {
		c.extraArgs(at.with(comp.field, "extraArgs"), comp.args)
	}
	if dir, ok := cl.Etcd.ExtraArgs["data-dir"]; ok {
		if why := etcdDataDirProblem(dir); why != "" {
			// Every step reads and wipes this directory by name (facts, preflight, reset, restore).
			c.errorf(at.with("etcd", "extraArgs", "data-dir"), "a directory of etcd's own, such as /var/lib/etcd or /data/etcd: "+why,
				"invalid etcd data-dir %+.80q", dir)
		}
	}
	c.kubeletConfig(at.with("kubelet", "config"), cl.Kubelet.Config)
	c.security(at)
	c.registries(at.with("registries"))
}

// flagNameRe is a command-line flag name as Kubernetes components spell them.
var flagNameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]*$`)

// extraArgs checks flag names: written without "--", lower case, no spaces.
func (c *checker) extraArgs(at path, args map[string]string) {
	for name := range args {
		switch {
		case strings.HasPrefix(name, "-") && flagNameRe.MatchString(strings.TrimLeft(name, "-")):
			c.errorf(at.with(name), fmt.Sprintf("write the flag name without dashes: %s", strings.TrimLeft(name, "-")), "invalid extraArgs name %+.80q", name)
		case !flagNameRe.MatchString(name):
			c.errorf(at.with(name), "a flag name has lower-case letters, digits, '-' and '.', without the leading \"--\", such as audit-log-maxage",
				"invalid extraArgs name %+.80q", name)
		}
	}
}

// kubeletConfig checks that kubelet.config merges into a
// KubeletConfiguration as the renderer merges it (MergeKubeletConfig): known
// fields spelt in their case, values of the right type.
func (c *checker) kubeletConfig(at path, cfg map[string]any) {
	_, err := MergeKubeletConfig(&kubeletv1beta1.KubeletConfiguration{}, cfg)
	var kerr *KubeletConfigError
	if err == nil || !errors.As(err, &kerr) {
		if err != nil {
			c.errorf(at, "", "kubelet.config: %v", err)
		}
		return
	}
	hint := "the fields are those of KubeletConfiguration (kubelet.config.k8s.io/v1beta1), such as maxPods, evictionHard, systemReserved"
	for _, p := range kerr.Problems {
		field := at
		if p.Field != "" {
			field = at.with(kubeletConfigPath(p.Field)...)
		}
		switch {
		case p.Unknown:
			h := hint
			name := p.Field[strings.LastIndex(p.Field, ".")+1:]
			if t := kubeletStructAt(p.Field); t != nil {
				if near, _ := nearestField(t, "json", name); strings.EqualFold(near, name) {
					h = fmt.Sprintf("field names are case-sensitive: write %s", near)
				} else if near != "" {
					h = fmt.Sprintf("did you mean %s?", near)
				}
			}
			c.errorf(field, h, "kubelet.config: unknown KubeletConfiguration field %+.80q", p.Field)
		case p.Want != "":
			c.errorf(field, hint, "kubelet.config.%s: a %s value where KubeletConfiguration wants %s", p.Field, p.Got, p.Want)
		case p.Field != "":
			c.errorf(field, hint, "kubelet.config.%s: %s", p.Field, p.Message)
		default:
			c.errorf(field, hint, "kubelet.config: %s", p.Message)
		}
	}
}

// subnets parses a subnet field: one CIDR, or two of different families
// (dual stack), each at least min addresses large.
func (c *checker) subnets(at path, value, kind string, minAddrs int) []netip.Prefix {
	var out []netip.Prefix
	parts := strings.Split(value, ",")
	ok := true
	for _, s := range parts {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			c.errorf(at, "write a CIDR such as "+map[string]string{"pod": DefaultPodSubnet, "service": DefaultServiceSubnet}[kind],
				"malformed %s subnet %+.80q", kind, strings.TrimSpace(s))
			ok = false
			continue
		}
		if p.Masked() != p {
			c.warnf(at, fmt.Sprintf("write %s", p.Masked()), "%s subnet %s has host bits set: it is read as %s", kind, p, p.Masked())
		}
		out = append(out, p.Masked())
	}
	if !ok {
		return out
	}
	if len(out) > 2 || (len(out) == 2 && out[0].Addr().Is4() == out[1].Addr().Is4()) {
		c.errorf(at, "give one CIDR, or one IPv4 and one IPv6 CIDR separated by a comma for dual stack",
			"%s subnet %+.80q must be one CIDR or two of different IP families", kind, value)
		return nil
	}
	for _, p := range out {
		if n := rangeSize(p); n < int64(minAddrs) {
			c.errorf(at, fmt.Sprintf("use a shorter mask; the %s subnet needs at least %d addresses", kind, minAddrs),
				"%s subnet %s is too small: it has %d addresses, the minimum is %d", kind, p, n, minAddrs)
		}
	}
	return out
}

// podNodeMask checks the pod subnet against the per-node range the
// controller manager allocates (kubeadm's rule).
func (c *checker) podNodeMask(at path, p netip.Prefix) {
	flag, nodeMask := "node-cidr-mask-size-ipv4", defaultNodeMaskV4
	if p.Addr().Is6() {
		flag, nodeMask = "node-cidr-mask-size-ipv6", defaultNodeMaskV6
	}
	if v, ok := c.inv.Cluster.ControllerManager.ExtraArgs[flag]; ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			c.errorf(path{"cluster", "controllerManager", "extraArgs", flag}, "an integer such as 24", "invalid %s %+.80q", flag, v)
			return
		}
		nodeMask = n
	}
	switch {
	case p.Bits() > nodeMask:
		c.errorf(at, fmt.Sprintf("use a pod subnet of /%d or larger, or set controllerManager.extraArgs.%s", nodeMask, flag),
			"pod subnet %s is smaller than one node's pod range (/%d)", p, nodeMask)
	case nodeMask-p.Bits() > podNodeMaskMaxDiff:
		c.errorf(at, fmt.Sprintf("use a pod subnet of /%d or longer, or set controllerManager.extraArgs.%s", nodeMask-podNodeMaskMaxDiff, flag),
			"pod subnet %s is too large for node ranges of /%d (at most %d bits apart)", p, nodeMask, podNodeMaskMaxDiff)
	}
}

func rangeSize(p netip.Prefix) int64 {
	host := p.Addr().BitLen() - p.Bits()
	if host >= 63 {
		return math.MaxInt64
	}
	return int64(1) << host
}

func (c *checker) artifacts(at path, dir, k8s string) {
	st, err := os.Stat(dir)
	switch {
	case err != nil:
		c.errorf(at, "point artifacts at a directory laid out as described in docs/inventory.md", "artifacts directory: %v", err)
		return
	case !st.IsDir():
		c.errorf(at, "point artifacts at a directory laid out as described in docs/inventory.md", "artifacts %s is not a directory", dir)
		return
	}
	for _, bin := range []string{"kubelet", "kubectl", "kubeadm"} {
		if _, err := os.Stat(filepath.Join(dir, "bin", bin)); err != nil {
			c.warnf(at, "offline installs read DIR/bin/{kubelet,kubectl,kubeadm}", "artifacts directory %s has no bin/%s", dir, bin)
		}
	}
	// The binaries and images must be the version the files are rendered for.
	if b, err := os.ReadFile(filepath.Join(dir, "VERSION")); err == nil {
		if got := strings.TrimSpace(string(b)); got != k8s && supportedVersion(k8s, c.inv.Cluster.AllowPreRelease) {
			c.errorf(at, "point artifacts at the build of "+k8s+" (an upgrade changes kubernetesVersion and artifacts together)",
				"artifacts directory %s holds Kubernetes %.40s, not the kubernetesVersion %s", dir, got, k8s)
		}
	}
}

// ssh checks SSH settings; top says whether s is the inventory-wide block
// (where defaults made port, user and timeout non-zero).
func (c *checker) ssh(at path, s *SSH, top bool) {
	if s.Port != 0 || top || c.written(at.with("port")) != nil {
		c.port(at.with("port"), s.Port)
	}
	if s.User != "" || top {
		c.user(at.with("user"), s.User)
	}
	c.identityFiles(at, s.IdentityFiles)
	c.envName(at.with("passwordEnv"), s.PasswordEnv)
	c.envName(at.with("passphraseEnv"), s.PassphraseEnv)
	if s.ConnectTimeout.Duration < 0 {
		c.errorf(at.with("connectTimeout"), "such as 10s", "connectTimeout %s must be positive", s.ConnectTimeout.Duration)
	}
	for i, f := range s.KnownHosts {
		if st, err := os.Stat(f); err == nil && st.IsDir() {
			c.errorf(at.with("knownHosts", i), "give a known_hosts file, such as ~/.ssh/known_hosts", "knownHosts %s is a directory", f)
		}
	}
	if b := s.Bastion; b != nil {
		c.bastion(at.with("bastion"), b)
	}
}

func (c *checker) bastion(at path, b *Bastion) {
	if b.Address == "" {
		c.errorf(at, "set bastion.address to the jump host's IP address or DNS name", "bastion has no address")
	} else if !validAddress(b.Address) {
		c.errorf(at.with("address"), "an IP address or a DNS name such as bastion.example.com", "invalid bastion address %+.80q", b.Address)
	}
	c.port(at.with("port"), b.Port)
	c.user(at.with("user"), b.User)
	c.identityFiles(at, b.IdentityFiles)
	c.envName(at.with("passwordEnv"), b.PasswordEnv)
}

// identityFiles checks that each identity file can be read.
func (c *checker) identityFiles(at path, files []string) {
	for i, f := range files {
		if msg := checkReadableFile(f); msg != "" {
			c.errorf(at.with("identityFiles", i), "paths are relative to the inventory file's directory; ~ is your home directory",
				"cannot read identity file: %s", msg)
		}
	}
}

// port checks the port at at. p is its value after defaults; a port written
// as 0 is checked as 0, not taken as unset (which defaults).
func (c *checker) port(at path, p int) {
	if n := c.written(at); n != nil {
		var v int
		if n.Decode(&v) == nil {
			p = v
		}
	}
	if p < 1 || p > 65535 {
		hint := "a TCP port between 1 and 65535"
		if p == 0 {
			hint += "; leave port out for the default"
		}
		c.errorf(at, hint, "invalid port %d: port must be 1-65535", p)
	}
}

// written returns the scalar the file holds at at (through an alias), or nil
// when the field is not written there.
func (c *checker) written(at path) *yaml.Node {
	n := c.loc.node(at...)
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n == nil || n.Kind != yaml.ScalarNode {
		return nil
	}
	return n
}

var userRe = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$`)

func (c *checker) user(at path, u string) {
	if !userRe.MatchString(u) || len(u) > 256 {
		c.errorf(at, "a login name such as root or debian", "invalid SSH user %+.80q", u)
	}
}

func (c *checker) envName(at path, name string) {
	if name == "" {
		return
	}
	if errs := validation.IsEnvVarName(name); len(errs) > 0 {
		c.errorf(at, "give the NAME of an environment variable, such as KUBEFORGE_SSH_PASSWORD, not its value", "invalid environment variable name %+.80q", name)
		return
	}
	if _, ok := os.LookupEnv(name); !ok {
		c.warnf(at, "export "+name+" before running kubeforge", "environment variable %s is not set", name)
	}
}

func (c *checker) hosts() {
	inv := c.inv
	if len(inv.Hosts) == 0 {
		c.errorf(path{"hosts"}, "list the machines under hosts:, at least one with roles: [control-plane]", "no hosts")
	}
	names := map[string]int{}     // name -> index
	endpoints := map[string]int{} // address:port -> index
	nodeIPs := map[string]int{}   // node IP -> index
	controlPlanes, removedCP := 0, -1
	for i, h := range inv.Hosts {
		at := path{"hosts", i}
		label := h.Name
		if label == "" {
			label = "#" + strconv.Itoa(i+1)
		}

		switch {
		case h.Name == "":
			c.errorf(at, "give every host a name: it becomes the Kubernetes node name", "host %s has no name", label)
		default:
			if errs := validation.IsDNS1123Subdomain(h.Name); len(errs) > 0 {
				c.errorf(at.with("name"), "a node name is an RFC 1123 subdomain: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit",
					"host name %+.80q is not a valid node name: %s", h.Name, strings.Join(errs, "; "))
			}
			if j, dup := names[h.Name]; dup {
				c.errorf(at.with("name"), "host names must be unique", "duplicate host name %+.80q (also used by the host at line %d)", h.Name, inv.Hosts[j].Line)
			} else {
				names[h.Name] = i
			}
		}

		dupEndpoint := false
		switch {
		case h.Address == "":
			c.errorf(at, "set address to the IP address or DNS name kubeforge connects to over SSH", "host %s has no address", label)
		case !validAddress(h.Address):
			c.errorf(at.with("address"), "an IP address or a DNS name such as node1.example.com", "host %s: invalid address %+.80q", label, h.Address)
		default:
			key := netJoin(h.Address, h.Port)
			if j, dup := endpoints[key]; dup {
				dupEndpoint = true
				c.errorf(at.with("address"), "every host needs its own address (or SSH port)", "host %s: duplicate address %s (also used by host %+.80q at line %d)", label, key, inv.Hosts[j].Name, inv.Hosts[j].Line)
			} else {
				endpoints[key] = i
			}
		}
		if h.InternalAddress != "" {
			if a, err := netip.ParseAddr(h.InternalAddress); err != nil || a.Zone() != "" {
				c.errorf(at.with("internalAddress"), "internalAddress is the node IP: an IP address such as 10.0.0.11", "host %s: invalid internalAddress %+.80q", label, h.InternalAddress)
			}
		} else if _, err := netip.ParseAddr(h.Address); err != nil && validAddress(h.Address) && !h.Remove {
			c.errorf(at.with("address"), "set internalAddress to the host's IP in the cluster network, such as internalAddress: 10.0.0.11",
				"host %s: address %+.80q is a DNS name, and the node IP (the kubelet's --node-ip, etcd's and the API server's addresses) must be an IP address", label, h.Address)
		}
		if ip := h.NodeIP(); ip != "" && !dupEndpoint {
			if j, dup := nodeIPs[ip]; dup {
				c.errorf(at.with(nodeIPField(h)), "set a distinct internalAddress on each host; it is the node IP", "host %s: node IP %s is also the node IP of host %+.80q at line %d", label, ip, inv.Hosts[j].Name, inv.Hosts[j].Line)
			} else {
				nodeIPs[ip] = i
			}
		}
		// A port or user inherited from an ssh block was checked there.
		inherited := c.inv.EffectiveSSH(&Host{SSH: h.SSH})
		if h.Port != inherited.Port || c.written(at.with("port")) != nil {
			c.port(at.with("port"), h.Port)
		}
		if h.User != inherited.User {
			c.user(at.with("user"), h.User)
		}

		if len(h.Roles) == 0 {
			c.errorf(at, "add roles: [control-plane] or roles: [worker]", "host %s has no roles", label)
		}
		for j, r := range h.Roles {
			if slices.Index(h.Roles, r) < j {
				c.warnf(at.with("roles", j), "list each role once", "host %s: role %q is listed twice", label, r)
			}
			switch r {
			case RoleControlPlane, RoleWorker:
			default:
				c.errorf(at.with("roles", j), "a role is control-plane or worker (etcd runs on every control plane)", "host %s: unknown role %+.80q", label, r)
			}
		}
		if h.IsControlPlane() && !h.Remove {
			controlPlanes++
		}
		if h.IsControlPlane() && h.Remove && removedCP < 0 {
			removedCP = i
		}
		for k, v := range h.Labels {
			if errs := content.IsLabelKey(k); len(errs) > 0 {
				c.errorf(at.with("labels", k), "a label key is [prefix/]name: a DNS subdomain prefix and a name of up to 63 letters, digits, '-', '_' or '.'",
					"host %s: invalid label key %+.80q: %s", label, k, strings.Join(errs, "; "))
			}
			if errs := content.IsLabelValue(v); len(errs) > 0 {
				c.errorf(at.with("labels", k), "a label value has up to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
					"host %s: invalid value %+.80q for label %+.80q: %s", label, v, k, strings.Join(errs, "; "))
			}
		}
		for j, t := range h.Taints {
			tat := at.with("taints", j)
			if errs := content.IsLabelKey(t.Key); len(errs) > 0 {
				c.errorf(tat.with("key"), "a taint key is [prefix/]name, like a label key", "host %s: invalid taint key %+.80q: %s", label, t.Key, strings.Join(errs, "; "))
			}
			if t.Value != "" {
				if errs := content.IsLabelValue(t.Value); len(errs) > 0 {
					c.errorf(tat.with("value"), "a taint value follows the rules of a label value", "host %s: invalid taint value %+.80q: %s", label, t.Value, strings.Join(errs, "; "))
				}
			}
			switch t.Effect {
			case "NoSchedule", "PreferNoSchedule", "NoExecute":
			default:
				c.errorf(tat.with("effect"), "use NoSchedule, PreferNoSchedule or NoExecute", "host %s: invalid taint effect %+.80q", label, t.Effect)
			}
		}
		if h.SSH != nil {
			c.ssh(at.with("ssh"), h.SSH, false)
		}
	}
	if len(inv.Hosts) > 0 {
		switch {
		case controlPlanes == 0 && removedCP >= 0:
			c.errorf(path{"hosts", removedCP, "remove"}, "keep at least one control plane: add the new one before removing the last",
				"every control plane is marked remove: true, and the cluster needs at least one")
		case controlPlanes == 0:
			c.errorf(path{"hosts"}, "give at least one host roles: [control-plane]", "no control plane: the cluster needs at least one host with the control-plane role")
		case controlPlanes%2 == 0:
			c.warnf(path{"hosts"}, "use an odd number (1, 3, 5): etcd keeps quorum with a majority, so an even count adds a failure point without adding tolerance",
				"%d control planes is an even number", controlPlanes)
		}
	}
	c.nodeIPsInSubnets()
}

// nodeIPsInSubnets warns when a node IP lies inside the pod or service subnet.
func (c *checker) nodeIPsInSubnets() {
	for _, field := range []struct{ name, value string }{{"podSubnet", c.inv.Cluster.PodSubnet}, {"serviceSubnet", c.inv.Cluster.ServiceSubnet}} {
		for _, s := range strings.Split(field.value, ",") {
			p, err := netip.ParsePrefix(strings.TrimSpace(s))
			if err != nil {
				continue
			}
			for i, h := range c.inv.Hosts {
				if a, err := netip.ParseAddr(h.NodeIP()); err == nil && p.Masked().Contains(a) {
					c.warnf(path{"hosts", i, nodeIPField(h)}, "choose a "+field.name+" that does not contain the hosts' network",
						"host %s: node IP %s lies inside %s %s", h.Name, a, field.name, p.Masked())
				}
			}
		}
	}
}

func nodeIPField(h *Host) string {
	if h.InternalAddress != "" {
		return "internalAddress"
	}
	return "address"
}

func netJoin(host string, port int) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + strconv.Itoa(port)
	}
	return host + ":" + strconv.Itoa(port)
}

// validAddress accepts an IP address (without zone) or an RFC 1123 host name.
func validAddress(s string) bool {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Zone() == ""
	}
	return len(validation.IsDNS1123Subdomain(strings.ToLower(s))) == 0
}

// checkHostPort validates "host[:port]" and returns what is wrong, or "".
func checkHostPort(s string) string {
	if strings.Contains(s, "://") {
		return "it must not have a scheme"
	}
	h, _, err := splitHostPort(s)
	if err != nil {
		return err.Error()
	}
	if !validAddress(h) {
		return fmt.Sprintf("host %+.80q is neither an IP address nor a DNS name", h)
	}
	return ""
}

// checkReadableFile opens f and returns what is wrong, or "". Only a regular
// file is opened: opening a FIFO would wait for a writer.
func checkReadableFile(f string) string {
	st, err := os.Stat(f)
	switch {
	case err != nil:
		return err.Error()
	case st.IsDir():
		return f + " is a directory"
	case !st.Mode().IsRegular():
		return f + " is not a regular file"
	}
	fh, err := os.Open(f)
	if err != nil {
		return err.Error()
	}
	fh.Close()
	return ""
}

// systemDirs hold what is not etcd's: an etcd data dir is none of them, nor
// inside the first group, since reset removes the data dir whole.
var (
	systemTrees = []string{"/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/boot", "/dev", "/proc", "/sys", "/run", "/tmp", "/var/tmp",
		"/var/log", "/var/run", "/var/cache", "/var/lib/kubelet", "/var/lib/containerd", "/var/lib/kubeforge", "/var/lib/cni", "/opt/cni", "/opt/containerd"}
	systemDirs = []string{"/var", "/var/lib", "/opt", "/home", "/root", "/srv", "/mnt", "/media", "/data"}
)

// etcdDataDirProblem says what is wrong with dir as etcd's data dir, or "".
func etcdDataDirProblem(dir string) string {
	switch {
	case !pathpkg.IsAbs(dir) || pathpkg.Clean(dir) != dir:
		return "an absolute, clean path"
	case strings.ContainsAny(dir, " \t\n'\"$`\\*?[;&|<>(){}"):
		return "without blanks or shell characters"
	case slices.Contains(systemDirs, dir) || strings.Count(dir, "/") < 2:
		return "not a top-level or shared directory: reset removes it whole"
	}
	for _, t := range systemTrees {
		if dir == t || strings.HasPrefix(dir, t+"/") {
			return "not in " + t + ", which holds what is not etcd's"
		}
	}
	return ""
}
