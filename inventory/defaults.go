package inventory

import (
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The defaults applied by SetDefaults (documented in docs/inventory.md).
const (
	DefaultClusterName              = "kubeforge"
	DefaultKubernetesVersion        = "v1.37.2"
	DefaultPodSubnet                = "10.244.0.0/16"
	DefaultServiceSubnet            = "10.96.0.0/12"
	DefaultDNSDomain                = "cluster.local"
	DefaultImageRepository          = "registry.k8s.io"
	DefaultContainerRuntimeEndpoint = "unix:///run/containerd/containerd.sock"
	DefaultCertificateValidity      = 8760 * time.Hour
	DefaultKeyType                  = "rsa"
	DefaultCNIPlugin                = "flannel"
	DefaultCgroupDriver             = "systemd"
	DefaultSSHUser                  = "root"
	DefaultSSHPort                  = 22
	DefaultConnectTimeout           = 10 * time.Second
	DefaultAPIServerPort            = 6443
	DefaultAuditLogPath             = "/var/log/kubernetes/audit/audit.log"
	DefaultAuditMaxAge              = 30
	DefaultAuditMaxBackup           = 10
	DefaultAuditMaxSize             = 100
	DefaultEncryptionProvider       = EncryptionSecretbox
)

// The encryption providers cluster.encryption.provider accepts.
const (
	EncryptionAESCBC    = "aescbc"
	EncryptionAESGCM    = "aesgcm"
	EncryptionSecretbox = "secretbox"
)

// The supported values of enumerated fields.
const (
	KeyTypeRSA   = "rsa"
	KeyTypeECDSA = "ecdsa"

	CNIBridge   = "bridge"
	CNIFlannel  = "flannel"
	CNIManifest = "manifest"

	CgroupDriverSystemd  = "systemd"
	CgroupDriverCgroupfs = "cgroupfs"

	RuntimeInstallIfMissing = "ifMissing"
	RuntimeInstallAlways    = "always"
	RuntimeInstallNever     = "never"
)

// SetDefaults fills every unset field with its default, gives each host its
// SSH port and user, and makes relative paths (identity files, known_hosts
// files, artifacts, cni.manifest) absolute against the inventory's directory,
// expanding a leading "~". It reads SSH_AUTH_SOCK to default ssh.useAgent.
// Load calls it; call it yourself for an inventory built in code.
func (inv *Inventory) SetDefaults() {
	c := &inv.Cluster
	setString(&c.Name, DefaultClusterName)
	setString(&c.KubernetesVersion, DefaultKubernetesVersion)
	if v := c.KubernetesVersion; v != "" && !strings.HasPrefix(v, "v") {
		c.KubernetesVersion = "v" + v
	}
	setString(&c.PodSubnet, DefaultPodSubnet)
	setString(&c.ServiceSubnet, DefaultServiceSubnet)
	setString(&c.DNSDomain, DefaultDNSDomain)
	setString(&c.ImageRepository, DefaultImageRepository)
	setString(&c.ContainerRuntimeEndpoint, DefaultContainerRuntimeEndpoint)
	if c.CertificateValidity.Duration == 0 {
		c.CertificateValidity.Duration = DefaultCertificateValidity
	}
	setString(&c.KeyType, DefaultKeyType)
	setString(&c.Kubelet.CgroupDriver, DefaultCgroupDriver)
	setString(&c.Runtime.Install, RuntimeInstallIfMissing)
	setString(&c.Audit.LogPath, DefaultAuditLogPath)
	setInt(&c.Audit.MaxAge, DefaultAuditMaxAge)
	setInt(&c.Audit.MaxBackup, DefaultAuditMaxBackup)
	setInt(&c.Audit.MaxSize, DefaultAuditMaxSize)
	setString(&c.Encryption.Provider, DefaultEncryptionProvider)
	if len(c.Encryption.Resources) == 0 {
		c.Encryption.Resources = []string{"secrets"}
	}

	dir := inv.Dir()
	if c.Artifacts != "" {
		c.Artifacts = resolvePath(dir, c.Artifacts)
	}
	if c.CNI.Manifest != "" {
		c.CNI.Manifest = resolvePath(dir, c.CNI.Manifest)
	}
	if c.Encryption.KeyFile != "" {
		c.Encryption.KeyFile = resolvePath(dir, c.Encryption.KeyFile)
	}
	if c.Audit.Policy != "" {
		c.Audit.Policy = resolvePath(dir, c.Audit.Policy)
	}
	for name, r := range c.Registries {
		for i := range r.Mirrors {
			m := &r.Mirrors[i]
			for _, p := range []*string{&m.CA, &m.ClientCertificate, &m.ClientKey} {
				if *p != "" {
					*p = resolvePath(dir, *p)
				}
			}
			if m.Credentials != nil && m.Credentials.File != "" {
				m.Credentials.File = resolvePath(dir, m.Credentials.File)
			}
		}
		c.Registries[name] = r
	}

	s := &inv.SSH
	setString(&s.User, DefaultSSHUser)
	if s.Port == 0 {
		s.Port = DefaultSSHPort
	}
	if s.UseAgent == nil {
		agent := os.Getenv("SSH_AUTH_SOCK") != ""
		s.UseAgent = &agent
	}
	if s.ConnectTimeout.Duration == 0 {
		s.ConnectTimeout.Duration = DefaultConnectTimeout
	}
	resolveSSHPaths(dir, s)
	if b := s.Bastion; b != nil {
		defaultBastion(b, s)
	}

	for _, h := range inv.Hosts {
		if h == nil {
			continue
		}
		if h.SSH != nil {
			resolveSSHPaths(dir, h.SSH)
			if b := h.SSH.Bastion; b != nil {
				defaultBastion(b, s)
			}
		}
		eff := inv.EffectiveSSH(h)
		if h.Port == 0 {
			h.Port = eff.Port
		}
		if h.User == "" {
			h.User = eff.User
		}
	}
}

// defaultBastion fills a bastion's unset port, user, agent use and identity
// files from the inventory-wide SSH settings s.
func defaultBastion(b *Bastion, s *SSH) {
	if b.Port == 0 {
		b.Port = DefaultSSHPort
	}
	setString(&b.User, s.User)
	if b.UseAgent == nil && s.UseAgent != nil {
		v := *s.UseAgent
		b.UseAgent = &v
	}
	if len(b.IdentityFiles) == 0 && b.PasswordEnv == "" && !b.PasswordPrompt {
		b.IdentityFiles = append([]string(nil), s.IdentityFiles...)
	}
}

// Dir is the directory of the inventory file: the base of relative paths and
// of the state directory. It is the working directory for an inventory built
// in code.
func (inv *Inventory) Dir() string {
	if inv.Path == "" {
		if wd, err := os.Getwd(); err == nil {
			return wd
		}
		return "."
	}
	return filepath.Dir(inv.Path)
}

func resolveSSHPaths(dir string, s *SSH) {
	for i, f := range s.IdentityFiles {
		s.IdentityFiles[i] = resolvePath(dir, f)
	}
	for i, f := range s.KnownHosts {
		s.KnownHosts[i] = resolvePath(dir, f)
	}
	if b := s.Bastion; b != nil {
		for i, f := range b.IdentityFiles {
			b.IdentityFiles[i] = resolvePath(dir, f)
		}
	}
}

// resolvePath expands a leading "~" to the home directory and makes p
// absolute against dir.
func resolvePath(dir, p string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			p = filepath.Join(home, p[1:])
		}
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(dir, p)
	}
	return filepath.Clean(p)
}

func setString(p *string, def string) {
	if *p == "" {
		*p = def
	}
}

func setInt(p **int, def int) {
	if *p == nil {
		*p = &def
	}
}
