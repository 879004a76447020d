package tasks

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kubeforge/kubeforge/pki"
)

// TestRestoreKeepsTheArchiveKeys: restoring a backup taken before a key
// rotation adds the archive's dropped keys after the current ones (so the
// restored objects are readable) and starts a rotation to the current key
// (so the next up rewrites them and drops the old keys); an archive with the
// same keys changes nothing.
func TestRestoreKeepsTheArchiveKeys(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	old, err := pki.NewEncryptionKey("secretbox", nil, now)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := pki.NewEncryptionKey("secretbox", nil, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	id := pki.EncryptionKey{Provider: pki.Identity}
	env0 := pkiRestoreEnv(t, false)
	archiveFiles := func(keys ...pki.EncryptionKey) map[string][]byte {
		dir := t.TempDir()
		b, err := pki.Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pki.Ensure(env0.Inv, env0.Seed(), b, pki.Options{KeyType: "ecdsa", Now: time.Now}); err != nil {
			t.Fatal(err)
		}
		b.SetEncryptionKeys(keys)
		if err := b.Save(dir); err != nil {
			t.Fatal(err)
		}
		files := map[string][]byte{}
		for _, name := range []string{"ca.crt", "ca.key", "encryption-config.yaml"} {
			data, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			files["pki/"+name] = data
		}
		return files
	}
	for _, tc := range []struct {
		name     string
		archive  []pki.EncryptionKey
		want     []string
		rotateTo string
	}{
		{"a backup from before the rotation", []pki.EncryptionKey{old, id}, []string{cur.String(), old.String(), "identity"}, cur.Name},
		{"a backup with the current keys", []pki.EncryptionKey{cur, id}, []string{cur.String(), "identity"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := pkiRestoreEnv(t, false)
			env.Restore = &Restore{}
			b, err := pki.Load(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			b.SetEncryptionKeys([]pki.EncryptionKey{cur, id})
			if err := env.addArchiveKeys(b, archiveFiles(tc.archive...)); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, k := range b.EncryptionKeys() {
				got = append(got, k.String())
			}
			if len(got) != len(tc.want) {
				t.Fatalf("keys %v; want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("keys %v; want %v", got, tc.want)
				}
			}
			if env.Restore.RotateTo != tc.rotateTo {
				t.Errorf("rotation to %q; want %q", env.Restore.RotateTo, tc.rotateTo)
			}
		})
	}
}
