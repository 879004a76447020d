package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/client-go/util/keyutil"

	"github.com/kubeforge/kubeforge/inventory"
)

// Validity periods and key types, as kubeadm's defaults.
const (
	DefaultValidity     = 365 * 24 * time.Hour      // leaves
	CAValidity          = 10 * 365 * 24 * time.Hour // CAs
	CertificateBackdate = 5 * time.Minute           // NotBefore = now - backdate
	KeyTypeRSA          = inventory.KeyTypeRSA      // RSA 2048
	KeyTypeECDSA        = inventory.KeyTypeECDSA    // ECDSA P-256
	// RenewBefore is how long before expiry Ensure re-issues a leaf. Leaves with
	// a validity shorter than 3*RenewBefore are re-issued in their last third instead.
	RenewBefore = 30 * 24 * time.Hour
)

// Options: validity of leaves (default: the inventory's certificateValidity, else
// 8760h), key type "rsa" (2048, default) or "ecdsa" (P-256), the Kubernetes
// version, and Now for tests.
type Options struct {
	Validity time.Duration
	KeyType  string
	// KubernetesVersion is the cluster's (default: the inventory's): kubeadm
	// from v1.38 sets keyEncipherment on RSA keys only.
	KubernetesVersion string
	Now               func() time.Time
}

// resolve fills defaults from the inventory and kubeadm.
func (o Options) resolve(inv *inventory.Inventory) (Options, error) {
	if o.Validity == 0 && inv != nil {
		o.Validity = inv.Cluster.CertificateValidity.Duration
	}
	if o.Validity == 0 {
		o.Validity = DefaultValidity
	}
	if o.Validity < 0 {
		return o, fmt.Errorf("certificate validity %s is negative", o.Validity)
	}
	if o.KeyType == "" && inv != nil {
		o.KeyType = inv.Cluster.KeyType
	}
	switch strings.ToLower(o.KeyType) {
	case "", KeyTypeRSA:
		o.KeyType = KeyTypeRSA
	case KeyTypeECDSA:
		o.KeyType = KeyTypeECDSA
	default:
		return o, fmt.Errorf("key type %q is not supported (use %q or %q)", o.KeyType, KeyTypeRSA, KeyTypeECDSA)
	}
	if o.KubernetesVersion == "" && inv != nil {
		o.KubernetesVersion = inv.Cluster.KubernetesVersion
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o, nil
}

// keyUsage is the key usage kubeadm's NewSignedCert (a leaf) or
// NewSelfSignedCACert (ca) sets: digital signature, cert sign for a CA, and key
// encipherment, which kubeadm from v1.38 sets only on RSA keys (an ECDSA key
// cannot encipher).
func (o Options) keyUsage(ca bool) x509.KeyUsage {
	u := x509.KeyUsageDigitalSignature
	if ca {
		u |= x509.KeyUsageCertSign
	}
	if o.KeyType == KeyTypeRSA {
		return u | x509.KeyUsageKeyEncipherment
	}
	if v, err := version.ParseGeneric(o.KubernetesVersion); err != nil || v.Major() != 1 || v.Minor() < 38 {
		return u | x509.KeyUsageKeyEncipherment
	}
	return u
}

// renewThreshold is the remaining validity under which Ensure re-issues a leaf.
func (o Options) renewThreshold() time.Duration {
	return min(RenewBefore, o.Validity/3)
}

// Change is one thing Ensure or Renew did (or found it did not need to do).
type Change struct {
	Name   string // "ca", "apiserver", "admin.conf", "sa"
	Host   string // "" for cluster-wide material and the workstation's kubeconfigs
	Action string // "created" | "reissued" | "unchanged"
	Reason string
}

// The actions of a Change.
const (
	ActionCreated   = "created"
	ActionReissued  = "reissued"
	ActionUnchanged = "unchanged"
)

// String renders c for plans and summaries: "cp1/apiserver: reissued (SANs changed: +x)".
func (c Change) String() string {
	s := c.Name
	if c.Host != "" {
		s = c.Host + "/" + c.Name
	}
	s += ": " + c.Action
	if c.Reason != "" {
		s += " (" + c.Reason + ")"
	}
	return s
}

func newKey(keyType string) (crypto.Signer, error) {
	var (
		k   crypto.Signer
		err error
	)
	if keyType == KeyTypeECDSA {
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	} else {
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", keyType, err)
	}
	return k, nil
}

func serialNumber() (*big.Int, error) {
	// Uniform in [1, MaxInt64), as kubeadm.
	n, err := rand.Int(rand.Reader, new(big.Int).SetInt64(math.MaxInt64-1))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

func pairFromCert(der []byte, key crypto.Signer) (*keyPair, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse new certificate: %w", err)
	}
	keyPEM, err := keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return &keyPair{Cert: cert, CertPEM: encodeCert(cert), Key: key, KeyPEM: keyPEM, dirty: true}, nil
}

// newKeyAndSerial makes the private key and serial number of a new certificate.
func newKeyAndSerial(opt Options) (crypto.Signer, *big.Int, error) {
	key, err := newKey(opt.KeyType)
	if err != nil {
		return nil, nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	return key, serial, nil
}

// newCA makes a self-signed CA as kubeadm's NewSelfSignedCACert does.
func newCA(spec caSpec, opt Options) (*keyPair, error) {
	key, serial, err := newKeyAndSerial(opt)
	if err != nil {
		return nil, err
	}
	now := opt.Now().UTC()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: spec.CN},
		DNSNames:              []string{spec.CN},
		NotBefore:             now.Add(-CertificateBackdate),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              opt.keyUsage(true),
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create %s CA certificate: %w", spec.Name, err)
	}
	return pairFromCert(der, key)
}

