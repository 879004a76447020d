package harnesslib

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	"gopkg.in/yaml.v3"

	"github.com/kubeforge/kubeforge/inventory"
)

func TestOptionsRejectBadInput(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		want string
	}{
		{"zero nodes", Options{Nodes: 0}, "node count 0"},
		{"more control planes than nodes", Options{Nodes: 2, ControlPlanes: 3}, "control planes 3"},
		{"unknown user", Options{Nodes: 1, User: "admin"}, `user "admin"`},
		{"bad prefix", Options{Nodes: 1, NamePrefix: "Bad_Prefix"}, "name prefix"},
		{"subnet too small", Options{Nodes: 5, Subnet: "10.0.0.0/28"}, "too small for 5 nodes"},
		{"subnet not ipv4", Options{Nodes: 1, Subnet: "fd00::/64"}, "IPv4"},
		{"subnet host bits", Options{Nodes: 1, Subnet: "172.31.250.5/24"}, "host bits"},
		{"subnet garbage", Options{Nodes: 1, Subnet: "nope"}, "parse subnet"},
		{"negative subnets", Options{Nodes: 2, Subnets: -1}, "subnets -1: want 1..8"},
		{"too many subnets", Options{Nodes: 12, Subnets: 9}, "subnets 9: want 1..8"},
		{"more subnets than nodes", Options{Nodes: 2, Subnets: 3}, "at most one per node"},
		{"subnets past the address space", Options{Nodes: 2, Subnets: 2, Subnet: "255.255.255.0/24"}, "no room for 2 subnets"},
		{"routed subnet too small", Options{Nodes: 6, Subnets: 2, Subnet: "10.0.0.0/28"}, "too small for 6 nodes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.o.withDefaults()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("withDefaults() error = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestPlanAssignsFixedAddressesRolesAndNames(t *testing.T) {
	tests := []struct {
		name        string
		o           Options
		wantNetwork string
		wantAddrs   []string
		wantRoles   []string
		wantCtr     string
	}{
		{
			name: "defaults", o: Options{Nodes: 3},
			wantNetwork: "kubeforge-harness",
			wantAddrs:   []string{"172.31.250.11", "172.31.250.12", "172.31.250.13"},
			wantRoles:   []string{"control-plane", "worker", "worker"},
			wantCtr:     "kf-node1",
		},
		{
			name: "other prefix gets its own network", o: Options{Nodes: 2, ControlPlanes: 2, NamePrefix: "e2e", Subnet: "172.31.251.0/24"},
			wantNetwork: "kubeforge-harness-e2e",
			wantAddrs:   []string{"172.31.251.11", "172.31.251.12"},
			wantRoles:   []string{"control-plane", "control-plane"},
			wantCtr:     "e2e-node1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := tt.o.withDefaults()
			if err != nil {
				t.Fatal(err)
			}
			o.Dir = t.TempDir()
			c, err := plan(o)
			if err != nil {
				t.Fatal(err)
			}
			if c.Network != tt.wantNetwork {
				t.Errorf("network = %q, want %q", c.Network, tt.wantNetwork)
			}
			if c.Nodes[0].Container != tt.wantCtr {
				t.Errorf("container = %q, want %q", c.Nodes[0].Container, tt.wantCtr)
			}
			if !strings.HasSuffix(c.Gateway, ".1") {
				t.Errorf("gateway = %q, want .1", c.Gateway)
			}
			for i, n := range c.Nodes {
				if n.Address != tt.wantAddrs[i] || n.Roles[0] != tt.wantRoles[i] {
					t.Errorf("node %d = %s %v, want %s %s", i, n.Address, n.Roles, tt.wantAddrs[i], tt.wantRoles[i])
				}
			}
		})
	}
}

func TestPlanSpreadsNodesOverRoutedSubnets(t *testing.T) {
	tests := []struct {
		name         string
		o            Options
		wantNetworks []Network
		wantNodes    []Node // Name, Address, Network, Gateway, Roles
	}{
		{
			name: "one subnet is the one network", o: Options{Nodes: 2, NamePrefix: "kfnet", Subnet: "172.31.200.0/24"},
			wantNetworks: []Network{{Name: "kubeforge-harness-kfnet", Subnet: "172.31.200.0/24", Gateway: "172.31.200.1"}},
			wantNodes: []Node{
				{Name: "node1", Address: "172.31.200.11", Network: "kubeforge-harness-kfnet", Gateway: "172.31.200.1", Roles: []string{"control-plane"}},
				{Name: "node2", Address: "172.31.200.12", Network: "kubeforge-harness-kfnet", Gateway: "172.31.200.1", Roles: []string{"worker"}},
			},
		},
		{
			name: "control planes and workers on both subnets", o: Options{Nodes: 5, ControlPlanes: 3, Subnets: 2, NamePrefix: "kfnet", Subnet: "172.31.200.0/24"},
			wantNetworks: []Network{
				{Name: "kubeforge-harness-kfnet-1", Subnet: "172.31.200.0/24", Gateway: "172.31.200.1"},
				{Name: "kubeforge-harness-kfnet-2", Subnet: "172.31.201.0/24", Gateway: "172.31.201.1"},
			},
			wantNodes: []Node{
				{Name: "node1", Address: "172.31.200.11", Network: "kubeforge-harness-kfnet-1", Gateway: "172.31.200.1", Roles: []string{"control-plane"}},
				{Name: "node2", Address: "172.31.201.12", Network: "kubeforge-harness-kfnet-2", Gateway: "172.31.201.1", Roles: []string{"control-plane"}},
				{Name: "node3", Address: "172.31.200.13", Network: "kubeforge-harness-kfnet-1", Gateway: "172.31.200.1", Roles: []string{"control-plane"}},
				{Name: "node4", Address: "172.31.201.14", Network: "kubeforge-harness-kfnet-2", Gateway: "172.31.201.1", Roles: []string{"worker"}},
				{Name: "node5", Address: "172.31.200.15", Network: "kubeforge-harness-kfnet-1", Gateway: "172.31.200.1", Roles: []string{"worker"}},
			},
		},
		{
			name: "subnets follow each other at the first one's size", o: Options{Nodes: 3, Subnets: 3, Network: "n", Subnet: "10.8.0.0/23"},
			wantNetworks: []Network{
				{Name: "n-1", Subnet: "10.8.0.0/23", Gateway: "10.8.0.1"},
				{Name: "n-2", Subnet: "10.8.2.0/23", Gateway: "10.8.2.1"},
				{Name: "n-3", Subnet: "10.8.4.0/23", Gateway: "10.8.4.1"},
			},
			wantNodes: []Node{
				{Name: "node1", Address: "10.8.0.11", Network: "n-1", Gateway: "10.8.0.1", Roles: []string{"control-plane"}},
				{Name: "node2", Address: "10.8.2.12", Network: "n-2", Gateway: "10.8.2.1", Roles: []string{"worker"}},
				{Name: "node3", Address: "10.8.4.13", Network: "n-3", Gateway: "10.8.4.1", Roles: []string{"worker"}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := tt.o.withDefaults()
			if err != nil {
				t.Fatal(err)
			}
			o.Dir = t.TempDir()
			c, err := plan(o)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(c.Networks, tt.wantNetworks) {
				t.Errorf("networks = %+v, want %+v", c.Networks, tt.wantNetworks)
			}
			if c.Network != tt.wantNetworks[0].Name || c.Subnet != tt.wantNetworks[0].Subnet || c.Gateway != tt.wantNetworks[0].Gateway {
				t.Errorf("first network = %s %s %s, want %+v", c.Network, c.Subnet, c.Gateway, tt.wantNetworks[0])
			}
			if c.Routed() != (len(tt.wantNetworks) > 1) {
				t.Errorf("Routed() = %v with %d networks", c.Routed(), len(tt.wantNetworks))
			}
			if len(c.Nodes) != len(tt.wantNodes) {
				t.Fatalf("%d nodes, want %d", len(c.Nodes), len(tt.wantNodes))
			}
			for i, n := range c.Nodes {
				w := tt.wantNodes[i]
				if n.Name != w.Name || n.Address != w.Address || n.Network != w.Network || n.Gateway != w.Gateway || !slices.Equal(n.Roles, w.Roles) {
					t.Errorf("node %d = %s %s %s gw %s %v, want %s %s %s gw %s %v", i, n.Name, n.Address, n.Network, n.Gateway, n.Roles,
						w.Name, w.Address, w.Network, w.Gateway, w.Roles)
				}
			}
			// The inventory names each node by the address it has on its own subnet.
			b, err := inventoryYAML(c)
			if err != nil {
				t.Fatal(err)
			}
			var inv inventory.Inventory
			if err := yaml.Unmarshal(b, &inv); err != nil {
				t.Fatal(err)
			}
			for i, h := range inv.Hosts {
				if h.Name != tt.wantNodes[i].Name || h.Address != tt.wantNodes[i].Address {
					t.Errorf("inventory host %d = %s %s, want %s %s", i, h.Name, h.Address, tt.wantNodes[i].Name, tt.wantNodes[i].Address)
				}
			}
		})
	}
}

func TestForwardRulesJoinEveryPairOfBridgesAndParseBack(t *testing.T) {
	c := &Cluster{Instance: "kfnet", Networks: []Network{{Bridge: "br-aaaaaaaaaaaa"}, {Bridge: "br-bbbbbbbbbbbb"}, {Bridge: "br-cccccccccccc"}}}
	rules := forwardRules(c)
	if len(rules) != 6 {
		t.Fatalf("forwardRules = %v, want 6 (every ordered pair)", rules)
	}
	// iptables -S as it prints the chain: the fence, other instances' rules (one whose name extends ours), ours.
	var listing strings.Builder
	listing.WriteString("-N DOCKER-USER\n-A DOCKER-USER -i br-+ ! -o br-+ -j DROP\n")
	listing.WriteString(`-A DOCKER-USER -i br-aaaaaaaaaaaa -o br-bbbbbbbbbbbb -m comment --comment "kubeforge.harness.instance=kfnet2" -j ACCEPT` + "\n")
	listing.WriteString(`-A DOCKER-USER -i br-aaaaaaaaaaaa -o br-bbbbbbbbbbbb -m comment --comment "kubeforge.harness.instance=kfnet" -j DROP` + "\n")
	for _, r := range rules {
		listing.WriteString("-A DOCKER-USER")
		for _, a := range r.args("kfnet") {
			if strings.HasPrefix(a, LabelInstance) {
				a = `"` + a + `"`
			}
			listing.WriteString(" " + a)
		}
		listing.WriteString("\n")
	}
	listing.WriteString("-A DOCKER-USER -j RETURN\n")
	got := parseForwardRules(listing.String(), "kfnet")
	if !slices.Equal(got, rules) {
		t.Errorf("parseForwardRules = %v, want exactly %v", got, rules)
	}
	if other := parseForwardRules(listing.String(), "kf"); len(other) != 0 {
		t.Errorf("instance kf found rules %v of others", other)
	}
}

func TestInventoryIsAValidKubeforgeInventory(t *testing.T) {
	b := renderedInventory(t, Options{Nodes: 3, ControlPlanes: 1, User: "kube", Artifacts: "rel/artifacts", Dir: t.TempDir()})
	var inv inventory.Inventory
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true) // every field the harness writes must exist in inventory/types.go
	if err := dec.Decode(&inv); err != nil {
		t.Fatalf("decode inventory:\n%s\nerror: %v", b, err)
	}
	if inv.APIVersion != inventory.APIVersion || inv.Kind != inventory.Kind {
		t.Errorf("apiVersion/kind = %s/%s", inv.APIVersion, inv.Kind)
	}
	if inv.Cluster.KubernetesVersion != "v1.37.2" || inv.Cluster.Kubelet.ResolvConf != PodResolvConf {
		t.Errorf("cluster = %+v", inv.Cluster)
	}
	if !filepath.IsAbs(inv.Cluster.Artifacts) || !strings.HasSuffix(inv.Cluster.Artifacts, "rel/artifacts") {
		t.Errorf("artifacts = %q, want an absolute path", inv.Cluster.Artifacts)
	}
	if inv.SSH.User != "kube" || len(inv.SSH.IdentityFiles) != 1 || len(inv.SSH.KnownHosts) != 1 {
		t.Errorf("ssh = %+v", inv.SSH)
	}
	if len(inv.ControlPlanes()) != 1 || len(inv.Workers()) != 2 || inv.FirstControlPlane().Name != "node1" {
		t.Errorf("roles: %d control planes, %d workers", len(inv.ControlPlanes()), len(inv.Workers()))
	}
}

func TestEnsureKeyCreatesPrivateKeyAndReusesIt(t *testing.T) {
	path := filepath.Join(t.TempDir(), KeyFile)
	pub1, err := ensureKey(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key mode = %v, want 0600", st.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		t.Fatalf("parse key: %v", err)
	}
	if signer.PublicKey().Type() != ssh.KeyAlgoED25519 {
		t.Errorf("key type = %s", signer.PublicKey().Type())
	}
	pub2, err := ensureKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if pub1 != pub2 {
		t.Errorf("second call made a new key: %q != %q", pub1, pub2)
	}
}

func TestKnownHostsFileVerifiesScannedKeysAndRejectsOthers(t *testing.T) {
	good := newHostKey(t)
	bad := newHostKey(t)
	scan := "# 172.31.250.11:22 SSH-2.0-OpenSSH_9.2\n172.31.250.11 " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(good))) + "\n"
	keys := parseHostKeys(scan, true)
	if len(keys) != 1 {
		t.Fatalf("parsed %d keys from %q", len(keys), scan)
	}
	path := filepath.Join(t.TempDir(), KnownHosts)
	if err := os.WriteFile(path, knownHostsFile(map[string][]HostKey{"172.31.250.11": keys}, []string{"172.31.250.11"}), 0o644); err != nil {
		t.Fatal(err)
	}
	cb, err := knownhosts.New(path)
	if err != nil {
		t.Fatal(err)
	}
	addr := &net.TCPAddr{IP: net.ParseIP("172.31.250.11"), Port: 22}
	if err := cb("172.31.250.11:22", addr, good); err != nil {
		t.Errorf("known host key rejected: %v", err)
	}
	if err := cb("172.31.250.11:22", addr, bad); err == nil {
		t.Error("a different host key was accepted")
	}
	if err := cb("172.31.250.12:22", &net.TCPAddr{IP: net.ParseIP("172.31.250.12"), Port: 22}, good); err == nil {
		t.Error("the key was accepted for another address")
	}
}

