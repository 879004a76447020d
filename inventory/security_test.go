package inventory

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSecurityProblemsHaveTheirLine: each bad audit or encryption setting is
// an error at its own line, with what is wrong, and the file names no secret.
func TestSecurityProblemsHaveTheirLine(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"typo-policy.yaml":  "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n  verb: [get]\n",
		"empty-policy.yaml": "apiVersion: audit.k8s.io/v1\nkind: Policy\n",
		"level-policy.yaml": "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Everything\n",
		"wrong-kind.yaml":   "apiVersion: v1\nkind: ConfigMap\n",
		"short.key":         base64.StdEncoding.EncodeToString([]byte("0123456789abcdef")) + "\n",
		"garbage.key":       "not base64 at all!\n",
		"good.key":          base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef")) + "\n",
		"good-policy.yaml":  "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n",
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, cluster, want string }{
		{"unknown field in the policy", "  audit:\n    policy: typo-policy.yaml " + marker + "\n", `unknown field "verb"`},
		{"policy without rules", "  audit:\n    policy: empty-policy.yaml " + marker + "\n", "no rules"},
		{"unknown level", "  audit:\n    policy: level-policy.yaml " + marker + "\n", `unknown level "Everything"`},
		{"not a policy", "  audit:\n    policy: wrong-kind.yaml " + marker + "\n", "want audit.k8s.io/v1 Policy"},
		{"missing policy", "  audit:\n    policy: nowhere.yaml " + marker + "\n", "cannot read audit policy"},
		{"policy is a directory", "  audit:\n    policy: adir " + marker + "\n", "is a directory"},
		{"relative log path", "  audit:\n    logPath: audit.log " + marker + "\n", "invalid audit logPath"},
		{"log path with a space", "  audit:\n    logPath: /var/log/a b/audit.log " + marker + "\n", "invalid audit logPath"},
		{"log in a shared directory", "  audit:\n    logPath: /var/log/audit.log " + marker + "\n", "mounted writable"},
		{"log under /etc/kubernetes", "  audit:\n    logPath: /etc/kubernetes/pki/audit.log " + marker + "\n", "mounted writable"},
		{"log in etcd's data", "  audit:\n    logPath: /var/lib/etcd/audit.log " + marker + "\n", "mounted writable"},
		{"log over sshd's config", "  audit:\n    logPath: /etc/ssh/sshd_config " + marker + "\n", "mounted writable"},
		{"log among the pods' logs", "  audit:\n    logPath: /var/log/pods/x/audit.log " + marker + "\n", "mounted writable"},
		{"negative maxSize", "  audit:\n    maxSize: -1 " + marker + "\n", "audit maxSize -1 is negative"},
		{"unknown provider", "  encryption:\n    provider: rot13 " + marker + "\n", `unsupported encryption provider "rot13"`},
		{"bad resource", "  encryption:\n    resources: [secrets, Secrets] " + marker + "\n", `unsupported encryption resource "Secrets"`},
		{"a resource kubeforge cannot check", "  encryption:\n    resources: [services] " + marker + "\n", `unsupported encryption resource "services"`},
		{"key of the wrong length", "  encryption:\n    keyFile: short.key " + marker + "\n", "holds a 16-byte key"},
		{"key not base64", "  encryption:\n    keyFile: garbage.key " + marker + "\n", "is not base64"},
		{"unknown field", "  encryption:\n    keys: [a] " + marker + "\n", `unknown field "keys"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := errorAtMarker(t, dir, head+"cluster:\n"+tc.cluster+oneCP, tc.want)
			if p != nil && strings.Contains(p.Message, "MDEyMzQ1") {
				t.Errorf("the message shows the key: %s", p.Message)
			}
		})
	}
	t.Run("good values load, read once", func(t *testing.T) {
		inv, err := parseIn(t, dir, head+"cluster:\n  audit:\n    policy: good-policy.yaml\n    maxSize: 0\n  encryption:\n    provider: aescbc\n    keyFile: good.key\n    resources: [configmaps, secrets]\n"+oneCP)
		if err != nil {
			t.Fatal(err)
		}
		if string(inv.Cluster.Audit.PolicyData) != files["good-policy.yaml"] || len(inv.Cluster.Encryption.Key) != 32 {
			t.Errorf("policy %q, key of %d bytes", inv.Cluster.Audit.PolicyData, len(inv.Cluster.Encryption.Key))
		}
		if !inv.AuditEnabled() || !inv.EncryptionEnabled() {
			t.Errorf("audit and encryption are on unless turned off")
		}
	})
	t.Run("defaults", func(t *testing.T) {
		inv, err := parseIn(t, dir, head+oneCP)
		if err != nil {
			t.Fatal(err)
		}
		a, e := inv.Cluster.Audit, inv.Cluster.Encryption
		if a.LogPath != DefaultAuditLogPath || *a.MaxAge != 30 || *a.MaxBackup != 10 || *a.MaxSize != 100 ||
			e.Provider != EncryptionSecretbox || len(e.Resources) != 1 || e.Resources[0] != "secrets" {
			t.Errorf("defaults: audit %+v, encryption %+v", a, e)
		}
	})
}
