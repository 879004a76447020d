package harnesslib

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/kubeforge/kubeforge/internal/atomicfile"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"
)

// ensureKey makes an ed25519 key pair at path (0600) and path.pub unless a valid one is there, and returns the
// public key in authorized_keys format.
func ensureKey(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		signer, err := ssh.ParsePrivateKey(b)
		if err != nil {
			return "", fmt.Errorf("parse key %s: %w (remove it to get a new one)", path, err)
		}
		if err := os.Chmod(path, 0o600); err != nil {
			return "", fmt.Errorf("chmod key %s: %w", path, err)
		}
		pub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))) + " kubeforge-harness"
		return pub, atomicfile.Write(path+".pub", []byte(pub+"\n"), 0o644)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read key %s: %w", path, err)
	}
	pubKey, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "kubeforge-harness")
	if err != nil {
		return "", fmt.Errorf("marshal key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pubKey)
	if err != nil {
		return "", fmt.Errorf("marshal public key: %w", err)
	}
	if err := atomicfile.Write(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return "", err
	}
	pub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " kubeforge-harness"
	return pub, atomicfile.Write(path+".pub", []byte(pub+"\n"), 0o644)
}

// HostKey is one SSH host key of a node.
type HostKey struct {
	Type string // ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa
	Key  string // base64
}

// parseHostKeys reads "[host] type base64 [comment]" lines (ssh-keyscan output, or .pub files when host is
// false) and returns the keys.
func parseHostKeys(text string, withHost bool) []HostKey {
	var out []HostKey
	for _, l := range lines(text) {
		if strings.HasPrefix(l, "#") {
			continue
		}
		f := strings.Fields(l)
		if withHost {
			if len(f) < 3 {
				continue
			}
			f = f[1:]
		}
		if len(f) < 2 {
			continue
		}
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(f[0] + " " + f[1])); err != nil {
			continue
		}
		out = append(out, HostKey{Type: f[0], Key: f[1]})
	}
	return out
}

// knownHostsFile renders a known_hosts file for the nodes.
func knownHostsFile(keys map[string][]HostKey, order []string) []byte {
	var b bytes.Buffer
	b.WriteString("# kubeforge test harness: host keys collected with ssh-keyscan after boot and checked against\n")
	b.WriteString("# the keys read from each node's /etc/ssh over docker exec.\n")
	for _, addr := range order {
		for _, k := range keys[addr] {
			fmt.Fprintf(&b, "%s %s %s\n", addr, k.Type, k.Key)
		}
	}
	return b.Bytes()
}

// The inventory document the harness writes (the kubeforge.io/v1alpha1 Cluster format of inventory/types.go).
type invDoc struct {
	APIVersion string     `yaml:"apiVersion"`
	Kind       string     `yaml:"kind"`
	Cluster    invCluster `yaml:"cluster"`
	SSH        invSSH     `yaml:"ssh"`
	Hosts      []invHost  `yaml:"hosts"`
}

type invCluster struct {
	Name              string     `yaml:"name"`
	KubernetesVersion string     `yaml:"kubernetesVersion"`
	AllowPreRelease   bool       `yaml:"allowPreRelease,omitempty"`
	PodSubnet         string     `yaml:"podSubnet"`
	ServiceSubnet     string     `yaml:"serviceSubnet"`
	Artifacts         string     `yaml:"artifacts,omitempty"`
	Kubelet           invKubelet `yaml:"kubelet"`
}

type invKubelet struct {
	ResolvConf string         `yaml:"resolvConf,omitempty"`
	Config     map[string]any `yaml:"config,omitempty"`
}

// sharedDiskKubelet turns off the kubelet's disk-based image garbage
// collection and eviction: every harness node is a container on this
// machine's one disk, so a node's "disk full" measures the machine (other
// nodes, build caches), not the node, and would make it delete the images
// kubeforge imported and evict the tests' pods.
var sharedDiskKubelet = map[string]any{
	"imageGCHighThresholdPercent": 100,
	"imageGCLowThresholdPercent":  99,
	"evictionHard": map[string]string{
		"memory.available": "100Mi", "nodefs.available": "1%", "nodefs.inodesFree": "1%", "imagefs.available": "1%",
	},
}