// dedupAltNames sorts and de-duplicates DNS names and de-duplicates IPs keeping
// their order, as kubeadm's RemoveDuplicateAltNames.
func dedupAltNames(cfg *leafConfig) {
	dns := slices.Clone(cfg.AltNames.DNSNames)
	sort.Strings(dns)
	cfg.AltNames.DNSNames = slices.Compact(dns)
	var ips []net.IP
	seen := map[string]bool{}
	for _, ip := range cfg.AltNames.IPs {
		if !seen[ip.String()] {
			seen[ip.String()] = true
			ips = append(ips, ip)
		}
	}
	cfg.AltNames.IPs = ips
}

// newLeaf signs a new leaf with a new key, as kubeadm's NewSignedCert.
func newLeaf(cfg leafConfig, ca *keyPair, opt Options) (*keyPair, error) {
	key, serial, err := newKeyAndSerial(opt)
	if err != nil {
		return nil, err
	}
	dedupAltNames(&cfg)
	now := opt.Now().UTC()
	notAfter := now.Add(opt.Validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter // never outlive the CA
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cfg.CN, Organization: cfg.Org},
		DNSNames:              cfg.AltNames.DNSNames,
		IPAddresses:           cfg.AltNames.IPs,
		NotBefore:             now.Add(-CertificateBackdate),
		NotAfter:              notAfter,
		KeyUsage:              opt.keyUsage(false),
		ExtKeyUsage:           cfg.Usages,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate %s: %w", cfg.CN, err)
	}
	return pairFromCert(der, key)
}

// leafDrift says why the existing leaf kp does not satisfy cfg ("" if it does).
// A key that does not match its certificate is an error: something replaced one
// of the two files and kubeforge will not guess which.
func leafDrift(kp *keyPair, cfg leafConfig, caName string, ca *keyPair, opt Options, path string) (string, error) {
	if kp == nil || kp.Cert == nil {
		return "missing", nil
	}
	if kp.Key == nil {
		return "key missing", nil
	}
	if !keysMatch(kp.Cert, kp.Key) {
		return "", fmt.Errorf("check %s: the private key does not match the certificate (remove both files to re-issue them)", path)
	}
	if err := kp.Cert.CheckSignatureFrom(ca.Cert); err != nil {
		return "not signed by the current " + caName + " CA", nil
	}
	now := opt.Now()
	if now.After(kp.Cert.NotAfter) {
		return "expired " + kp.Cert.NotAfter.UTC().Format(time.RFC3339), nil
	}
	if kp.Cert.NotAfter.Sub(now) < opt.renewThreshold() {
		return "expires " + kp.Cert.NotAfter.UTC().Format(time.RFC3339), nil
	}
	dedupAltNames(&cfg)
	if kp.Cert.Subject.CommonName != cfg.CN || !sameStrings(kp.Cert.Subject.Organization, cfg.Org) {
		return fmt.Sprintf("subject changed from %q", kp.Cert.Subject.String()), nil
	}
	if !slices.Equal(sortedUsages(kp.Cert.ExtKeyUsage), sortedUsages(cfg.Usages)) {
		return "key usages changed", nil
	}
	if d := sanDiff(kp.Cert, cfg); d != "" {
		return "SANs changed: " + d, nil
	}
	return "", nil
}

