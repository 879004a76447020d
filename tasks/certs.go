package tasks

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/kubeforge/kubeforge/internal/nodefile"
	"github.com/kubeforge/kubeforge/pki"
)

// PKIDir is where the cluster PKI lives in the state dir.
func (e *Env) PKIDir() string { return filepath.Join(e.StateDir, "pki") }

// AdminKubeconfigPath is the workstation's admin.conf.
func (e *Env) AdminKubeconfigPath() string { return AdminKubeconfigPath(e.StateDir) }

// EnsureCerts loads the PKI from the state dir, makes what is missing or
// invalid, reuses the rest, saves it, and writes admin.conf for the workstation.
func EnsureCerts(_ context.Context, env *Env) error {
	b, err := pki.Load(env.PKIDir())
	if err != nil {
		return fmt.Errorf("load PKI: %w", err)
	}
	if err := env.ensurePKI(b); err != nil {
		return err
	}
	if err := env.ensureEncryption(); err != nil {
		return err
	}
	if env.Opts.DryRun {
		return nil // the PKI in memory only: a dry run writes nothing, here either
	}
	return env.savePKI()
}

// ensurePKI makes what is missing or invalid in b, in memory, and makes b
// the run's PKI.
func (e *Env) ensurePKI(b *pki.Bundle) error {
	changes, err := pki.Ensure(e.Inv, e.Seed(), b, e.pkiOptions())
	if err != nil {
		return fmt.Errorf("generate PKI: %w", err)
	}
	for _, c := range changes {
		if c.Action != "unchanged" {
			e.Log.Info("certificate", "name", c.Name, "host", c.Host, "action", c.Action, "reason", c.Reason)
		}
	}
	e.mu.Lock()
	e.certChanges = changes
	e.mu.Unlock()
	e.PKI = b
	return nil
}

// savePKI writes the run's PKI to the state dir (what changed; all of it
// when it was loaded elsewhere) and admin.conf.
func (e *Env) savePKI() error {
	if err := e.PKI.Save(e.PKIDir()); err != nil {
		return fmt.Errorf("save PKI: %w", err)
	}
	admin, err := e.PKI.AdminKubeconfig(e.Inv.Cluster.Name, e.adminServer())
	if err != nil {
		return fmt.Errorf("make admin.conf: %w", err)
	}
	return writeLocalTree(filepath.Dir(e.AdminKubeconfigPath()), []nodefile.File{{Path: "/" + filepath.Base(e.AdminKubeconfigPath()), Mode: 0o600, Data: admin}})
}

// loadPKI loads the state dir's PKI for the steps that only read it (reset,
// removal); it is an error when there is no CA.
func (e *Env) loadPKI() error {
	if e.PKI != nil {
		return nil
	}
	b, err := pki.Load(e.PKIDir())
	if err != nil {
		return err
	}
	if b.CACert() == nil {
		return fmt.Errorf("no cluster CA in %s", e.PKIDir())
	}
	e.PKI = b
	return nil
}

func (e *Env) pkiOptions() pki.Options {
	return pki.Options{Validity: e.Inv.Cluster.CertificateValidity.Duration, KeyType: e.Inv.Cluster.KeyType, Now: time.Now}
}
