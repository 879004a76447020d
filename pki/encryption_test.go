package pki

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestEncryptionKeysRoundTripPrivately: keys saved to the state dir come back
// in order, the file is 0600 from the start, a key's String hides its secret,
// and a damaged key is refused.
func TestEncryptionKeysRoundTripPrivately(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	k1, err := NewEncryptionKey("secretbox", nil, now)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := NewEncryptionKey("aescbc", []byte("0123456789abcdef"), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewEncryptionKey("secretbox", []byte("short"), now); err == nil {
		t.Error("a 5-byte secretbox key was accepted")
	}
	b := newBundle(dir)
	b.SetEncryptionKeys([]EncryptionKey{k2, k1, {Provider: Identity}})
	if err := b.Save(dir); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, encryptionFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("encryption config: %v, mode %v", err, fi.Mode())
	}
	got, _, err := loadEncryption(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Name != k2.Name || string(got[0].Secret) != string(k2.Secret) || got[1].Provider != "secretbox" || got[2].Provider != Identity {
		t.Errorf("loaded %v; want %v", got, []EncryptionKey{k2, k1, {Provider: Identity}})
	}
	if want := "k8s:enc:aescbc:v1:key-20261207T130000Z:"; k2.Prefix() != want {
		t.Errorf("prefix %q, want %q", k2.Prefix(), want)
	}
	if strings.Contains(k2.String(), "0123") {
		t.Errorf("String shows the secret: %s", k2)
	}
	data, _ := os.ReadFile(filepath.Join(dir, encryptionFile))
	damaged := strings.Replace(string(data), "secret: ", "secret: AAAA", 1)
	if err := os.WriteFile(filepath.Join(dir, encryptionFile), []byte(damaged), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadEncryption(dir); err == nil || !strings.Contains(err.Error(), "bytes, want") {
		t.Errorf("a key of the wrong length loaded: %v", err)
	}
}