func sameStrings(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	sort.Strings(a)
	sort.Strings(b)
	return slices.Equal(a, b)
}

func sortedUsages(u []x509.ExtKeyUsage) []x509.ExtKeyUsage {
	u = slices.Clone(u)
	slices.Sort(u)
	return u
}

// sanDiff describes added (+) and removed (-) SANs, or "" when equal.
func sanDiff(cert *x509.Certificate, cfg leafConfig) string {
	have := map[string]bool{}
	for _, d := range cert.DNSNames {
		have[d] = true
	}
	for _, ip := range cert.IPAddresses {
		have[ip.String()] = true
	}
	want := map[string]bool{}
	for _, d := range cfg.AltNames.DNSNames {
		want[d] = true
	}
	for _, ip := range cfg.AltNames.IPs {
		want[ip.String()] = true
	}
	var diff []string
	for k := range want {
		if !have[k] {
			diff = append(diff, "+"+k)
		}
	}
	for k := range have {
		if !want[k] {
			diff = append(diff, "-"+k)
		}
	}
	sort.Strings(diff)
	return strings.Join(diff, " ")
}

// target is a holder of leaves: the workstation (Host nil) or an inventory host.
type target struct {
	Host *inventory.Host
}

func (t target) name() string {
	if t.Host == nil {
		return ""
	}
	return t.Host.Name
}

func targets(inv *inventory.Inventory) []target {
	out := []target{{}}
	for _, h := range inv.Hosts {
		out = append(out, target{Host: h})
	}
	return out
}

// Ensure makes every CA, key and leaf the inventory needs, reusing what exists
// and is valid, and returns what it did. Rules (kubeadm's, made explicit):
//
//   - A CA is reused when present; it is created only when neither its
//     certificate nor any leaf it signed exists. It is never regenerated: an
//     expired or not-yet-valid CA, a CA certificate that is not a CA, a key that
//     does not match it, a key without certificate, or a missing CA with existing
//     leaves are errors.
//   - External CA: a user-provided certificate and key are used as they are. A
//     certificate alone (no key) is accepted only when every leaf it must sign
//     already exists, is valid and matches the inventory; otherwise Ensure says
//     which leaf is missing and why.
//   - A leaf is re-issued (new key) when it is missing, its key is missing, it is
//     not signed by the current CA, it expires within 30 days (or within the last
//     third of a shorter validity), or its subject, key usages or SANs differ from
//     what the inventory asks. A key that does not match its certificate is an
//     error. A change of validity or key type alone does not re-issue anything.
//
// seed is the control plane the cluster's API endpoint is on (kubeadm's init
// node), as the caller decided it: it alone of the control planes holds
// super-admin.conf.
func Ensure(inv *inventory.Inventory, seed *inventory.Host, b *Bundle, opt Options) ([]Change, error) {
	opt, err := opt.resolve(inv)
	if err != nil {
		return nil, fmt.Errorf("ensure pki: %w", err)
	}
	var changes []Change
	for _, ca := range caSpecs {
		c, err := b.ensureCA(ca, opt)
		if err != nil {
			return nil, fmt.Errorf("ensure pki: %w", err)
		}
		changes = append(changes, c)
	}
	c, err := b.ensureSA(opt)
	if err != nil {
		return nil, fmt.Errorf("ensure pki: %w", err)
	}
	changes = append(changes, c)

	leaves, err := b.ensureLeaves(inv, seed, opt, false, func(string) bool { return true })
	if err != nil {
		return nil, fmt.Errorf("ensure pki: %w", err)
	}
	return append(changes, leaves...), nil
}

// ensureLeaves ensures (or, with renew, re-issues) the leaves chosen by name
// on every host that has them (seed as in Ensure).
func (b *Bundle) ensureLeaves(inv *inventory.Inventory, seed *inventory.Host, opt Options, renew bool, chosen func(name string) bool) ([]Change, error) {
	var changes []Change
	for _, t := range targets(inv) {
		for _, spec := range leafSpecs {
			if !chosen(spec.Name) || !spec.Hosts(t.Host, seed) {
				continue
			}
			c, err := b.ensureLeaf(inv, t, spec, opt, renew)
			if err != nil {
				return nil, err
			}
			changes = append(changes, c)
		}
	}
	return changes, nil
}

