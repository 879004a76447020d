package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubeforge/kubeforge/inventory"
)

// loadInventory writes an inventory with the given ssh block and hosts into a fresh directory holding the key
// and known_hosts files it names, and loads it.
func loadInventory(t *testing.T, sshBlock, hosts string) *inventory.Inventory {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"id_ed25519", "bastion key", "known_hosts"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	text := "apiVersion: kubeforge.io/v1alpha1\nkind: Cluster\ncluster:\n  name: c\n" + sshBlock + "hosts:\n" + hosts
	path := filepath.Join(dir, "inventory.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.Load(path)
	if err != nil {
		t.Fatalf("load inventory: %v\n%s", err, text)
	}
	return inv
}

const onePlusOne = `  - name: cp1
    address: 10.0.0.11
    roles: [control-plane]
  - name: w1
    address: 10.0.0.21
    user: kube
    port: 2222
    roles: [worker]
`

func TestSSHConfigReachesTheFirstControlPlaneAndWorkerAsTheInventorySays(t *testing.T) {
	inv := loadInventory(t, "ssh:\n  user: root\n  identityFiles: [id_ed25519]\n  knownHosts: [known_hosts]\n", onePlusOne)
	conf, targets, err := sshConfig(inv)
	if err != nil {
		t.Fatalf("sshConfig: %v", err)
	}
	if len(targets) != 2 || targets[0] != (target{aliasControlPlane, "cp1"}) || targets[1] != (target{aliasWorker, "w1"}) {
		t.Errorf("targets = %+v, want cp1 as %s and w1 as %s", targets, aliasControlPlane, aliasWorker)
	}
	dir := inv.Dir()
	cp, worker := hostBlock(t, conf, aliasControlPlane), hostBlock(t, conf, aliasWorker)
	for _, want := range []string{"HostName 10.0.0.11", "Port 22", "User root", "StrictHostKeyChecking yes", "BatchMode yes",
		"IdentitiesOnly yes", `IdentityFile "` + dir + `/id_ed25519"`, `UserKnownHostsFile "` + dir + `/known_hosts"`} {
		if !strings.Contains(cp, "  "+want+"\n") {
			t.Errorf("control plane block lacks %q:\n%s", want, cp)
		}
	}
	for _, want := range []string{"HostName 10.0.0.21", "Port 2222", "User kube"} {
		if !strings.Contains(worker, "  "+want+"\n") {
			t.Errorf("worker block lacks %q:\n%s", want, worker)
		}
	}
	if strings.Contains(conf, "ProxyJump") {
		t.Errorf("config jumps through a bastion the inventory has not:\n%s", conf)
	}
}

func TestSSHConfigUsesTheControlPlaneAsWorkerWhenThereIsNone(t *testing.T) {
	inv := loadInventory(t, "ssh:\n  identityFiles: [id_ed25519]\n", "  - name: cp1\n    address: 10.0.0.11\n    roles: [control-plane]\n")
	conf, targets, err := sshConfig(inv)
	if err != nil {
		t.Fatalf("sshConfig: %v", err)
	}
	if targets[1] != (target{aliasWorker, "cp1"}) {
		t.Errorf("worker target = %+v, want cp1", targets[1])
	}
	if w := hostBlock(t, conf, aliasWorker); !strings.Contains(w, "HostName 10.0.0.11\n") {
		t.Errorf("worker alias does not reach the control plane:\n%s", w)
	}
	if strings.Contains(conf, "UserKnownHostsFile") {
		t.Errorf("config names known_hosts files the inventory has not (ssh's defaults apply):\n%s", conf)
	}
}

func TestSSHConfigJumpsThroughTheBastionWithItsOwnKey(t *testing.T) {
	inv := loadInventory(t, "ssh:\n  identityFiles: [id_ed25519]\n  bastion:\n    address: 192.0.2.1\n    user: jump\n    identityFiles: [\"bastion key\"]\n", onePlusOne)
	conf, _, err := sshConfig(inv)
	if err != nil {
		t.Fatalf("sshConfig: %v", err)
	}
	b := hostBlock(t, conf, aliasBastion)
	for _, want := range []string{"HostName 192.0.2.1", "User jump", `IdentityFile "` + inv.Dir() + `/bastion key"`} {
		if !strings.Contains(b, "  "+want+"\n") {
			t.Errorf("bastion block lacks %q:\n%s", want, b)
		}
	}
	if n := strings.Count(conf, "Host "+aliasBastion+"\n"); n != 1 {
		t.Errorf("bastion written %d times, want once:\n%s", n, conf)
	}
	for _, a := range []string{aliasControlPlane, aliasWorker} {
		if !strings.Contains(hostBlock(t, conf, a), "  ProxyJump "+aliasBastion+"\n") {
			t.Errorf("%s does not jump through the bastion:\n%s", a, conf)
		}
	}
}

func TestSSHConfigRefusesPasswordLogins(t *testing.T) {
	t.Setenv("CIS_TEST_PASSWORD", "secret")
	inv := loadInventory(t, "ssh:\n  passwordEnv: CIS_TEST_PASSWORD\n", onePlusOne)
	if _, _, err := sshConfig(inv); err == nil || !strings.Contains(err.Error(), "password") {
		t.Errorf("sshConfig with a password login: err = %v, want a refusal naming the password", err)
	}
}

func TestQuotePathKeepsSpacesAndPercentSigns(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      bool
	}{
		{in: "/home/a b/key", want: `"/home/a b/key"`},
		{in: "/keys/100%/id", want: `"/keys/100%%/id"`},
		{in: `/keys/"q"`, err: true},
	} {
		got, err := quotePath(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("quotePath(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

// hostBlock returns the lines of conf's "Host alias" block.
func hostBlock(t *testing.T, conf, alias string) string {
	t.Helper()
	_, rest, ok := strings.Cut(conf, "\nHost "+alias+"\n")
	if !ok {
		t.Fatalf("no Host %s in\n%s", alias, conf)
	}
	block, _, _ := strings.Cut(rest, "\nHost ")
	return block
}
