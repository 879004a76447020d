// Package inventory defines kubeforge's cluster inventory: the hosts, how to reach
// them over SSH, and the cluster settings. Load decodes and validates a YAML file.
package inventory

import "time"

// APIVersion and Kind identify a kubeforge inventory document.
const (
	APIVersion = "kubeforge.io/v1alpha1"
	Kind       = "Cluster"
)

// Role is what a host does in the cluster. Etcd is stacked on control planes.
type Role string

// The roles a host can have.
const (
	RoleControlPlane Role = "control-plane"
	RoleWorker       Role = "worker"
)

// Inventory is one kubeforge inventory document.
type Inventory struct {
	APIVersion string  `yaml:"apiVersion"`
	Kind       string  `yaml:"kind"`
	Cluster    Cluster `yaml:"cluster"`
	SSH        SSH     `yaml:"ssh"`
	Hosts      []*Host `yaml:"hosts"`

	// Path is the file the inventory was loaded from (empty when built in code).
	Path string `yaml:"-"`
	// Warnings are the problems found by Load or Validate that do not make the
	// inventory unusable (for example an even number of control planes).
	Warnings []Problem `yaml:"-"`
}

// Cluster holds the cluster-wide settings.
type Cluster struct {
	Name              string `yaml:"name"`
	KubernetesVersion string `yaml:"kubernetesVersion"`
	// AllowPreRelease admits a pre-release kubernetesVersion (v1.38.0-beta.0),
	// of a supported minor or of the next one; for trying a coming release.
	AllowPreRelease      bool     `yaml:"allowPreRelease"`
	ControlPlaneEndpoint string   `yaml:"controlPlaneEndpoint"` // host[:port]; defaults to the seed control plane
	PodSubnet            string   `yaml:"podSubnet"`
	ServiceSubnet        string   `yaml:"serviceSubnet"`
	DNSDomain            string   `yaml:"dnsDomain"`
	CertSANs             []string `yaml:"certSANs"`
	ImageRepository      string   `yaml:"imageRepository"`
	// Artifacts is a local directory of binaries and image tarballs for offline
	// installs (layout in docs/inventory.md). Relative to the inventory file.
	Artifacts                string          `yaml:"artifacts"`
	ContainerRuntimeEndpoint string          `yaml:"containerRuntimeEndpoint"`
	Runtime                  Runtime         `yaml:"runtime"`
	CertificateValidity      Duration        `yaml:"certificateValidity"` // leaves; default 8760h
	KeyType                  string          `yaml:"keyType"`             // rsa (default) or ecdsa
	CNI                      CNI             `yaml:"cni"`
	Kubelet                  Kubelet         `yaml:"kubelet"`
	APIServer                Component       `yaml:"apiServer"`
	ControllerManager        Component       `yaml:"controllerManager"`
	Scheduler                Component       `yaml:"scheduler"`
	Etcd                     Component       `yaml:"etcd"`
	FeatureGates             map[string]bool `yaml:"featureGates"`
	Audit                    Audit           `yaml:"audit"`
	Encryption               Encryption      `yaml:"encryption"`
	// Registries are the mirrors each node's containerd pulls through, by the
	// upstream registry they stand for (docs/registries.md).
	Registries map[string]Registry `yaml:"registries"`
	Extra      map[string]string   `yaml:"-"`
}

// Audit is the API server's audit log (docs/security.md). It is on unless
// Enabled is false.
type Audit struct {
	Enabled *bool `yaml:"enabled"`
	// Policy is a local audit.k8s.io/v1 Policy file, relative to the inventory
	// file; empty means kubeforge's default policy.
	Policy string `yaml:"policy"`
	// PolicyData is Policy's content, read once when the inventory is validated.
	PolicyData []byte `yaml:"-"`
	// LogPath is the log file on each control plane.
	LogPath string `yaml:"logPath"`
	// MaxAge (days), MaxBackup (files) and MaxSize (megabytes) are the API
	// server's --audit-log-maxage, --audit-log-maxbackup and --audit-log-maxsize.
	MaxAge    *int `yaml:"maxAge"`
	MaxBackup *int `yaml:"maxBackup"`
	MaxSize   *int `yaml:"maxSize"`
}

// Encryption is the encryption at rest of API objects in etcd (Secrets by
// default) with a key kubeforge generates and keeps with the PKI. It is on
// unless Enabled is false.
type Encryption struct {
	Enabled *bool `yaml:"enabled"`
	// Provider is aescbc, aesgcm or secretbox (the default).
	Provider string `yaml:"provider"`
	// KeyFile is a local file holding the base64 key a cluster without a key
	// starts with (instead of a generated one), relative to the inventory file.
	KeyFile string `yaml:"keyFile"`
	// Key is KeyFile's decoded key, read once when the inventory is validated.
	Key []byte `yaml:"-"`
	// Resources are the resources encrypted, as the API server's
	// EncryptionConfiguration names them ("secrets", "configmaps", "widgets.example.com").
	Resources []string `yaml:"resources"`
}

// CNI chooses the pod network (docs/network.md). "flannel" (flannel's VXLAN
// overlay with kube-router's NetworkPolicy firewall, images from the artifacts)
// crosses subnets; "bridge" (a bridge + host-local config per node and routes
// between hosts set by kubeforge) needs no image but one L2 segment; "manifest"
// applies the user's own. Left empty, an existing cluster keeps the network it
// is seen to run, and a new one gets DefaultCNIPlugin (bridge for an IPv6 pod subnet).
type CNI struct {
	Plugin   string `yaml:"plugin"`   // "", "flannel", "bridge" or "manifest"
	Manifest string `yaml:"manifest"` // a local YAML file applied when Plugin is "manifest"
}