func (b *Bundle) caPath(ca caSpec, ext string) string {
	return filepath.Join(b.dirOrDot(), ca.BaseName+ext)
}

func (b *Bundle) dirOrDot() string {
	if b.dir == "" {
		return "."
	}
	return b.dir
}

func (b *Bundle) ensureCA(ca caSpec, opt Options) (Change, error) {
	kp := b.cas[ca.Name]
	ch := Change{Name: ca.Name}
	if kp == nil || kp.Cert == nil {
		if kp != nil && kp.Key != nil {
			return ch, fmt.Errorf("CA %s: %s exists without %s; restore the certificate or remove the key",
				ca.Name, b.caPath(ca, ".key"), b.caPath(ca, ".crt"))
		}
		var signed []string
		for id := range b.leaves {
			if spec, ok := leafSpecByName(id.Name); ok && spec.CAName == ca.Name {
				signed = append(signed, filepath.Join(leafDir(b.dirOrDot(), id.Host), spec.BaseName+".crt"))
			}
		}
		if len(signed) > 0 {
			sort.Strings(signed)
			return ch, fmt.Errorf("CA %s: %s is missing but %d certificates it signed exist (e.g. %s); kubeforge never regenerates a CA silently: restore %s and its key, or remove those certificates to start over",
				ca.Name, b.caPath(ca, ".crt"), len(signed), signed[0], b.caPath(ca, ".crt"))
		}
		nkp, err := newCA(ca, opt)
		if err != nil {
			return ch, err
		}
		b.cas[ca.Name] = nkp
		ch.Action, ch.Reason = ActionCreated, "missing"
		return ch, nil
	}
	path := b.caPath(ca, ".crt")
	if !kp.Cert.IsCA {
		return ch, fmt.Errorf("CA %s: %s is not a CA certificate", ca.Name, path)
	}
	now := opt.Now()
	if now.After(kp.Cert.NotAfter) {
		return ch, fmt.Errorf("CA %s: %s expired on %s; kubeforge does not replace a CA: provide a valid CA (certificate and key)",
			ca.Name, path, kp.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(kp.Cert.NotBefore) {
		return ch, fmt.Errorf("CA %s: %s is not valid before %s (check the clock)", ca.Name, path, kp.Cert.NotBefore.UTC().Format(time.RFC3339))
	}
	if kp.Key != nil && !keysMatch(kp.Cert, kp.Key) {
		return ch, fmt.Errorf("CA %s: %s does not match %s", ca.Name, b.caPath(ca, ".key"), path)
	}
	ch.Action = ActionUnchanged
	if kp.Key == nil {
		ch.Reason = "external CA: no key"
	}
	return ch, nil
}

func (b *Bundle) ensureSA(opt Options) (Change, error) {
	ch := Change{Name: "sa", Action: ActionUnchanged}
	keyPath, pubPath := filepath.Join(b.dirOrDot(), "sa.key"), filepath.Join(b.dirOrDot(), "sa.pub")
	if b.sa == nil || b.sa.Key == nil {
		if b.sa != nil && b.sa.PubPEM != nil {
			return ch, fmt.Errorf("service-account key: %s exists without %s; restore the key (tokens signed by it must stay valid) or remove %s",
				pubPath, keyPath, pubPath)
		}
		key, err := newKey(opt.KeyType)
		if err != nil {
			return ch, err
		}
		keyPEM, err := keyutil.MarshalPrivateKeyToPEM(key)
		if err != nil {
			return ch, fmt.Errorf("marshal service-account key: %w", err)
		}
		pubPEM, err := publicKeyPEM(key)
		if err != nil {
			return ch, err
		}
		b.sa = &saPair{Key: key, KeyPEM: keyPEM, PubPEM: pubPEM, dirty: true}
		ch.Action, ch.Reason = ActionCreated, "missing"
		return ch, nil
	}
	pubPEM, err := publicKeyPEM(b.sa.Key)
	if err != nil {
		return ch, err
	}
	switch {
	case b.sa.PubPEM == nil:
		b.sa.PubPEM, b.sa.dirty = pubPEM, true
		ch.Action, ch.Reason = ActionCreated, "sa.pub missing"
	case !equalPEM(b.sa.PubPEM, pubPEM):
		keys, err := keyutil.ParsePublicKeysPEM(b.sa.PubPEM)
		type equaler interface{ Equal(crypto.PublicKey) bool }
		if e, ok := b.sa.Key.Public().(equaler); err != nil || len(keys) != 1 || !ok || !e.Equal(keys[0]) {
			return ch, fmt.Errorf("service-account key: %s does not match %s", pubPath, keyPath)
		}
	}
	return ch, nil
}

func (b *Bundle) leafPath(host string, spec leafSpec) string {
	return filepath.Join(leafDir(b.dirOrDot(), host), spec.BaseName+".crt")
}

// ensureLeaf checks one leaf and issues it when needed (always when force).
func (b *Bundle) ensureLeaf(inv *inventory.Inventory, t target, spec leafSpec, opt Options, force bool) (Change, error) {
	id := leafID{Host: t.name(), Name: spec.Name}
	ch := Change{Name: spec.Name, Host: id.Host}
	where := spec.Name
	if id.Host != "" {
		where = id.Host + "/" + spec.Name
	} else {
		where = "workstation/" + spec.Name
	}
	cfg, err := spec.Config(inv, t.Host)
	if err != nil {
		return ch, fmt.Errorf("configure %s: %w", where, err)
	}
	ca := b.cas[spec.CAName]
	if ca == nil || ca.Cert == nil {
		return ch, fmt.Errorf("issue %s: CA %s is missing", where, spec.CAName)
	}
	kp := b.leaves[id]
	reason := "renewal requested"
	if !force {
		reason, err = leafDrift(kp, cfg, spec.CAName, ca, opt, b.leafPath(id.Host, spec))
		if err != nil {
			return ch, err
		}
		if reason == "" {
			ch.Action = ActionUnchanged
			return ch, nil
		}
	}
	if ca.Key == nil {
		return ch, fmt.Errorf("issue %s: %s is %s, but CA %s has no key (external CA): sign it with your CA and place it at %s with its key",
			where, b.leafPath(id.Host, spec), reason, spec.CAName, b.leafPath(id.Host, spec))
	}
	nkp, err := newLeaf(cfg, ca, opt)
	if err != nil {
		return ch, fmt.Errorf("issue %s: %w", where, err)
	}
	b.leaves[id] = nkp
	ch.Action, ch.Reason = ActionReissued, reason
	if kp == nil || kp.Cert == nil {
		ch.Action = ActionCreated
	}
	return ch, nil
}

// Renew re-issues the named leaves ("all", or kubeadm's names such as
// "apiserver", "etcd-server", "admin.conf") on every host that has them, with new
// keys, as `kubeadm certs renew` does. "all" is kubeadm's list: every leaf but
// kubelet.conf, whose client certificate the kubelet rotates itself (name it to
// renew it anyway). Renewing needs the signing CA's key. seed is as in Ensure.
func (b *Bundle) Renew(inv *inventory.Inventory, seed *inventory.Host, names []string, opt Options) ([]Change, error) {
	opt, err := opt.resolve(inv)
	if err != nil {
		return nil, fmt.Errorf("renew certificates: %w", err)
	}
	if len(names) == 0 {
		return nil, errors.New("renew certificates: name the certificates to renew, or \"all\"")
	}
	want := map[string]bool{}
	for _, n := range names {
		if n == "all" {
			for _, s := range leafSpecs {
				if renewAll(s.Name) {
					want[s.Name] = true
				}
			}
			continue
		}
		if _, ok := leafSpecByName(n); !ok {
			return nil, fmt.Errorf("renew certificates: unknown certificate %q (known: all, %s)", n, strings.Join(LeafNames(), ", "))
		}
		want[n] = true
	}
	for _, ca := range caSpecs {
		if kp := b.cas[ca.Name]; kp == nil || kp.Cert == nil {
			return nil, fmt.Errorf("renew certificates: CA %s is missing; run certs generate first", ca.Name)
		}
	}
	changes, err := b.ensureLeaves(inv, seed, opt, true, func(name string) bool { return want[name] })
	if err != nil {
		return nil, fmt.Errorf("renew certificates: %w", err)
	}
	return changes, nil
}
