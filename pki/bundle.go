// Package pki generates and keeps the cluster PKI on the workstation, in
// kubeadm v1.37's layout: the CAs, the service-account key pair, each control
// plane's leaf certificates and kubeconfigs, and the bootstrap-token material.
// It is pure and local: Ensure and Renew work in memory, Save writes files, and
// NodeFiles renders what each host receives.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"

	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"

	"github.com/kubeforge/kubeforge/internal/nodefile"
)

// File is a file a host receives (the neutral type of package nodefile).
type File = nodefile.File

// keyPair is a certificate and its private key. Key is nil for a user-provided
// CA without its key; Cert is nil for a key whose certificate is missing.
type keyPair struct {
	Cert    *x509.Certificate
	CertPEM []byte // as read or written (a user's ca.crt may hold a chain)
	Key     crypto.Signer
	KeyPEM  []byte
	dirty   bool
}

// leafID names one leaf: the spec name and the host it belongs to ("" for the workstation).
type leafID struct {
	Host string
	Name string
}

// Bundle is the whole cluster PKI in memory: CAs and keys, the service-account
// key pair, and the per-host leaves.
//
// On disk (Load, Save) it is kubeadm's layout for what is cluster-wide — ca.*,
// etcd/ca.*, front-proxy-ca.*, sa.key, sa.pub — plus nodes/<host>/<kubeadm path>
// for each control plane's leaves (nodes/<host>/apiserver.crt, .../etcd/peer.crt,
// .../kubeconfig/admin.crt for kubeconfig client certs) and workstation/kubeconfig/
// for the workstation's admin and super-admin client certs.
type Bundle struct {
	dir    string // where the bundle was loaded from or last saved to
	cas    map[string]*keyPair
	sa     *saPair
	leaves map[leafID]*keyPair
	// encryption is the encryption-at-rest providers in order (encryption.go).
	encryption          []EncryptionKey
	encryptionResources []string
	encryptionDirty     bool
}

// saPair is the service-account signing key pair.
type saPair struct {
	Key    crypto.Signer
	KeyPEM []byte
	PubPEM []byte
	dirty  bool
}

func newBundle(dir string) *Bundle {
	return &Bundle{dir: dir, cas: map[string]*keyPair{}, leaves: map[leafID]*keyPair{}}
}

const (
	nodesDir       = "nodes"
	workstationDir = "workstation"
)

func leafDir(dir, host string) string {
	if host == "" {
		return filepath.Join(dir, workstationDir)
	}
	return filepath.Join(dir, nodesDir, host)
}

// Load reads the PKI in dir (the state directory's pki/). A missing dir gives an
// empty bundle. Files that exist but do not parse are errors, and so is a key
// that does not match its certificate (a *MismatchError). Before reading a
// pair, Load finishes or undoes a Save that a crash interrupted, so it writes
// to dir: call it holding the state dir's lock.
func Load(dir string) (*Bundle, error) {
	b := newBundle(filepath.Clean(dir))
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return b, nil
	} else if err != nil {
		return nil, fmt.Errorf("load pki %s: %w", dir, err)
	}
	for _, ca := range caSpecs {
		kp, err := loadPair(dir, ca.BaseName)
		if err != nil {
			return nil, err
		}
		if kp != nil {
			b.cas[ca.Name] = kp
		}
	}
	sa, err := loadSA(dir)
	if err != nil {
		return nil, err
	}
	b.sa = sa
	if b.encryption, b.encryptionResources, err = loadEncryption(dir); err != nil {
		return nil, err
	}

	hosts := []string{""}
	entries, err := os.ReadDir(filepath.Join(dir, nodesDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("load pki %s: %w", dir, err)
	}
	for _, e := range entries {
		if e.IsDir() {
			hosts = append(hosts, e.Name())
		}
	}
	for _, host := range hosts {
		for _, spec := range leafSpecs {
			kp, err := loadPair(leafDir(dir, host), spec.BaseName)
			if err != nil {
				return nil, err
			}
			if kp != nil {
				b.leaves[leafID{Host: host, Name: spec.Name}] = kp
			}
		}
	}
	return b, nil
}

// readOptional returns nil data for a missing file.
func readOptional(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return data, nil
}

// loadPair reads <base>.crt and <base>.key under dir, after finishing or
// undoing a save that a crash interrupted; nil when neither exists. A key that
// does not match its certificate is a *MismatchError.
func loadPair(dir, base string) (*keyPair, error) {
	certPath, keyPath := filepath.Join(dir, base+".crt"), filepath.Join(dir, base+".key")
	if err := recoverPair(pairPaths{cert: certPath, key: keyPath}); err != nil {
		return nil, err
	}
	certPEM, err := readOptional(certPath)
	if err != nil {
		return nil, err
	}
	keyPEM, err := readOptional(keyPath)
	if err != nil {
		return nil, err
	}
	if certPEM == nil && keyPEM == nil {
		return nil, nil
	}
	kp := &keyPair{CertPEM: certPEM, KeyPEM: keyPEM}
	if certPEM != nil {
		certs, err := certutil.ParseCertsPEM(certPEM)
		if err != nil {
			return nil, fmt.Errorf("parse certificate %s: %w", certPath, err)
		}
		kp.Cert = certs[0]
	}
	if keyPEM != nil {
		kp.Key, err = parseKey(keyPEM)
		if err != nil {
			return nil, fmt.Errorf("parse private key %s: %w", keyPath, err)
		}
	}
	if kp.Cert != nil && kp.Key != nil && !keysMatch(kp.Cert, kp.Key) {
		return nil, &MismatchError{Cert: certPath, Key: keyPath}
	}
	return kp, nil
}

