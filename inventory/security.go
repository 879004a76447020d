package inventory

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	pathpkg "path"
	"regexp"
	"slices"
	"strings"

	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	"sigs.k8s.io/yaml"
)

// AuditEnabled reports whether the API servers write an audit log (the default).
func (inv *Inventory) AuditEnabled() bool {
	return inv.Cluster.Audit.Enabled == nil || *inv.Cluster.Audit.Enabled
}

// EncryptionEnabled reports whether the API servers encrypt
// cluster.encryption.resources in etcd (the default).
func (inv *Inventory) EncryptionEnabled() bool {
	return inv.Cluster.Encryption.Enabled == nil || *inv.Cluster.Encryption.Enabled
}

// EncryptionKeySizes are the key lengths, in bytes, each provider accepts.
var EncryptionKeySizes = map[string][]int{
	EncryptionAESCBC:    {16, 24, 32},
	EncryptionAESGCM:    {16, 24, 32},
	EncryptionSecretbox: {32},
}

// safePathRe is a path kubeforge writes into a shell command and a hostPath
// volume: absolute, without spaces, quotes or other shell characters.
var safePathRe = regexp.MustCompile(`^/[A-Za-z0-9._/-]+$`)

// EncryptableResources are the resources cluster.encryption.resources may
// name: those whose place in etcd kubeforge knows, so that it can check
// there that every object is written with the current key.
var EncryptableResources = []string{"secrets", "configmaps"}

// security checks cluster.audit and cluster.encryption, and reads the audit
// policy and the key file they name.
func (c *checker) security(at path) {
	cl := &c.inv.Cluster
	a := &cl.Audit
	if a.Policy != "" {
		if msg := checkReadableFile(a.Policy); msg != "" {
			c.errorf(at.with("audit", "policy"), "paths are relative to the inventory file's directory", "cannot read audit policy: %s", msg)
		} else if data, err := os.ReadFile(a.Policy); err != nil {
			c.errorf(at.with("audit", "policy"), "", "cannot read audit policy: %v", err)
		} else if msg := auditPolicyProblem(data); msg != "" {
			c.errorf(at.with("audit", "policy"), "an audit.k8s.io/v1 Policy, as in docs/security.md", "audit policy %s: %s", a.Policy, msg)
		} else {
			a.PolicyData = data
		}
	}
	lp := a.LogPath
	switch dir := pathpkg.Dir(lp); {
	case !safePathRe.MatchString(lp) || pathpkg.Clean(lp) != lp:
		c.errorf(at.with("audit", "logPath"), "an absolute, clean path without spaces or shell characters, such as "+DefaultAuditLogPath,
			"invalid audit logPath %+.80q", lp)
	case !strings.HasPrefix(dir, "/var/log/") || dir == "/var/log/pods" || strings.HasPrefix(dir, "/var/log/pods/") ||
		dir == "/var/log/containers" || strings.HasPrefix(dir, "/var/log/containers/"):
		// The directory is mounted writable into the API server, and reset removes the log's files.
		c.errorf(at.with("audit", "logPath"), "a directory of the log's own under /var/log, such as "+pathpkg.Dir(DefaultAuditLogPath),
			"audit logPath %s: its directory %s would be mounted writable into the API server", lp, dir)
	}
	for _, f := range []struct {
		name string
		v    *int
	}{{"maxAge", a.MaxAge}, {"maxBackup", a.MaxBackup}, {"maxSize", a.MaxSize}} {
		if f.v != nil && *f.v < 0 {
			c.errorf(at.with("audit", f.name), "0 or more", "audit %s %d is negative", f.name, *f.v)
		}
	}

	e := &cl.Encryption
	sizes, ok := EncryptionKeySizes[e.Provider]
	if !ok {
		c.errorf(at.with("encryption", "provider"), "use secretbox (the default), aescbc or aesgcm", "unsupported encryption provider %+.80q", e.Provider)
	}
	seen := map[string]bool{}
	for i, r := range e.Resources {
		switch {
		case !slices.Contains(EncryptableResources, r):
			c.errorf(at.with("encryption", "resources", i), "kubeforge encrypts "+strings.Join(EncryptableResources, " and ")+
				" (it checks in etcd that each object is written with the current key)", "unsupported encryption resource %+.80q", r)
		case seen[r]:
			c.errorf(at.with("encryption", "resources", i), "name each resource once", "encryption resource %s is listed twice", r)
		}
		seen[r] = true
	}
	if e.KeyFile != "" {
		if msg := checkReadableFile(e.KeyFile); msg != "" {
			c.errorf(at.with("encryption", "keyFile"), "paths are relative to the inventory file's directory", "cannot read encryption keyFile: %s", msg)
		} else if data, err := os.ReadFile(e.KeyFile); err != nil {
			c.errorf(at.with("encryption", "keyFile"), "", "cannot read encryption keyFile: %v", err)
		} else if key, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(data))); err != nil {
			// The error names an offset, never the key.
			c.errorf(at.with("encryption", "keyFile"), "the file holds one base64 key, such as the output of `head -c 32 /dev/urandom | base64`",
				"encryption keyFile %s is not base64: %v", e.KeyFile, err)
		} else if ok && !slices.Contains(sizes, len(key)) {
			c.errorf(at.with("encryption", "keyFile"), fmt.Sprintf("a %s key is %s bytes before base64", e.Provider, joinInts(sizes)),
				"encryption keyFile %s holds a %d-byte key", e.KeyFile, len(key))
		} else {
			e.Key = key
		}
	}
}

// auditPolicyProblem says what is wrong with an audit policy file, or "".
func auditPolicyProblem(data []byte) string {
	var p auditv1.Policy
	if err := yaml.UnmarshalStrict(data, &p); err != nil {
		return err.Error()
	}
	switch {
	case p.APIVersion != auditv1.SchemeGroupVersion.String() || p.Kind != "Policy":
		return fmt.Sprintf("apiVersion %q kind %q: want %s Policy", p.APIVersion, p.Kind, auditv1.SchemeGroupVersion)
	case len(p.Rules) == 0:
		return "it has no rules (the API server refuses a policy without rules)"
	}
	for i, r := range p.Rules {
		switch r.Level {
		case auditv1.LevelNone, auditv1.LevelMetadata, auditv1.LevelRequest, auditv1.LevelRequestResponse:
		default:
			return fmt.Sprintf("rules[%d]: unknown level %q (None, Metadata, Request or RequestResponse)", i, r.Level)
		}
	}
	return ""
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, ", ")
}
