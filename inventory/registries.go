package inventory

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
)

// Registry is how every node's containerd pulls from one upstream registry
// (docs/registries.md): the mirrors it tries in order, before the upstream
// itself. The inventory maps the upstream, as image names spell it
// ("registry.k8s.io", "docker.io", "registry.local:5000"), to its Registry.
type Registry struct {
	Mirrors []Mirror `yaml:"mirrors"`
}

// Mirror is one registry containerd pulls through instead of the upstream.
type Mirror struct {
	// URL is https://host[:port][/path], or http:// with Insecure.
	URL string `yaml:"url"`
	// CA is a local PEM file of the certificates that sign the mirror's;
	// ClientCertificate and ClientKey a client certificate it asks for. Paths
	// are relative to the inventory file.
	CA                string `yaml:"ca"`
	ClientCertificate string `yaml:"clientCertificate"`
	ClientKey         string `yaml:"clientKey"`
	// Credentials name where "user:password" for the mirror is read from.
	Credentials *Credentials `yaml:"credentials"`
	// Insecure allows plain http, or https without verifying the mirror's
	// certificate.
	Insecure bool `yaml:"insecure"`

	// CAData, CertData and KeyData are the files' contents, and Auth the
	// credentials ("user:password"), read once when the inventory is validated.
	// Auth and KeyData are secrets: never printed.
	CAData, CertData, KeyData []byte `yaml:"-" json:"-"`
	Auth                      string `yaml:"-" json:"-"`
}

// Credentials say where a mirror's "user:password" is: an environment
// variable or a file (relative to the inventory file), never the inventory.
type Credentials struct {
	Env  string `yaml:"env"`
	File string `yaml:"file"`
}

// RegistryNames are the upstreams of cluster.registries, sorted.
func (inv *Inventory) RegistryNames() []string {
	names := make([]string, 0, len(inv.Cluster.Registries))
	for n := range inv.Cluster.Registries {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// envNameRe is an environment variable's name.
var envNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// mirrorURLRe is what kubeforge writes into containerd's hosts.toml as a
// host: no quotes, backslashes, spaces or control characters.
var mirrorURLRe = regexp.MustCompile(`^https?://[A-Za-z0-9._~:/\[\]%-]+$`)

// registries checks cluster.registries and reads the files and credentials
// the mirrors name.
func (c *checker) registries(at path) {
	for _, name := range c.inv.RegistryNames() {
		reg := c.inv.Cluster.Registries[name]
		rat := at.with(name)
		if msg := checkHostPort(name); msg != "" {
			c.errorf(rat, "name the upstream as image names spell it: registry.k8s.io, docker.io, registry.local:5000",
				"invalid registry %+.80q: %s", name, msg)
		}
		if len(reg.Mirrors) == 0 {
			c.errorf(rat, "list at least one mirror under mirrors:, or remove the registry", "registry %s has no mirrors", name)
		}
		seen := map[string]bool{}
		for i := range reg.Mirrors {
			m := &reg.Mirrors[i]
			mat := rat.with("mirrors", i)
			u := c.mirrorURL(mat.with("url"), m)
			if u != nil && seen[u.Host] {
				c.errorf(mat.with("url"), "list each mirror host once per registry", "mirror %s is listed twice for %s", u.Host, name)
			}
			if u != nil {
				seen[u.Host] = true
			}
			c.mirrorFiles(mat, m)
			c.mirrorCredentials(mat.with("credentials"), m)
		}
		c.inv.Cluster.Registries[name] = reg
	}
}

func (c *checker) mirrorURL(at path, m *Mirror) *url.URL {
	const hint = "such as https://mirror.example.com:5000 (http:// needs insecure: true)"
	u, err := url.Parse(m.URL)
	switch {
	case m.URL == "":
		c.errorf(at, hint, "mirror url is missing")
		return nil
	case err != nil:
		c.errorf(at, hint, "invalid mirror url %+.80q: %v", m.URL, err)
		return nil
	case u.User != nil:
		// The credentials would be written where they are shown.
		c.errorf(at, "put the user and password in credentials (env or file), never in the url", "mirror url has credentials in it")
		return nil
	case u.Scheme != "https" && u.Scheme != "http" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || !mirrorURLRe.MatchString(m.URL):
		c.errorf(at, hint, "invalid mirror url %+.80q", m.URL)
		return nil
	case u.Scheme == "http" && !m.Insecure:
		c.errorf(at, "use https, or set insecure: true for a mirror that speaks plain http", "mirror url %s is plain http", m.URL)
	}
	if msg := checkHostPort(u.Host); msg != "" {
		c.errorf(at, hint, "invalid mirror url %+.80q: %s", m.URL, msg)
		return nil
	}
	return u
}

func (c *checker) mirrorFiles(at path, m *Mirror) {
	read := func(field, file string) []byte {
		if msg := checkReadableFile(file); msg != "" {
			c.errorf(at.with(field), "paths are relative to the inventory file's directory", "cannot read mirror %s: %s", field, msg)
			return nil
		}
		data, err := os.ReadFile(file)
		if err != nil {
			c.errorf(at.with(field), "", "cannot read mirror %s: %v", field, err)
			return nil
		}
		return data
	}
	if m.CA != "" {
		if data := read("ca", m.CA); data != nil {
			if n := pemCertificates(data); n == 0 {
				c.errorf(at.with("ca"), "a PEM file of one or more CA certificates", "mirror ca %s holds no PEM certificate", m.CA)
			} else {
				m.CAData = data
			}
		}
	}
	switch {
	case m.ClientCertificate == "" && m.ClientKey == "":
	case m.ClientCertificate == "" || m.ClientKey == "":
		c.errorf(c.present(at.with("clientCertificate"), at.with("clientKey")), "set both clientCertificate and clientKey, or neither",
			"a mirror's client certificate needs its key and the key its certificate")
	default:
		cert, key := read("clientCertificate", m.ClientCertificate), read("clientKey", m.ClientKey)
		if cert == nil || key == nil {
			return
		}
		if _, err := tls.X509KeyPair(cert, key); err != nil {
			// tls names what does not match, never the key.
			c.errorf(at.with("clientCertificate"), "a PEM certificate and the PEM private key it was issued for",
				"mirror client certificate %s and key %s: %v", m.ClientCertificate, m.ClientKey, err)
			return
		}
		m.CertData, m.KeyData = cert, key
	}
	if m.Insecure && m.CA != "" && strings.HasPrefix(m.URL, "https://") {
		c.warnf(at.with("insecure"), "remove insecure: true to verify the mirror against ca", "mirror %s has a ca and insecure: true: its certificate is not verified", m.URL)
	}
}

// pemCertificates counts the X.509 certificates of a PEM file.
func pemCertificates(data []byte) int {
	n := 0
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return n
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return 0
		}
		n++
	}
}

