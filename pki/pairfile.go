package pki

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/kubeforge/kubeforge/internal/atomicfile"
)

// A key and its certificate (or the service-account key and sa.pub) are two
// files, and a crash between writing the one and the other would leave a key
// that does not match its certificate, or a CA certificate without its key.
// savePair and recoverPair make the pair one unit:
//
//  1. write KEY.new, then CERT.new, each atomically (temporary file, fsync, rename);
//  2. rename KEY.new to KEY, then CERT.new to CERT, syncing the directory
//     before, between and after.
//
// CERT.new exists only once KEY.new is complete, so it is the commit point:
// recoverPair, run before a pair is read, finishes the renames when CERT.new
// exists (both .new files: neither renamed yet; CERT.new alone: the key was
// renamed) and drops a KEY.new alone (the pair was never committed).

// pairPaths names the two files of a pair; cert is sa.pub for the service-account pair.
type pairPaths struct {
	cert, key string
}

func (p pairPaths) newCert() string { return p.cert + ".new" }
func (p pairPaths) newKey() string  { return p.key + ".new" }

// The points of savePair after which a test may simulate a crash.
const (
	stepKeyNew     = "key.new written"
	stepCertNew    = "cert.new written"
	stepKeyRenamed = "key renamed"
	stepCommitted  = "cert renamed"
)

// savePair writes certPEM and keyPEM (either may be nil: that file is left as
// it is) so that a crash at any point leaves the old pair or the new one.
// crash, when not nil, is asked after each step whether to stop there as if
// the process had died (tests only).
func savePair(p pairPaths, certPEM []byte, certMode os.FileMode, keyPEM []byte, crash func(step string) bool) error {
	dir := filepath.Dir(p.cert)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	if err := recoverPair(p); err != nil {
		return err
	}
	stop := func(step string) bool { return crash != nil && crash(step) }
	if certPEM == nil || keyPEM == nil { // one file: nothing to keep in step with
		if certPEM != nil {
			return atomicfile.Write(p.cert, certPEM, certMode)
		}
		if keyPEM != nil {
			return atomicfile.Write(p.key, keyPEM, 0o600)
		}
		return nil
	}
	if err := atomicfile.Write(p.newKey(), keyPEM, 0o600); err != nil {
		return err
	}
	if stop(stepKeyNew) {
		return nil
	}
	if err := atomicfile.Write(p.newCert(), certPEM, certMode); err != nil {
		return err
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return err
	}
	if stop(stepCertNew) {
		return nil
	}
	return finishPair(p, stop)
}

// finishPair renames KEY.new (when present) and CERT.new into place.
func finishPair(p pairPaths, stop func(string) bool) error {
	dir := filepath.Dir(p.cert)
	if err := os.Rename(p.newKey(), p.key); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("commit %s: %w", p.key, err)
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return err
	}
	if stop(stepKeyRenamed) {
		return nil
	}
	if err := os.Rename(p.newCert(), p.cert); err != nil {
		return fmt.Errorf("commit %s: %w", p.cert, err)
	}
	if stop(stepCommitted) {
		return nil
	}
	return atomicfile.SyncDir(dir)
}

// recoverPair completes or undoes a savePair that a crash interrupted, so
// that the pair on disk is whole: the old one or the new one.
func recoverPair(p pairPaths) error {
	certNew, err := exists(p.newCert())
	if err != nil {
		return err
	}
	keyNew, err := exists(p.newKey())
	if err != nil {
		return err
	}
	switch {
	case certNew: // committed: with or without KEY.new still to rename
		if err := finishPair(p, func(string) bool { return false }); err != nil {
			return err
		}
	case keyNew: // never committed
		if err := os.Remove(p.newKey()); err != nil {
			return fmt.Errorf("discard uncommitted %s: %w", p.newKey(), err)
		}
		if err := atomicfile.SyncDir(filepath.Dir(p.key)); err != nil {
			return err
		}
	}
	return removeTemps(p)
}

// removeTemps removes the temporary files of writes of p's files that a crash
// interrupted (atomicfile names them .<name>.tmp-*).
func removeTemps(p pairPaths) error {
	dir := filepath.Dir(p.cert)
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("read directory %s: %w", dir, err)
	}
	for _, e := range entries {
		for _, f := range []string{p.cert, p.key, p.newCert(), p.newKey()} {
			if filepath.Dir(f) == dir && strings.HasPrefix(e.Name(), "."+filepath.Base(f)+".tmp-") {
				if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("remove interrupted write: %w", err)
				}
			}
		}
	}
	return nil
}

func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("check %s: %w", path, err)
	}
}

// MismatchError is a private key that is not the key of the certificate
// (or of sa.pub) beside it.
type MismatchError struct {
	Cert, Key string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("%s does not match %s: the private key is not the certificate's; put back the file that belongs with the other "+
		"(removing both makes kubeforge issue new ones, and a new CA breaks a running cluster)", e.Key, e.Cert)
}
