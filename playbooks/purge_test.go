package playbooks

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubeforge/kubeforge/internal/statedir"
)

func TestCheckPurge(t *testing.T) {
	marked := func(t *testing.T, dir string) {
		t.Helper()
		mustMkdir(t, dir)
		mustWrite(t, filepath.Join(dir, statedir.MarkerName), "")
		mustMkdir(t, filepath.Join(dir, "logs"))
	}
	tests := []struct {
		name    string
		hosts   []string
		prepare func(t *testing.T, opts *Options) // may move opts.StateDir
		want    string                            // "" allows the purge
	}{
		{name: "a state dir a run marked", prepare: func(t *testing.T, o *Options) {
			marked(t, o.StateDir)
			mustWrite(t, filepath.Join(o.StateDir, statedir.LockName), "")
			mustWrite(t, filepath.Join(o.StateDir, "admin.conf"), "")
			mustWrite(t, filepath.Join(o.StateDir, ".admin.conf.tmp-42"), "")
			mustMkdir(t, filepath.Join(o.StateDir, "restore", "node1-123"))
		}},
		{name: "a state dir with backups: kept, so refused", prepare: func(t *testing.T, o *Options) {
			marked(t, o.StateDir)
			mustMkdir(t, filepath.Join(o.StateDir, "backups"))
		}, want: "--purge never deletes a backup"},
		{name: "a state dir with the backup key: kept, so refused", prepare: func(t *testing.T, o *Options) {
			marked(t, o.StateDir)
			mustWrite(t, filepath.Join(o.StateDir, "backup.key"), "00")
		}, want: "--purge never deletes it"},
		{name: "an older state dir with a PKI but no marker", prepare: func(t *testing.T, o *Options) {
			mustMkdir(t, filepath.Join(o.StateDir, "pki"))
			mustWrite(t, filepath.Join(o.StateDir, "pki", "ca.crt"), "")
		}},
		{name: "a state dir that does not exist yet", prepare: func(*testing.T, *Options) {}},
		{name: "with --hosts", hosts: []string{"cp1"}, prepare: func(t *testing.T, o *Options) { marked(t, o.StateDir) },
			want: "--hosts resets only cp1 and the other hosts still use that CA"},
		{name: "a directory that is not a state dir", prepare: func(t *testing.T, o *Options) {
			mustMkdir(t, o.StateDir)
			mustWrite(t, filepath.Join(o.StateDir, "thesis.tex"), "")
		}, want: "it does not look like a kubeforge state dir"},
		{name: "a state dir holding other files", prepare: func(t *testing.T, o *Options) {
			marked(t, o.StateDir)
			mustWrite(t, filepath.Join(o.StateDir, "notes.txt"), "")
			mustMkdir(t, filepath.Join(o.StateDir, "src"))
		}, want: "it holds files kubeforge did not write (notes.txt, src)"},
		{name: "the inventory's directory", prepare: func(t *testing.T, o *Options) {
			o.StateDir = filepath.Dir(o.Inventory)
			marked(t, o.StateDir)
		}, want: "it is the inventory's directory"},
		{name: "a parent of the inventory's directory", prepare: func(t *testing.T, o *Options) {
			o.StateDir = filepath.Dir(filepath.Dir(o.Inventory))
			marked(t, o.StateDir)
		}, want: "it holds the inventory's directory"},
		{name: "the working directory", prepare: func(t *testing.T, o *Options) {
			marked(t, o.StateDir)
			t.Chdir(o.StateDir)
			o.StateDir = "."
		}, want: "it is the working directory"},
		{name: "the home directory", prepare: func(t *testing.T, o *Options) {
			marked(t, o.StateDir)
			t.Setenv("HOME", o.StateDir)
		}, want: "it is your home directory"},
		{name: "the root directory", prepare: func(t *testing.T, o *Options) { o.StateDir = "/" },
			want: "it is the root directory"},
		{name: "a symbolic link", prepare: func(t *testing.T, o *Options) {
			real := o.StateDir + ".real"
			marked(t, real)
			if err := os.Symlink(real, o.StateDir); err != nil {
				t.Fatal(err)
			}
		}, want: "it is a symbolic link"},
		{name: "a file", prepare: func(t *testing.T, o *Options) { mustWrite(t, o.StateDir, "") },
			want: "it is not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := testOptions(t)
			inv, err := Load(opts)
			if err != nil {
				t.Fatal(err)
			}
			tt.prepare(t, opts)
			err = CheckPurge(opts, inv, tt.hosts)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("CheckPurge: %v; want the purge allowed", err)
				}
				return
			}
			var perr *PurgeError
			if !errors.As(err, &perr) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("CheckPurge: %v; want a *PurgeError containing %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "refusing to purge the state dir "+opts.StateDir+": ") {
				t.Errorf("error %q does not name the state dir first", err)
			}
		})
	}
}

