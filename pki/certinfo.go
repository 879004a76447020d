package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"path"
	"path/filepath"
	"slices"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	certutil "k8s.io/client-go/util/cert"

	"github.com/kubeforge/kubeforge/inventory"
)

// CertInfo is one row of `kubeforge certs check-expiration`.
type CertInfo struct {
	Name     string // "ca", "apiserver", "admin.conf"
	Host     string // "" for cluster-wide CAs and the workstation's kubeconfigs
	File     string // where it lives (state dir path, or path on the node)
	Subject  string
	NotAfter time.Time
	Residual time.Duration // NotAfter - now; negative once expired
	CAName   string        // signing CA; "" for a CA
	IsCA     bool
	External bool // a CA whose key kubeforge does not hold
}

func info(name, host, file string, c *x509.Certificate, now time.Time) CertInfo {
	return CertInfo{
		Name: name, Host: host, File: file,
		Subject:  c.Subject.String(),
		NotAfter: c.NotAfter,
		Residual: c.NotAfter.Sub(now),
		IsCA:     c.IsCA,
		CAName:   caNameOfIssuer(c),
	}
}

// caNameOfIssuer maps an issuer back to one of the CAs by common name.
func caNameOfIssuer(c *x509.Certificate) string {
	if c.IsCA && c.Issuer.String() == c.Subject.String() {
		return ""
	}
	for _, s := range caSpecs {
		if c.Issuer.CommonName == s.CN {
			return s.Name
		}
	}
	return c.Issuer.CommonName
}

// Certificates lists the bundle's certificates as of now: the CAs, then the
// leaves of the workstation and of every host, in a stable order.
func (b *Bundle) Certificates() []CertInfo { return b.CertificatesAt(time.Now()) }

// CertificatesAt is Certificates with the residual time computed at now.
func (b *Bundle) CertificatesAt(now time.Time) []CertInfo {
	var out []CertInfo
	for _, s := range caSpecs {
		if kp := b.cas[s.Name]; kp != nil && kp.Cert != nil {
			ci := info(s.Name, "", filepath.Join(b.dirOrDot(), s.BaseName+".crt"), kp.Cert, now)
			ci.External = kp.Key == nil
			out = append(out, ci)
		}
	}
	hosts := map[string]bool{}
	for id := range b.leaves {
		hosts[id.Host] = true
	}
	for _, host := range sortedKeys(hosts) {
		for _, spec := range leafSpecs {
			kp := b.leaves[leafID{Host: host, Name: spec.Name}]
			if kp == nil || kp.Cert == nil {
				continue
			}
			ci := info(spec.Name, host, b.leafPath(host, spec), kp.Cert, now)
			ci.CAName = spec.CAName
			out = append(out, ci)
		}
	}
	return out
}

func sortedKeys(m map[string]bool) []string {
	return slices.Sorted(maps.Keys(m))
}

// Expiration describes a certificate read on a node: pemData is a PEM
// certificate file or a kubeconfig with an embedded client certificate.
func Expiration(name string, pemData []byte, now time.Time) (CertInfo, error) {
	certs, err := certutil.ParseCertsPEM(pemData)
	if err != nil {
		cfg, kerr := clientcmd.Load(pemData)
		if kerr != nil {
			return CertInfo{}, fmt.Errorf("read certificate %s: %w", name, err)
		}
		ctx := cfg.Contexts[cfg.CurrentContext]
		if ctx == nil || cfg.AuthInfos[ctx.AuthInfo] == nil || len(cfg.AuthInfos[ctx.AuthInfo].ClientCertificateData) == 0 {
			return CertInfo{}, fmt.Errorf("read certificate %s: kubeconfig has no embedded client certificate", name)
		}
		if certs, err = certutil.ParseCertsPEM(cfg.AuthInfos[ctx.AuthInfo].ClientCertificateData); err != nil {
			return CertInfo{}, fmt.Errorf("read certificate %s: %w", name, err)
		}
	}
	if len(certs) == 0 {
		return CertInfo{}, errors.New("read certificate " + name + ": no certificate")
	}
	return info(name, "", name, certs[0], now), nil
}

// NodeCert is a certificate file to read on a node for check-expiration.
type NodeCert struct {
	Name string // "apiserver", "admin.conf", "ca"
	Path string // absolute path on the node
}

// NodeCertificates lists the certificate files kubeforge puts on host h, for
// `certs check-expiration --hosts` (seed as in Ensure).
func NodeCertificates(inv *inventory.Inventory, seed, h *inventory.Host) []NodeCert {
	out := []NodeCert{{Name: CAName, Path: path.Join(PKIDir, "ca.crt")}}
	if !h.IsControlPlane() {
		return out
	}
	for _, s := range caSpecs[1:] {
		out = append(out, NodeCert{Name: s.Name, Path: path.Join(PKIDir, s.BaseName+".crt")})
	}
	for _, spec := range leafSpecs {
		if !spec.Hosts(h, seed) {
			continue
		}
		p := path.Join(PKIDir, spec.BaseName+".crt")
		if spec.Kubeconfig != "" {
			p = path.Join(KubernetesDir, spec.Kubeconfig)
		}
		out = append(out, NodeCert{Name: spec.Name, Path: p})
	}
	return out
}