func TestParseHostKeysSkipsGarbage(t *testing.T) {
	got := parseHostKeys("# comment\nnot a key\nssh-ed25519 !!!notbase64\n", false)
	if len(got) != 0 {
		t.Errorf("parsed %v from garbage", got)
	}
}

func newHostKey(t *testing.T) ssh.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestInventoryOfAPreReleaseBuildAllowsThePreRelease(t *testing.T) {
	for _, tc := range []struct{ version, want string }{
		{"v1.38.0-beta.0", "true"},
		{"v1.35.4", "false"},
	} {
		t.Run(tc.version, func(t *testing.T) {
			artifacts := t.TempDir()
			if err := os.WriteFile(filepath.Join(artifacts, "VERSION"), []byte(tc.version+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			b := renderedInventory(t, Options{Nodes: 2, ControlPlanes: 1, Artifacts: artifacts, Dir: t.TempDir()})
			var inv inventory.Inventory
			if err := yaml.Unmarshal(b, &inv); err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(inv.Cluster.AllowPreRelease); inv.Cluster.KubernetesVersion != tc.version || got != tc.want {
				t.Errorf("kubernetesVersion %s allowPreRelease %s, want %s %s", inv.Cluster.KubernetesVersion, got, tc.version, tc.want)
			}
		})
	}
}

// renderedInventory is the inventory file the harness writes for o.
func renderedInventory(t *testing.T, o Options) []byte {
	t.Helper()
	o, err := o.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	c, err := plan(o)
	if err != nil {
		t.Fatal(err)
	}
	b, err := inventoryYAML(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