func TestPurgeStateDirRemovesOnlyAStateDir(t *testing.T) {
	tests := []struct {
		name    string
		foreign bool
		wantErr bool
	}{
		{name: "state dir", foreign: false},
		{name: "state dir with a foreign file", foreign: true, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := testOptions(t)
			inv, err := Load(opts)
			if err != nil {
				t.Fatal(err)
			}
			mustMkdir(t, filepath.Join(opts.StateDir, "pki"))
			mustWrite(t, filepath.Join(opts.StateDir, "pki", "ca.crt"), "")
			if tt.foreign {
				mustWrite(t, filepath.Join(opts.StateDir, "keep.me"), "")
			}
			err = PurgeStateDir(opts, inv)
			_, statErr := os.Stat(opts.StateDir)
			if tt.wantErr {
				if err == nil || statErr != nil {
					t.Errorf("PurgeStateDir: %v, state dir stat %v; want a refusal and the dir kept", err, statErr)
				}
				return
			}
			if err != nil || !errors.Is(statErr, os.ErrNotExist) {
				t.Errorf("PurgeStateDir: %v, state dir stat %v; want it removed", err, statErr)
			}
		})
	}
}

func mustMkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestPurgeChecksAgainUnderTheLock: what another run writes into the state
// dir between the purge's first check and its lock (a backup, a file of the
// user's) makes the purge refuse, and nothing is removed.
func TestPurgeChecksAgainUnderTheLock(t *testing.T) {
	tests := []struct {
		name    string
		between func(t *testing.T, dir string) // runs after the first check, before the lock is taken
		want    string
	}{
		{name: "a backup written meanwhile", want: "--purge never deletes a backup", between: func(t *testing.T, dir string) {
			mustMkdir(t, filepath.Join(dir, "backups"))
			mustWrite(t, filepath.Join(dir, "backups", "pre-upgrade.tar.gz"), "snapshot")
		}},
		{name: "a foreign file written meanwhile", want: "it holds files kubeforge did not write (notes.txt)", between: func(t *testing.T, dir string) {
			mustWrite(t, filepath.Join(dir, "notes.txt"), "")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := testOptions(t)
			inv, err := Load(opts)
			if err != nil {
				t.Fatal(err)
			}
			mustMkdir(t, filepath.Join(opts.StateDir, "pki"))
			mustWrite(t, filepath.Join(opts.StateDir, "pki", "ca.crt"), "")
			mustWrite(t, filepath.Join(opts.StateDir, statedir.MarkerName), "")
			lock := func(dir string) (*statedir.Lock, error) {
				tt.between(t, dir)
				return statedir.Acquire(dir)
			}
			err = purgeStateDir(opts.StateDir, inv, lock)
			var perr *PurgeError
			if !errors.As(err, &perr) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("purge: %v; want a *PurgeError with %q", err, tt.want)
			}
			if _, err := os.Stat(filepath.Join(opts.StateDir, "pki", "ca.crt")); err != nil {
				t.Errorf("the state dir was purged: %v", err)
			}
			l, err := statedir.Acquire(opts.StateDir)
			if err != nil {
				t.Fatalf("the lock was not released: %v", err)
			}
			l.Release()
		})
	}
}
