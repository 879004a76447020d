package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/kubeforge/kubeforge/inventory"
)

// The ssh config aliases of the hosts the benchmark runs on.
const (
	aliasControlPlane = "cis-control-plane"
	aliasWorker       = "cis-worker"
	aliasBastion      = "cis-bastion"
)

// target is one host the benchmark runs on, under its ssh config alias.
type target struct {
	Alias string // aliasControlPlane or aliasWorker
	Host  string // the inventory's host name
}

// sshConfig renders an OpenSSH client config that reaches the inventory's first control plane as
// cis-control-plane and its first worker as cis-worker (the control plane again when it has no worker), with
// the inventory's user, port, identity files, known_hosts files (host keys are checked strictly) and bastion.
// Password logins are refused: the script runs ssh without a terminal.
func sshConfig(inv *inventory.Inventory) (string, []target, error) {
	cp := inv.FirstControlPlane()
	if cp == nil {
		return "", nil, errors.New("the inventory has no control plane")
	}
	worker := cp
	for _, h := range inv.Workers() {
		if !h.Remove {
			worker = h
			break
		}
	}
	var b strings.Builder
	b.WriteString("# Written by `go run ./test/cis ssh-config` (make cis) from " + inv.Path + ".\n")
	targets := []target{{aliasControlPlane, cp.Name}, {aliasWorker, worker.Name}}
	bastionWritten := false
	for _, t := range targets {
		h := inv.Host(t.Host)
		s := inv.EffectiveSSH(h)
		if s.PasswordEnv != "" || s.PasswordPrompt {
			return "", nil, fmt.Errorf("host %s: password logins are not supported here; give it an identity file or the agent", h.Name)
		}
		if bs := s.Bastion; bs != nil && !bastionWritten {
			if bs.PasswordEnv != "" || bs.PasswordPrompt {
				return "", nil, errors.New("bastion: password logins are not supported here; give it an identity file or the agent")
			}
			if err := writeHost(&b, aliasBastion, bs.Address, bs.Port, bs.User, bs.IdentityFiles, s.KnownHosts, ""); err != nil {
				return "", nil, fmt.Errorf("bastion: %w", err)
			}
			bastionWritten = true
		}
		jump := ""
		if s.Bastion != nil {
			jump = aliasBastion
		}
		if err := writeHost(&b, t.Alias, h.Address, h.Port, h.User, s.IdentityFiles, s.KnownHosts, jump); err != nil {
			return "", nil, fmt.Errorf("host %s: %w", h.Name, err)
		}
	}
	return b.String(), targets, nil
}

// writeHost appends one Host block. Without identity files ssh offers the agent's keys; without known_hosts
// files it reads its default ones.
func writeHost(b *strings.Builder, alias, address string, port int, user string, identities, knownHosts []string, jump string) error {
	fmt.Fprintf(b, "\nHost %s\n  HostName %s\n  Port %d\n  User %s\n", alias, address, port, user)
	fmt.Fprintf(b, "  BatchMode yes\n  StrictHostKeyChecking yes\n  LogLevel ERROR\n")
	if len(identities) > 0 {
		b.WriteString("  IdentitiesOnly yes\n")
	}
	for _, f := range identities {
		q, err := quotePath(f)
		if err != nil {
			return err
		}
		fmt.Fprintf(b, "  IdentityFile %s\n", q)
	}
	if len(knownHosts) > 0 {
		var qs []string
		for _, f := range knownHosts {
			q, err := quotePath(f)
			if err != nil {
				return err
			}
			qs = append(qs, q)
		}
		fmt.Fprintf(b, "  UserKnownHostsFile %s\n", strings.Join(qs, " "))
	}
	if jump != "" {
		fmt.Fprintf(b, "  ProxyJump %s\n", jump)
	}
	return nil
}

// quotePath quotes a file name for ssh_config: double quotes keep spaces, and "%%" keeps a "%" from being read
// as one of ssh's tokens. ssh_config has no escape for a double quote.
func quotePath(p string) (string, error) {
	if strings.ContainsAny(p, "\"\n") {
		return "", fmt.Errorf("file name %q: ssh_config cannot hold a double quote or a newline", p)
	}
	return `"` + strings.ReplaceAll(p, "%", "%%") + `"`, nil
}