type invSSH struct {
	User          string   `yaml:"user"`
	IdentityFiles []string `yaml:"identityFiles"`
	KnownHosts    []string `yaml:"knownHosts"`
}

type invHost struct {
	Name    string   `yaml:"name"`
	Address string   `yaml:"address"`
	Roles   []string `yaml:"roles"`
}

// inventoryYAML renders c's kubeforge inventory.
func inventoryYAML(c *Cluster) ([]byte, error) {
	version := KubernetesVersion
	if c.Artifacts != "" {
		// The inventory asks for the version the artifacts were built for.
		if b, err := os.ReadFile(filepath.Join(c.Artifacts, "VERSION")); err == nil {
			version = strings.TrimSpace(string(b))
		}
	}
	d := invDoc{
		APIVersion: "kubeforge.io/v1alpha1",
		Kind:       "Cluster",
		Cluster: invCluster{
			Name: "harness", KubernetesVersion: version,
			// A pre-release build (v1.38.0-beta.0) is installed only when the inventory says so.
			AllowPreRelease: strings.Contains(version, "-"),
			PodSubnet:       "10.244.0.0/16", ServiceSubnet: "10.96.0.0/12",
			Artifacts: c.Artifacts,
			Kubelet:   invKubelet{ResolvConf: PodResolvConf, Config: sharedDiskKubelet},
		},
		SSH: invSSH{User: c.User, IdentityFiles: []string{c.KeyFile}, KnownHosts: []string{c.KnownHosts}},
	}
	resolved := true
	for _, n := range c.Nodes {
		d.Hosts = append(d.Hosts, invHost{Name: n.Name, Address: n.Address, Roles: n.Roles})
		resolved = resolved && n.Variant == "resolved"
	}
	if resolved {
		// Hosts that run systemd-resolved: kubeforge finds its resolv.conf itself.
		d.Cluster.Kubelet.ResolvConf = ""
	}
	var b bytes.Buffer
	nets := networkList(c.Networks)
	if nets == "" {
		nets = c.Network + " " + c.Subnet
	}
	fmt.Fprintf(&b, "# kubeforge inventory for the test harness %q (docker network %s).\n", c.Instance, nets)
	if c.Routed() {
		b.WriteString("# The subnets are routed through the harness machine: no two of them share an L2 segment.\n")
	}
	b.WriteString("# Written by `go run ./test/harness up`; `go run ./test/harness down` removes the nodes.\n")
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(d); err != nil {
		return nil, fmt.Errorf("encode inventory: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode inventory: %w", err)
	}
	return b.Bytes(), nil
}

// sshConfig renders an ssh_config with one Host entry per node (ssh -F DIR/ssh_config node1).
func sshConfig(c *Cluster) []byte {
	var b bytes.Buffer
	b.WriteString("# kubeforge test harness: ssh -F " + filepath.Join(c.Dir, SSHConfig) + " node1\n")
	for _, n := range c.Nodes {
		fmt.Fprintf(&b, "\nHost %s\n  HostName %s\n  User %s\n  IdentityFile %s\n  IdentitiesOnly yes\n  UserKnownHostsFile %s\n  StrictHostKeyChecking yes\n",
			n.Name, n.Address, c.User, c.KeyFile, c.KnownHosts)
	}
	return b.Bytes()
}

// saveState writes c to DIR/harness.json.
func saveState(c *Cluster) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	return atomicfile.Write(filepath.Join(c.Dir, StateFile), append(b, '\n'), 0o644)
}

// Load reads the cluster that Up saved in dir. It returns an error wrapping fs.ErrNotExist when there is none.
func Load(dir string) (*Cluster, error) {
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		return nil, fmt.Errorf("load harness state: %w", err)
	}
	var c Cluster
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("load harness state %s: %w", filepath.Join(dir, StateFile), err)
	}
	return &c, nil
}
