package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	"gopkg.in/yaml.v3"
)

// clientKey returns the key pair kubeforge authenticates with: read from path, or made there (0600,
// with path.pub) when it does not exist.
func clientKey(path string) (ssh.Signer, error) {
	if b, err := os.ReadFile(path); err == nil {
		s, err := ssh.ParsePrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("parse client key %s: %w", path, err)
		}
		return s, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read client key: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("make client key: %w", err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "fleetsim client key")
	if err != nil {
		return nil, fmt.Errorf("encode client key: %w", err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, fmt.Errorf("make client key: %w", err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(blk), 0o600); err != nil {
		return nil, fmt.Errorf("write client key: %w", err)
	}
	if err := os.WriteFile(path+".pub", ssh.MarshalAuthorizedKey(s.PublicKey()), 0o644); err != nil {
		return nil, fmt.Errorf("write client key: %w", err)
	}
	return s, nil
}

// newSigner makes an ed25519 key (a host key).
func newSigner() (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return ssh.NewSignerFromKey(priv)
}

// knownHostsLine is the line OpenSSH and kubeforge expect for a host key at ip:port.
func knownHostsLine(ip string, port int, key ssh.PublicKey) string {
	return knownhosts.Line([]string{knownhosts.Normalize(net.JoinHostPort(ip, strconv.Itoa(port)))}, key)
}

// WriteKnownHosts writes one line per endpoint, so kubeforge verifies every host key strictly.
func (f *Fleet) WriteKnownHosts(path string) error {
	var b strings.Builder
	for _, e := range f.Endpoints {
		b.WriteString(knownHostsLine(e.IP.String(), e.Port, e.Key) + "\n")
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("write known_hosts: %w", err)
	}
	return nil
}

// inventoryFile is the layout of kubeforge's inventory (inventory.Inventory), written by field name.
type inventoryFile struct {
	APIVersion string          `yaml:"apiVersion"`
	Kind       string          `yaml:"kind"`
	Cluster    map[string]any  `yaml:"cluster"`
	SSH        inventorySSH    `yaml:"ssh"`
	Hosts      []inventoryHost `yaml:"hosts"`
}

type inventorySSH struct {
	User          string   `yaml:"user"`
	IdentityFiles []string `yaml:"identityFiles"`
	KnownHosts    []string `yaml:"knownHosts"`
}

type inventoryHost struct {
	Name            string   `yaml:"name"`
	Address         string   `yaml:"address"`
	InternalAddress string   `yaml:"internalAddress,omitempty"`
	Port            int      `yaml:"port,omitempty"`
	User            string   `yaml:"user,omitempty"`
	Roles           []string `yaml:"roles"`
}

func writeInventory(path string, inv inventoryFile) error {
	b, err := yaml.Marshal(inv)
	if err != nil {
		return fmt.Errorf("encode inventory: %w", err)
	}
	head := "# " + simulationNote + "\n"
	if err := os.WriteFile(path, append([]byte(head), b...), 0o644); err != nil {
		return fmt.Errorf("write inventory: %w", err)
	}
	return nil
}

// WriteInventory writes an inventory of the fleet for kubeforge: the recording's cluster settings
// (named fleetsim, with artifacts as given), the endpoints as hosts, the client key and known_hosts.
func (f *Fleet) WriteInventory(path, key, knownHosts, artifacts string) error {
	cl := maps.Clone(f.opts.Recording.Cluster)
	if cl == nil {
		cl = map[string]any{}
	}
	cl["name"] = "fleetsim"
	delete(cl, "artifacts")
	if artifacts != "" {
		cl["artifacts"] = artifacts
	}
	inv := inventoryFile{APIVersion: "kubeforge.io/v1alpha1", Kind: "Cluster", Cluster: cl,
		SSH: inventorySSH{User: f.opts.User, IdentityFiles: []string{key}, KnownHosts: []string{knownHosts}}}
	for _, e := range f.Endpoints {
		inv.Hosts = append(inv.Hosts, inventoryHost{Name: e.Name, Address: e.IP.String(), Port: e.Port, Roles: []string{e.Role}})
	}
	return writeInventory(path, inv)
}

// writeStubArtifacts writes the little of an artifacts directory that preflight reads on the
// workstation: VERSION and runtime/VERSIONS, from the recording (plus empty bin/ files, so the
// inventory check does not warn). It holds no binary: nothing is installed on a simulated host.
func writeStubArtifacts(dir string, rec *Recording) error {
	version, _ := rec.Cluster["kubernetesVersion"].(string)
	if rec.RuntimeVersions == "" || version == "" {
		return errors.New("the recording has no runtime versions or Kubernetes version for the stub artifacts")
	}
	files := map[string]string{"VERSION": version + "\n", "runtime/VERSIONS": rec.RuntimeVersions,
		"README":      simulationNote + "\nA stub: only what `kubeforge preflight` reads on the workstation.\n",
		"bin/kubelet": "", "bin/kubectl": "", "bin/kubeadm": ""}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("write stub artifacts: %w", err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return fmt.Errorf("write stub artifacts: %w", err)
		}
	}
	return nil
}

// EndpointStats is the JSON form of one endpoint's Stats.
type EndpointStats struct {
	Name         string   `json:"name"`
	Address      string   `json:"address"`
	Role         string   `json:"role"`
	Conns        int64    `json:"conns"`
	Handshakes   int64    `json:"handshakes"`
	Refused      int64    `json:"refused"`
	Failed       int64    `json:"failed"`
	AuthRejected int64    `json:"authRejected"`
	Commands     int64    `json:"commands"`
	Exact        int64    `json:"exact"`
	Normalised   int64    `json:"normalised"`
	Modelled     int64    `json:"modelled"`
	Unrecorded   int64    `json:"unrecorded"`
	MaxCmdBytes  int64    `json:"maxCmdBytes"`
	OverArgMax   int64    `json:"overArgMax"` // commands longer than a real sshd can exec (MAX_ARG_STRLEN)
	SFTPSessions int64    `json:"sftpSessions"`
	SFTPFiles    int64    `json:"sftpFiles"`
	SFTPBytes    int64    `json:"sftpBytes"`
	Samples      []string `json:"unrecordedSamples,omitempty"`
}

// Summary is what fleetsim prints on exit and on SIGUSR1.
type Summary struct {
	Note      string          `json:"note"`
	Endpoints int             `json:"endpoints"`
	UptimeS   float64         `json:"uptimeS"`
	CPUS      float64         `json:"cpuS"` // the simulator's own user+system CPU
	Total     EndpointStats   `json:"total"`
	Per       []EndpointStats `json:"perEndpoint"`
}

func (e *Endpoint) snapshot() EndpointStats {
	s := &e.Stats
	e.mu.Lock()
	samples := append([]string(nil), e.unrecorded...)
	e.mu.Unlock()
	return EndpointStats{Name: e.Name, Address: net.JoinHostPort(e.IP.String(), strconv.Itoa(e.Port)), Role: e.Role,
		Conns: s.Conns.Load(), Handshakes: s.Handshakes.Load(), Refused: s.Refused.Load(), Failed: s.Failed.Load(),
		AuthRejected: s.AuthRejected.Load(), Commands: s.Commands.Load(), Exact: s.Exact.Load(),
		Normalised: s.Normalised.Load(), Modelled: s.Modelled.Load(), Unrecorded: s.Unrecorded.Load(),
		MaxCmdBytes: s.MaxCmdBytes.Load(), OverArgMax: s.OverArgMax.Load(), SFTPSessions: s.SFTPSessions.Load(), SFTPFiles: s.SFTPFiles.Load(), SFTPBytes: s.SFTPBytes.Load(), Samples: samples}
}

// Summary returns every endpoint's statistics and their total.
func (f *Fleet) Summary() Summary {
	sum := Summary{Note: simulationNote, Endpoints: len(f.Endpoints), UptimeS: sinceS(f.started), CPUS: cpuSeconds()}
	t := &sum.Total
	t.Name = "total"
	for _, e := range f.Endpoints {
		s := e.snapshot()
		sum.Per = append(sum.Per, s)
		t.Conns += s.Conns
		t.Handshakes += s.Handshakes
		t.Refused += s.Refused
		t.Failed += s.Failed
		t.AuthRejected += s.AuthRejected
		t.Commands += s.Commands
		t.Exact += s.Exact
		t.Normalised += s.Normalised
		t.Modelled += s.Modelled
		t.Unrecorded += s.Unrecorded
		t.MaxCmdBytes = max(t.MaxCmdBytes, s.MaxCmdBytes)
		t.OverArgMax += s.OverArgMax
		t.SFTPSessions += s.SFTPSessions
		t.SFTPFiles += s.SFTPFiles
		t.SFTPBytes += s.SFTPBytes
		if len(t.Samples) < 10 {
			t.Samples = append(t.Samples, s.Samples...)
		}
	}
	return sum
}
