package ssh

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kevinburke/ssh_config"
)

// Defaults applied to zero fields of Config and Limits.
const (
	DefaultPort           = 22
	DefaultUser           = "root"
	DefaultConnectTimeout = 10 * time.Second
	DefaultKeepAlive      = 15 * time.Second
	DefaultDials          = 10
	DefaultSessions       = 64
	DefaultUploads        = 8
)

// Config says how to reach one host. Zero values get defaults (port 22, user root, timeout 10s).
type Config struct {
	Host              string                            // inventory name, used in errors and logs
	Address           string                            // address or name to dial (an ssh_config alias when UseSSHConfig)
	Port              int                               // default 22
	User              string                            // default root
	IdentityFiles     []string                          // private key files
	UseAgent          bool                              // use SSH_AUTH_SOCK if set
	Password          string                            // already resolved by the caller (never logged)
	Passphrase        func(file string) ([]byte, error) // for encrypted keys; nil = none
	KnownHostsFiles   []string                          // files read to verify host keys; missing files are ignored
	KnownHostsWrite   string                            // file where accepted new keys are recorded (also read)
	AcceptNewHostKeys bool                              // trust on first use; a CHANGED key is always fatal
	ConnectTimeout    time.Duration                     // TCP connect + SSH handshake + auth; default 10s
	KeepAlive         time.Duration                     // default 15s; negative disables
	Bastion           *Config                           // jump host; one connection per distinct bastion
	UseSSHConfig      bool                              // honour ~/.ssh/config where fields are empty
	SSHConfigFile     string                            // the ssh_config file read when UseSSHConfig; default ~/.ssh/config
	SumsDir           string                            // where the host caches digests of large uploads; default SumsDir
	Logger            *slog.Logger                      // per-host logger; never receives secrets

	resolved bool // withDefaults already applied
}