// Runtime says when kubeforge installs the container runtime of the
// artifacts directory (containerd 2.x, runc, the CNI plugins: docs/runtime.md).
type Runtime struct {
	// Install: ifMissing (default) installs it on hosts that have no runtime and
	// leaves a working one alone; always also replaces a runtime kubeforge did
	// not install (for example a distribution's containerd 1.x); never requires
	// a runtime on every host.
	Install string `yaml:"install"`
}

// Kubelet holds extra kubelet settings.
type Kubelet struct {
	CgroupDriver string            `yaml:"cgroupDriver"` // systemd (default) or cgroupfs
	ResolvConf   string            `yaml:"resolvConf"`
	ExtraArgs    map[string]string `yaml:"extraArgs"`
	// Config is merged over kubeforge's KubeletConfiguration (field names as in kubelet.config.k8s.io/v1beta1).
	Config map[string]any `yaml:"config"`
}

// Component holds extra flags and volumes for a control-plane component.
type Component struct {
	ExtraArgs map[string]string `yaml:"extraArgs"`
}

// SSH says how to reach hosts. Host-level values override these.
type SSH struct {
	User           string   `yaml:"user"`
	Port           int      `yaml:"port"`
	IdentityFiles  []string `yaml:"identityFiles"`
	UseAgent       *bool    `yaml:"useAgent"`
	PasswordEnv    string   `yaml:"passwordEnv"`    // name of an environment variable holding the password
	PasswordPrompt bool     `yaml:"passwordPrompt"` // ask on the terminal
	PassphraseEnv  string   `yaml:"passphraseEnv"`  // passphrase for encrypted identity files
	KnownHosts     []string `yaml:"knownHosts"`
	ConnectTimeout Duration `yaml:"connectTimeout"`
	Bastion        *Bastion `yaml:"bastion"`
}

// Bastion is a jump host with its own auth.
type Bastion struct {
	Address        string   `yaml:"address"`
	Port           int      `yaml:"port"`
	User           string   `yaml:"user"`
	IdentityFiles  []string `yaml:"identityFiles"`
	UseAgent       *bool    `yaml:"useAgent"`
	PasswordEnv    string   `yaml:"passwordEnv"`
	PasswordPrompt bool     `yaml:"passwordPrompt"`
}

// Host is one machine of the fleet.
type Host struct {
	Name            string            `yaml:"name"`
	Address         string            `yaml:"address"`
	InternalAddress string            `yaml:"internalAddress"` // defaults to Address
	Port            int               `yaml:"port"`
	User            string            `yaml:"user"`
	Roles           []Role            `yaml:"roles"`
	Labels          map[string]string `yaml:"labels"`
	Taints          []Taint           `yaml:"taints"`
	SSH             *SSH              `yaml:"ssh"`    // per-host overrides
	Remove          bool              `yaml:"remove"` // marked for removal by scale

	// Line is the line of this host in the inventory file (for messages).
	Line int `yaml:"-"`
}

// Taint is a node taint.
type Taint struct {
	Key    string `yaml:"key"`
	Value  string `yaml:"value"`
	Effect string `yaml:"effect"`
}

// Duration is a time.Duration that decodes from "30s", "8760h".
type Duration struct{ time.Duration }

// Has reports whether h has role r.
func (h *Host) Has(r Role) bool {
	for _, x := range h.Roles {
		if x == r {
			return true
		}
	}
	return false
}

// IsControlPlane reports whether h runs the control plane (and etcd).
func (h *Host) IsControlPlane() bool { return h.Has(RoleControlPlane) }

// NodeIP is the address the cluster uses for h: InternalAddress, else Address.
func (h *Host) NodeIP() string {
	if h.InternalAddress != "" {
		return h.InternalAddress
	}
	return h.Address
}

// Selector picks the hosts a step runs on.
type Selector struct {
	Name  string // shown in plans: "all", "control-planes", "workers"
	Match func(inv *Inventory, h *Host) bool
}

// Select returns the hosts of inv that s matches, in inventory order.
func (s Selector) Select(inv *Inventory) []*Host {
	var out []*Host
	for _, h := range inv.Hosts {
		if s.Match == nil || s.Match(inv, h) {
			out = append(out, h)
		}
	}
	return out
}

// ControlPlanes returns the control-plane hosts in inventory order.
func (inv *Inventory) ControlPlanes() []*Host { return SelectControlPlanes.Select(inv) }

// Workers returns hosts that are not control planes.
func (inv *Inventory) Workers() []*Host { return SelectWorkers.Select(inv) }

// FirstControlPlane is the first control plane in the file that is not
// marked for removal (else the first one; nil without any). It is the seed
// of a cluster nothing was observed of: the one a new cluster is
// initialised on. The seed of a cluster that exists is observed
// (tasks.ChooseSeed), never read from the file's order.
func (inv *Inventory) FirstControlPlane() *Host {
	cps := inv.ControlPlanes()
	for _, h := range cps {
		if !h.Remove {
			return h
		}
	}
	if len(cps) > 0 {
		return cps[0]
	}
	return nil
}

// Host returns the host named name, or nil.
func (inv *Inventory) Host(name string) *Host {
	for _, h := range inv.Hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}

// The common selectors.
var (
	SelectAll           = Selector{Name: "all"}
	SelectControlPlanes = Selector{Name: "control-planes", Match: func(_ *Inventory, h *Host) bool { return h.IsControlPlane() }}
	SelectWorkers       = Selector{Name: "workers", Match: func(_ *Inventory, h *Host) bool { return !h.IsControlPlane() }}
)
