package tasks

import (
	"context"
	"fmt"
	"github.com/kubeforge/kubeforge/inventory"
	"os"
	"path/filepath"
	"time"

	"github.com/kubeforge/kubeforge/ssh"
)

// Connect dials the host (through its bastion, if any) and checks that it can
// run privileged commands: root, or passwordless sudo without a TTY.
func Connect(ctx context.Context, env *Env, h *Host) error {
	if h.Client != nil {
		return nil
	}
	cfg := env.SSHConfig(h)
	c, err := env.Pool.Dial(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", h.Address, err)
	}
	if err := c.CheckSudo(ctx); err != nil {
		return err
	}
	h.Client = c
	return nil
}

// SSHConfig turns the inventory's SSH settings for h into an ssh.Config.
func (e *Env) SSHConfig(h *Host) ssh.Config {
	s := e.Inv.EffectiveSSH(h.Host)
	known := append([]string(nil), s.KnownHosts...)
	if home, err := os.UserHomeDir(); err == nil && len(s.KnownHosts) == 0 {
		known = append(known, filepath.Join(home, ".ssh", "known_hosts"))
	}
	own := filepath.Join(e.StateDir, "known_hosts")
	known = append(known, own)
	cfg := ssh.Config{
		Host:              h.Name,
		Address:           h.Address,
		Port:              s.Port,
		User:              s.User,
		IdentityFiles:     s.IdentityFiles,
		UseAgent:          s.UseAgent != nil && *s.UseAgent,
		Password:          e.password(s.PasswordEnv, s.PasswordPrompt, s.User, h.Address),
		Passphrase:        e.passphrase(s.PassphraseEnv),
		KnownHostsFiles:   known,
		KnownHostsWrite:   own,
		AcceptNewHostKeys: e.Opts.AcceptNewHostKeys,
		ConnectTimeout:    s.ConnectTimeout.Duration,
		KeepAlive:         15 * time.Second,
		UseSSHConfig:      true,
		Logger:            h.Log,
	}
	if b := s.Bastion; b != nil {
		cfg.Bastion = &ssh.Config{
			Host:              "bastion " + b.Address,
			Address:           b.Address,
			Port:              b.Port,
			User:              b.User,
			IdentityFiles:     b.IdentityFiles,
			UseAgent:          b.UseAgent != nil && *b.UseAgent,
			Password:          e.password(b.PasswordEnv, b.PasswordPrompt, b.User, b.Address),
			Passphrase:        cfg.Passphrase,
			KnownHostsFiles:   known,
			KnownHostsWrite:   own,
			AcceptNewHostKeys: e.Opts.AcceptNewHostKeys,
			ConnectTimeout:    cfg.ConnectTimeout,
			KeepAlive:         cfg.KeepAlive,
			UseSSHConfig:      true,
			// One bastion connection serves every host behind it: it logs to the run log.
			Logger: e.Log.With("bastion", b.Address),
		}
	}
	return cfg
}

// PasswordKey names a password the command line resolved for a prompt.
func PasswordKey(user, addr string) string { return "prompt:" + user + "@" + addr }

// PasswordPrompts lists the passwords the inventory asks to be prompted for,
// one per user@address (hosts and bastions), so each is asked once.
func PasswordPrompts(inv *inventory.Inventory) []string {
	seen := map[string]bool{}
	var out []string
	add := func(user, addr string) {
		k := PasswordKey(user, addr)
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	for _, h := range inv.Hosts {
		s := inv.EffectiveSSH(h)
		if s.PasswordPrompt && s.PasswordEnv == "" {
			add(s.User, h.Address)
		}
		if b := s.Bastion; b != nil && b.PasswordPrompt && b.PasswordEnv == "" {
			add(b.User, b.Address)
		}
	}
	return out
}

func (e *Env) password(envVar string, prompt bool, user, addr string) string {
	if envVar != "" {
		return os.Getenv(envVar)
	}
	if prompt {
		return e.Opts.Passwords[PasswordKey(user, addr)]
	}
	return ""
}

func (e *Env) passphrase(envVar string) func(string) ([]byte, error) {
	if envVar == "" {
		return nil
	}
	return func(file string) ([]byte, error) {
		v, ok := os.LookupEnv(envVar)
		if !ok {
			return nil, fmt.Errorf("identity file %s is encrypted and %s is not set", file, envVar)
		}
		return []byte(v), nil
	}
}