// withDefaults returns a copy of c with ~/.ssh/config applied (when asked) and defaults filled in.
func (c Config) withDefaults() (Config, error) {
	if c.resolved {
		return c, nil
	}
	if c.UseSSHConfig {
		var err error
		if c, err = c.applySSHConfig(); err != nil {
			return c, err
		}
	}
	if c.Address == "" {
		c.Address = c.Host
	}
	if c.Address == "" {
		return c, fmt.Errorf("ssh config for host %q: no address", c.Host)
	}
	if c.Host == "" {
		c.Host = c.Address
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.Port < 0 || c.Port > 65535 {
		return c, fmt.Errorf("ssh config for host %s: invalid port %d", c.Host, c.Port)
	}
	if c.User == "" {
		c.User = DefaultUser
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = DefaultKeepAlive
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	base := c.Logger
	c.Logger = c.Logger.With("host", c.Host)
	if c.AcceptNewHostKeys && c.KnownHostsWrite == "" {
		return c, fmt.Errorf("ssh config for host %s: accepting new host keys needs a known_hosts file to write", c.Host)
	}
	if c.Bastion != nil {
		b := *c.Bastion
		if b.Host == "" {
			b.Host = "bastion " + b.Address
		}
		if len(b.KnownHostsFiles) == 0 {
			b.KnownHostsFiles = c.KnownHostsFiles
		}
		if b.KnownHostsWrite == "" {
			b.KnownHostsWrite = c.KnownHostsWrite
			b.AcceptNewHostKeys = b.AcceptNewHostKeys || c.AcceptNewHostKeys
		}
		if b.Logger == nil {
			b.Logger = base
		}
		if !b.UseSSHConfig {
			b.UseSSHConfig = c.UseSSHConfig
			b.SSHConfigFile = c.SSHConfigFile
		}
		resolved, err := b.withDefaults()
		if err != nil {
			return c, fmt.Errorf("bastion of %s: %w", c.Host, err)
		}
		c.Bastion = &resolved
	}
	c.resolved = true
	return c, nil
}

// addr is host:port to dial.
func (c *Config) addr() string { return net.JoinHostPort(c.Address, strconv.Itoa(c.Port)) }

// key identifies a connection: the same inventory host, user and address share one.
func (c *Config) key() string {
	k := c.Host + "|" + c.User + "@" + c.addr()
	if c.Bastion != nil {
		k += " via " + c.Bastion.key()
	}
	return k
}

// applySSHConfig fills empty fields from the user's ssh_config (HostName, User, Port, IdentityFile, ProxyJump).
func (c Config) applySSHConfig() (Config, error) {
	path := c.SSHConfigFile
	if path == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return c, nil // no home: nothing to honour
		}
		path = filepath.Join(home, ".ssh", "config")
	}
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read ssh config %s: %w", path, err)
	}
	sc, err := ssh_config.DecodeBytes(data)
	if err != nil {
		return c, fmt.Errorf("parse ssh config %s: %w", path, err)
	}
	alias := c.Address
	if alias == "" {
		alias = c.Host
	}
	get := func(key string) (string, error) {
		v, err := sc.Get(alias, key)
		if err != nil {
			return "", fmt.Errorf("read %s for %s from ssh config %s: %w", key, alias, path, err)
		}
		return v, nil
	}
	hostName, err := get("HostName")
	if err != nil {
		return c, err
	}
	if hostName != "" {
		c.Address = strings.ReplaceAll(hostName, "%h", alias)
	}
	if c.User == "" {
		if c.User, err = get("User"); err != nil {
			return c, err
		}
	}
	if c.Port == 0 {
		p, err := get("Port")
		if err != nil {
			return c, err
		}
		if p != "" {
			if c.Port, err = strconv.Atoi(p); err != nil {
				return c, fmt.Errorf("parse Port %q for %s in ssh config %s: %w", p, alias, path, err)
			}
		}
	}
	if len(c.IdentityFiles) == 0 {
		files, err := sc.GetAll(alias, "IdentityFile")
		if err != nil {
			return c, fmt.Errorf("read IdentityFile for %s from ssh config %s: %w", alias, path, err)
		}
		for _, f := range files {
			c.IdentityFiles = append(c.IdentityFiles, expandHome(f))
		}
	}
	if c.Bastion == nil {
		jump, err := get("ProxyJump")
		if err != nil {
			return c, err
		}
		if jump != "" && !strings.EqualFold(jump, "none") {
			b, err := parseJump(jump)
			if err != nil {
				return c, fmt.Errorf("parse ProxyJump %q for %s in ssh config %s: %w", jump, alias, path, err)
			}
			for x := b; x != nil; x = x.Bastion {
				x.UseSSHConfig = true
				x.SSHConfigFile = c.SSHConfigFile
				x.UseAgent = c.UseAgent
				x.Passphrase = c.Passphrase
			}
			c.Bastion = b
		}
	}
	return c, nil
}

// parseJump turns "[user@]host[:port][,...]" into a chain of bastions: the last hop is the outermost Config.
func parseJump(s string) (*Config, error) {
	var prev *Config
	for _, hop := range strings.Split(s, ",") {
		hop = strings.TrimSpace(strings.TrimPrefix(hop, "ssh://"))
		if hop == "" {
			return nil, fmt.Errorf("empty hop")
		}
		b := &Config{}
		if i := strings.LastIndex(hop, "@"); i >= 0 {
			b.User, hop = hop[:i], hop[i+1:]
		}
		if h, p, err := net.SplitHostPort(hop); err == nil {
			port, err := strconv.Atoi(p)
			if err != nil {
				return nil, fmt.Errorf("invalid port in %q", hop)
			}
			b.Address, b.Port = h, port
		} else {
			b.Address = hop
		}
		b.Host = "bastion " + b.Address
		b.Bastion = prev
		prev = b
	}
	return prev, nil
}

func expandHome(p string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, p[1:])
		}
	}
	return p
}
