package tasks

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/kubeforge/kubeforge/internal/atomicfile"
)

// BackupKeyEnv names the environment variable that names the backup key
// file when --backup-key is not given.
const BackupKeyEnv = "KUBEFORGE_BACKUP_KEY"

// backupKeyFile is the backup key's default place in the state dir.
const backupKeyFile = "backup.key"

// BackupKeyFile is the name of the backup key in the state dir: what
// `reset --purge` refuses to delete, as it refuses to delete backups.
const BackupKeyFile = backupKeyFile

// macName is the archive's second entry: the HMAC of manifest.json.
const macName = "manifest.hmac"

// macAlgorithm names the MAC in manifest.hmac.
const macAlgorithm = "HMAC-SHA256"

// BackupKey is the secret that authenticates backup archives: 32 random
// bytes, kept as 64 hex digits in a file of the cluster's owner, never in an
// archive. Its String, GoString and LogValue give the file's path only.
type BackupKey struct {
	Path   string
	secret []byte // nil: there is no key file at Path
}

func (k *BackupKey) String() string       { return k.Path }
func (k *BackupKey) GoString() string     { return "BackupKey(" + k.Path + ")" }
func (k *BackupKey) LogValue() slog.Value { return slog.StringValue(k.Path) }
func (k *BackupKey) present() bool        { return k != nil && k.secret != nil }
func (k *BackupKey) sum(msg ...[]byte) []byte {
	m := hmac.New(sha256.New, k.secret)
	for _, b := range msg {
		m.Write(b)
	}
	return m.Sum(nil)
}

// ID names the key without revealing it: the first 8 bytes of an HMAC of a
// fixed text, in hex. Two files with the same ID hold the same key.
func (k *BackupKey) ID() string {
	if !k.present() {
		return ""
	}
	return hex.EncodeToString(k.sum([]byte("kubeforge backup key id"))[:8])
}

// manifestMAC is what manifest.hmac holds.
type manifestMAC struct {
	Algorithm string `json:"algorithm"`
	KeyID     string `json:"keyID"`
	MAC       string `json:"mac"` // hex
}

// SignManifest returns the content of manifest.hmac for manifest, the exact
// bytes of manifest.json.
func (k *BackupKey) SignManifest(manifest []byte) ([]byte, error) {
	if !k.present() {
		return nil, fmt.Errorf("sign the manifest: no backup key in %s", k.Path)
	}
	return json.MarshalIndent(manifestMAC{Algorithm: macAlgorithm, KeyID: k.ID(),
		MAC: hex.EncodeToString(k.sum([]byte("kubeforge backup manifest\n"), manifest))}, "", "  ")
}

// checkManifest checks entry, the content of manifest.hmac, against
// manifest. It says why the two do not match, for the message that tells the
// user which key to give.
// errTampered is a MAC made with the key given that does not match: the
// archive was changed. No flag lets that through.
var errTampered = errors.New("refused whatever --allow-unauthenticated says")

func (k *BackupKey) checkManifest(manifest, entry []byte) error {
	var m manifestMAC
	if err := json.Unmarshal(entry, &m); err != nil || m.Algorithm != macAlgorithm {
		return fmt.Errorf("%s is not an %s kubeforge wrote", macName, macAlgorithm)
	}
	if !k.present() {
		return fmt.Errorf("it was authenticated with backup key %s, and there is no key file at %s", m.KeyID, k)
	}
	want, err := k.SignManifest(manifest)
	if err != nil {
		return err
	}
	var w manifestMAC
	_ = json.Unmarshal(want, &w) // it was just marshalled
	got, err := hex.DecodeString(m.MAC)
	wantMAC, _ := hex.DecodeString(w.MAC)
	if err != nil || !hmac.Equal(got, wantMAC) {
		if m.KeyID != w.KeyID {
			return fmt.Errorf("it was authenticated with backup key %s, and %s holds key %s", m.KeyID, k.Path, w.KeyID)
		}
		return fmt.Errorf("its manifest does not match its MAC under key %s (%s): the archive was changed after it was written: %w", w.KeyID, k.Path, errTampered)
	}
	return nil
}

// BackupKeyPath is the key file a backup or a restore uses: the one named
// (--backup-key), else $KUBEFORGE_BACKUP_KEY, else <state dir>/backup.key.
// The second result reports the default.
func BackupKeyPath(stateDir, named string) (string, bool) {
	if named != "" {
		return named, false
	}
	if p := os.Getenv(BackupKeyEnv); p != "" {
		return p, false
	}
	return filepath.Join(stateDir, backupKeyFile), true
}

// LoadBackupKey reads the key file at p. A missing file is no error: the key
// is then absent (a restore says so when the archive needs it).
func LoadBackupKey(p string) (*BackupKey, error) {
	k := &BackupKey{Path: p}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return k, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the backup key: %w", err)
	}
	secret, err := hex.DecodeString(string(bytes.TrimSpace(b)))
	if err != nil || len(secret) != 32 {
		// Never the content: it may be a key.
		return nil, fmt.Errorf("read the backup key: %s does not hold a kubeforge backup key (64 hex digits)", p)
	}
	k.secret = secret
	return k, nil
}

// newBackupKey makes a key file at p, mode 0600, unless one exists (then it
// is read): the key goes to a temporary name first and is linked into place,
// so a concurrent run never replaces a key already in use.
func newBackupKey(p string) (k *BackupKey, created bool, err error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, false, fmt.Errorf("make a backup key: %w", err)
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("make a backup key: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+backupKeyFile+".tmp-*")
	if err != nil {
		return nil, false, fmt.Errorf("make a backup key: %w", err)
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.WriteString(hex.EncodeToString(secret) + "\n")
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, false, fmt.Errorf("make a backup key: %w", err)
	}
	if err := os.Link(tmp.Name(), p); errors.Is(err, fs.ErrExist) {
		k, err := LoadBackupKey(p)
		return k, false, err
	} else if err != nil {
		return nil, false, fmt.Errorf("make a backup key: %w", err)
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return nil, false, err
	}
	return &BackupKey{Path: p, secret: secret}, true, nil
}

// backupKey is the key a backup signs with. The default key file is made on
// the first backup; a key file named by the user must exist (a typo must not
// start a new key that no one keeps).
func backupKey(env *Env, named string) (k *BackupKey, created bool, err error) {
	p, isDefault := BackupKeyPath(env.StateDir, named)
	k, err = LoadBackupKey(p)
	if err != nil {
		return nil, false, err
	}
	if !k.present() {
		if !isDefault {
			return nil, false, fmt.Errorf("backup: the backup key file %s does not exist: name the key file you keep for this cluster "+
				"(--backup-key FILE or %s=FILE), or name neither and the first backup makes %s",
				p, BackupKeyEnv, filepath.Join(env.StateDir, backupKeyFile))
		}
		if k, created, err = newBackupKey(p); err != nil {
			return nil, false, err
		}
	}
	env.warnOpenKey(k)
	return k, created, nil
}

// warnOpenKey warns when the key file can be read by others than its owner.
func (e *Env) warnOpenKey(k *BackupKey) {
	if fi, err := os.Stat(k.Path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		e.warn(fmt.Sprintf("the backup key %s can be read by others (mode %04o): chmod 600 it", k.Path, fi.Mode().Perm()))
	}
}