func (c *checker) mirrorCredentials(at path, m *Mirror) {
	cr := m.Credentials
	if cr == nil {
		return
	}
	const hint = "credentials: {env: NAME} or {file: path}, holding user:password"
	var raw, from string
	switch {
	case cr.Env != "" && cr.File != "":
		c.errorf(at, hint, "mirror credentials name both an environment variable and a file")
		return
	case cr.Env != "":
		if !envNameRe.MatchString(cr.Env) {
			c.errorf(at.with("env"), hint, "invalid environment variable name %+.80q", cr.Env)
			return
		}
		v, ok := os.LookupEnv(cr.Env)
		if !ok || v == "" {
			c.errorf(at.with("env"), "export "+cr.Env+"=user:password before running kubeforge", "environment variable %s (the mirror's credentials) is not set", cr.Env)
			return
		}
		raw, from = v, "environment variable "+cr.Env
	case cr.File != "":
		if msg := checkReadableFile(cr.File); msg != "" {
			c.errorf(at.with("file"), "paths are relative to the inventory file's directory", "cannot read mirror credentials: %s", msg)
			return
		}
		data, err := os.ReadFile(cr.File)
		if err != nil {
			c.errorf(at.with("file"), "", "cannot read mirror credentials: %v", err)
			return
		}
		raw, from = string(data), "file "+cr.File
	default:
		c.errorf(at, hint, "mirror credentials name neither an environment variable nor a file")
		return
	}
	raw = strings.TrimRight(raw, "\r\n")
	user, pass, ok := strings.Cut(raw, ":")
	if !ok || user == "" || pass == "" || strings.ContainsAny(raw, "\r\n") {
		// Never the value: only its shape.
		c.errorf(at, "one line user:password", "the mirror credentials in %s are not one line of user:password", from)
		return
	}
	m.Auth = raw
}

// String keeps a mirror's secrets out of any print.
func (m Mirror) String() string { return fmt.Sprintf("mirror %s", m.URL) }
