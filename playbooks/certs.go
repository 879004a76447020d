package playbooks

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/kubeforge/kubeforge/pki"
)

// RenewCerts re-issues the named leaf certificates (or "all") in the state
// dir's PKI, as `kubeadm certs renew` does, holding the state dir's lock from
// reading the PKI to saving it. It returns what changed and the PKI dir.
func RenewCerts(opts *Options, names []string) ([]pki.Change, string, error) {
	inv, err := Load(opts)
	if err != nil {
		return nil, "", err
	}
	dir := filepath.Join(opts.StateDir, "pki")
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, dir, fmt.Errorf("renew certificates: there is no PKI in %s; run `kubeforge certs generate` or `kubeforge up` first", dir)
	}
	var changes []pki.Change
	err = withStateDirLock(opts.StateDir, inv, func() error {
		b, err := pki.Load(dir)
		if err != nil {
			return err
		}
		opt := pki.Options{Validity: inv.Cluster.CertificateValidity.Duration, KeyType: inv.Cluster.KeyType, Now: time.Now}
		// Offline: no host is asked where the API is, so the seed is the
		// default one, the file's first control plane (as `up` before it observes).
		if changes, err = b.Renew(inv, inv.FirstControlPlane(), names, opt); err != nil {
			return err
		}
		return b.Save(dir)
	})
	return changes, dir, err
}

// LoadPKI reads the state dir's PKI for `certs check-expiration`. Loading may
// finish a save that a crash interrupted, so it holds the state dir's lock
// when the PKI exists; a missing PKI is an empty bundle.
func LoadPKI(opts *Options) (*pki.Bundle, error) {
	inv, err := Load(opts)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(opts.StateDir, "pki")
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return pki.Load(dir)
	}
	var b *pki.Bundle
	err = withStateDirLock(opts.StateDir, inv, func() error {
		var lerr error
		b, lerr = pki.Load(dir)
		return lerr
	})
	return b, err
}