func parseKey(keyPEM []byte) (crypto.Signer, error) {
	k, err := keyutil.ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, err
	}
	switch k := k.(type) {
	case *rsa.PrivateKey:
		return k, nil
	case *ecdsa.PrivateKey:
		return k, nil
	default:
		return nil, fmt.Errorf("key type %T is neither RSA nor ECDSA", k)
	}
}

func loadSA(dir string) (*saPair, error) {
	keyPath, pubPath := filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	if err := recoverPair(pairPaths{cert: pubPath, key: keyPath}); err != nil {
		return nil, err
	}
	keyPEM, err := readOptional(keyPath)
	if err != nil {
		return nil, err
	}
	pubPEM, err := readOptional(pubPath)
	if err != nil {
		return nil, err
	}
	if keyPEM == nil && pubPEM == nil {
		return nil, nil
	}
	sa := &saPair{KeyPEM: keyPEM, PubPEM: pubPEM}
	if keyPEM != nil {
		if sa.Key, err = parseKey(keyPEM); err != nil {
			return nil, fmt.Errorf("parse private key %s: %w", keyPath, err)
		}
	}
	if pubPEM != nil {
		if _, err := keyutil.ParsePublicKeysPEM(pubPEM); err != nil {
			return nil, fmt.Errorf("parse public key %s: %w", pubPath, err)
		}
	}
	return sa, nil
}

// Save writes the bundle to dir: keys 0600, certificates 0644, directories
// 0700. Each certificate and its key (and sa.key with sa.pub) is written as one
// unit (see savePair), so a crash leaves the old pair or the new one, never a
// key beside a certificate it does not belong to. It writes only what Ensure or
// Renew changed when dir is where the bundle came from, and nothing when
// nothing changed; saving to another directory writes everything.
func (b *Bundle) Save(dir string) error {
	dir = filepath.Clean(dir)
	all := dir != b.dir
	type out struct {
		paths    pairPaths
		certPEM  []byte
		certMode os.FileMode
		keyPEM   []byte
	}
	var pairs []out
	pair := func(base string, kp *keyPair) {
		if kp == nil || (!kp.dirty && !all) {
			return
		}
		pairs = append(pairs, out{pairPaths{cert: base + ".crt", key: base + ".key"}, kp.CertPEM, 0o644, kp.KeyPEM})
	}
	for _, ca := range caSpecs {
		pair(filepath.Join(dir, ca.BaseName), b.cas[ca.Name])
	}
	if b.sa != nil && (b.sa.dirty || all) {
		pairs = append(pairs, out{pairPaths{cert: filepath.Join(dir, "sa.pub"), key: filepath.Join(dir, "sa.key")}, b.sa.PubPEM, 0o600, b.sa.KeyPEM})
	}
	ids := make([]leafID, 0, len(b.leaves))
	for id := range b.leaves {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool {
		if ids[i].Host != ids[j].Host {
			return ids[i].Host < ids[j].Host
		}
		return ids[i].Name < ids[j].Name
	})
	for _, id := range ids {
		spec, ok := leafSpecByName(id.Name)
		if !ok {
			continue
		}
		pair(filepath.Join(leafDir(dir, id.Host), spec.BaseName), b.leaves[id])
	}
	for _, p := range pairs {
		if err := savePair(p.paths, p.certPEM, p.certMode, p.keyPEM, nil); err != nil {
			return err
		}
	}
	if len(b.encryption) > 0 && (b.encryptionDirty || all) {
		if err := saveEncryption(dir, b.encryption, b.encryptionResources); err != nil {
			return err
		}
	}
	b.encryptionDirty = false
	for _, kp := range b.cas {
		kp.dirty = false
	}
	for _, kp := range b.leaves {
		kp.dirty = false
	}
	if b.sa != nil {
		b.sa.dirty = false
	}
	b.dir = dir
	return nil
}

// CACert returns the cluster CA certificate (nil before Ensure on an empty bundle).
func (b *Bundle) CACert() *x509.Certificate {
	if kp := b.cas[CAName]; kp != nil {
		return kp.Cert
	}
	return nil
}

// CACertPEM returns the cluster CA's ca.crt content.
func (b *Bundle) CACertPEM() []byte {
	if kp := b.cas[CAName]; kp != nil {
		return slices.Clone(kp.CertPEM)
	}
	return nil
}

// HasCAKey reports whether the bundle holds the key of CA name ("ca", "etcd-ca",
// "front-proxy-ca"); false means an external CA whose key stays with the user.
func (b *Bundle) HasCAKey(name string) bool {
	kp := b.cas[name]
	return kp != nil && kp.Key != nil
}

func encodeCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: certutil.CertificateBlockType, Bytes: c.Raw})
}

func keysMatch(cert *x509.Certificate, key crypto.Signer) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	pub, ok := key.Public().(equaler)
	return ok && pub.Equal(cert.PublicKey)
}

func publicKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

func equalPEM(a, b []byte) bool { return bytes.Equal(bytes.TrimSpace(a), bytes.TrimSpace(b)) }
