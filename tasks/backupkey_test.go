package tasks

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBackupKeyIsMadeOnceInTheStateDirWithMode0600(t *testing.T) {
	t.Setenv(BackupKeyEnv, "")
	env := observedEnv(t, []string{"cp1"}, map[string]bool{"cp1": true})
	k, created, err := backupKey(env, "")
	if err != nil || !created {
		t.Fatalf("first backup: created=%v %v", created, err)
	}
	p := filepath.Join(env.StateDir, "backup.key")
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != 65 || k.Path != p {
		t.Fatalf("key file %v %v at %s", fi, err, k.Path)
	}
	again, created, err := backupKey(env, "")
	if err != nil || created || again.ID() != k.ID() {
		t.Errorf("second backup: created=%v id %s, was %s, %v", created, again.ID(), k.ID(), err)
	}
	if left, _ := filepath.Glob(filepath.Join(env.StateDir, ".backup.key.tmp-*")); len(left) > 0 {
		t.Errorf("left %v", left)
	}
}

func TestBackupKeyNamedByTheUserMustExist(t *testing.T) {
	env := observedEnv(t, []string{"cp1"}, map[string]bool{"cp1": true})
	for _, tc := range []struct{ name, flag, envVar string }{
		{name: "--backup-key", flag: filepath.Join(t.TempDir(), "typo.key")},
		{name: BackupKeyEnv, envVar: filepath.Join(t.TempDir(), "typo.key")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(BackupKeyEnv, tc.envVar)
			_, _, err := backupKey(env, tc.flag)
			if err == nil || !strings.Contains(err.Error(), "does not exist") {
				t.Errorf("a missing named key: %v; want an error", err)
			}
			if _, err := os.Stat(tc.flag + tc.envVar); !os.IsNotExist(err) {
				t.Errorf("a key file was made at the name given: %v", err)
			}
			if _, err := os.Stat(filepath.Join(env.StateDir, "backup.key")); !os.IsNotExist(err) {
				t.Errorf("a key was made in the state dir instead: %v", err)
			}
		})
	}
}

func TestBackupKeyPathPrefersTheFlagThenTheEnvironment(t *testing.T) {
	t.Setenv(BackupKeyEnv, "/from/env.key")
	if p, def := BackupKeyPath("/state", "/from/flag.key"); p != "/from/flag.key" || def {
		t.Errorf("with a flag: %s %v", p, def)
	}
	if p, def := BackupKeyPath("/state", ""); p != "/from/env.key" || def {
		t.Errorf("with the variable: %s %v", p, def)
	}
	t.Setenv(BackupKeyEnv, "")
	if p, def := BackupKeyPath("/state", ""); p != "/state/backup.key" || !def {
		t.Errorf("with neither: %s %v", p, def)
	}
}

func TestBackupKeyNeverShowsItsSecret(t *testing.T) {
	dir := t.TempDir()
	k := testKey(t, dir)
	secret := hex.EncodeToString(k.secret)
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("key", "key", k)
	shown := fmt.Sprintf("%v %+v %#v %s", k, k, k, k) + logged.String()
	if strings.Contains(shown, secret) || bytes.Contains([]byte(shown), k.secret) || !strings.Contains(shown, k.Path) {
		t.Errorf("the key shows as %q", shown)
	}
	// A file that is not a key: the error does not quote it.
	bad := filepath.Join(dir, "bad.key")
	if err := os.WriteFile(bad, []byte(secret[:40]), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadBackupKey(bad); err == nil || strings.Contains(err.Error(), secret[:40]) {
		t.Errorf("LoadBackupKey of a bad file: %v", err)
	}
	// Nor does the archive hold it.
	p := writeTestArchive(t, dir, k, testFiles(), nil)
	var all []byte
	for _, e := range readArchiveEntries(t, p) {
		all = append(all, e.data...)
	}
	if bytes.Contains(all, k.secret) || bytes.Contains(all, []byte(secret)) {
		t.Error("the archive holds the backup key")
	}
}
