package pki

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// twoCAs returns two different CA pairs to play the old and the new pair.
func twoCAs(t *testing.T) (old, new *keyPair) {
	t.Helper()
	old, err := newCA(caSpecs[0], ecdsaOpts())
	must(t, err)
	new, err = newCA(caSpecs[0], ecdsaOpts())
	must(t, err)
	return old, new
}

// pairIs reports which of the candidates kp is ("old", "new", "none"), or "mixed".
func pairIs(kp, old, new *keyPair) string {
	switch {
	case kp == nil:
		return "none"
	case kp.Cert != nil && kp.Key != nil && equalPEM(kp.CertPEM, old.CertPEM) && equalPEM(kp.KeyPEM, old.KeyPEM):
		return "old"
	case kp.Cert != nil && kp.Key != nil && equalPEM(kp.CertPEM, new.CertPEM) && equalPEM(kp.KeyPEM, new.KeyPEM):
		return "new"
	}
	return "mixed"
}

// leftovers lists the files in dir that are not the pair itself.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	must(t, err)
	var out []string
	for _, e := range entries {
		if e.Name() != "ca.crt" && e.Name() != "ca.key" {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestSavePairCrashLeavesOldOrNewPair stops savePair at each of its steps as a
// crash would, then loads: the pair read is always whole (the old one before
// the commit point, the new one after) and nothing of the write is left.
func TestSavePairCrashLeavesOldOrNewPair(t *testing.T) {
	tests := []struct {
		crashAfter string // "" runs to the end
		hadOld     bool
		want       string
	}{
		{crashAfter: stepKeyNew, hadOld: true, want: "old"},
		{crashAfter: stepKeyNew, hadOld: false, want: "none"},
		{crashAfter: stepCertNew, hadOld: true, want: "new"},
		{crashAfter: stepCertNew, hadOld: false, want: "new"},
		{crashAfter: stepKeyRenamed, hadOld: true, want: "new"},
		{crashAfter: stepKeyRenamed, hadOld: false, want: "new"},
		{crashAfter: stepCommitted, hadOld: true, want: "new"},
		{crashAfter: "", hadOld: true, want: "new"},
		{crashAfter: "", hadOld: false, want: "new"},
	}
	for _, tt := range tests {
		name := "crash after " + tt.crashAfter
		if tt.crashAfter == "" {
			name = "no crash"
		}
		if tt.hadOld {
			name += ", replacing a pair"
		} else {
			name += ", first pair"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			p := pairPaths{cert: filepath.Join(dir, "ca.crt"), key: filepath.Join(dir, "ca.key")}
			old, new := twoCAs(t)
			if tt.hadOld {
				must(t, savePair(p, old.CertPEM, 0o644, old.KeyPEM, nil))
			}
			crashed := false
			err := savePair(p, new.CertPEM, 0o644, new.KeyPEM, func(step string) bool {
				crashed = step == tt.crashAfter
				return crashed
			})
			must(t, err)
			if tt.crashAfter != "" && !crashed {
				t.Fatalf("savePair never reached step %q", tt.crashAfter)
			}
			kp, err := loadPair(dir, "ca")
			if err != nil {
				t.Fatalf("loadPair after the crash: %v", err)
			}
			if got := pairIs(kp, old, new); got != tt.want {
				t.Errorf("loaded pair is %s; want %s", got, tt.want)
			}
			if l := leftovers(t, dir); len(l) > 0 {
				t.Errorf("left after recovery: %v", l)
			}
		})
	}
}

// TestRecoverPair starts from the directories a crash can leave, file by
// file, including a write interrupted inside atomicfile (its temporary file).
func TestRecoverPair(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string // file name -> "old" or "new" content (cert or key by extension)
		want  string
	}{
		{name: "both .new files: commit not renamed yet", want: "new",
			files: map[string]string{"ca.crt": "old", "ca.key": "old", "ca.crt.new": "new", "ca.key.new": "new"}},
		{name: "cert.new alone: the key was renamed", want: "new",
			files: map[string]string{"ca.crt": "old", "ca.key": "new", "ca.crt.new": "new"}},
		{name: "cert.new alone on a first save", want: "new",
			files: map[string]string{"ca.key": "new", "ca.crt.new": "new"}},
		{name: "key.new alone: never committed", want: "old",
			files: map[string]string{"ca.crt": "old", "ca.key": "old", "ca.key.new": "new"}},
		{name: "key.new alone on a first save", want: "none",
			files: map[string]string{"ca.key.new": "new"}},
		{name: "temporary file of an interrupted write", want: "old",
			files: map[string]string{"ca.crt": "old", "ca.key": "old", ".ca.crt.new.tmp-123": "new"}},
		{name: "nothing to recover", want: "old",
			files: map[string]string{"ca.crt": "old", "ca.key": "old"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			old, new := twoCAs(t)
			for name, which := range tt.files {
				kp := old
				if which == "new" {
					kp = new
				}
				data := kp.CertPEM
				if strings.Contains(name, ".key") {
					data = kp.KeyPEM
				}
				must(t, os.WriteFile(filepath.Join(dir, name), data, 0o600))
			}
			kp, err := loadPair(dir, "ca")
			if err != nil {
				t.Fatalf("loadPair: %v", err)
			}
			if got := pairIs(kp, old, new); got != tt.want {
				t.Errorf("loaded pair is %s; want %s", got, tt.want)
			}
			if l := leftovers(t, dir); len(l) > 0 {
				t.Errorf("left after recovery: %v", l)
			}
		})
	}
}

func TestLoadRejectsKeyThatDoesNotMatchItsCertificate(t *testing.T) {
	tests := []struct {
		name      string
		keyFrom   string // copied over the key
		cert, key string
	}{
		{name: "CA", keyFrom: "etcd/ca.key", cert: "ca.crt", key: "ca.key"},
		{name: "leaf", keyFrom: "nodes/cp2/etcd/peer.key", cert: "nodes/cp2/etcd/server.crt", key: "nodes/cp2/etcd/server.key"},
		{name: "workstation kubeconfig client", keyFrom: "ca.key", cert: "workstation/kubeconfig/admin.crt", key: "workstation/kubeconfig/admin.key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, dir := generated(t, testInventory(), ecdsaOpts())
			data, err := os.ReadFile(filepath.Join(dir, tt.keyFrom))
			must(t, err)
			must(t, os.WriteFile(filepath.Join(dir, tt.key), data, 0o600))
			_, err = Load(dir)
			var mm *MismatchError
			if !errors.As(err, &mm) || mm.Cert != filepath.Join(dir, tt.cert) || mm.Key != filepath.Join(dir, tt.key) {
				t.Fatalf("Load: %v; want a *MismatchError for %s and %s", err, tt.key, tt.cert)
			}
			want := filepath.Join(dir, tt.key) + " does not match " + filepath.Join(dir, tt.cert)
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		})
	}
}
