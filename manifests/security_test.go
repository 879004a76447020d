package manifests

import (
	"slices"
	"strings"
	"testing"

	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	"sigs.k8s.io/yaml"
)

// TestDefaultAuditPolicyNeverLogsSecretBodies: the default policy decodes
// strictly as an audit.k8s.io/v1 Policy, its first rule that matches a
// Secret write logs metadata only, an RBAC write logs its request, and
// everything else gets metadata.
func TestDefaultAuditPolicyNeverLogsSecretBodies(t *testing.T) {
	var p auditv1.Policy
	if err := yaml.UnmarshalStrict(DefaultAuditPolicy(), &p); err != nil {
		t.Fatal(err)
	}
	// first returns the level of the first rule matching a write of resource in group.
	first := func(group, resource, verb string) auditv1.Level {
		for _, r := range p.Rules {
			if len(r.Users)+len(r.UserGroups)+len(r.NonResourceURLs) > 0 {
				continue
			}
			if len(r.Verbs) > 0 && !slices.Contains(r.Verbs, verb) {
				continue
			}
			if len(r.Resources) == 0 {
				return r.Level
			}
			for _, gr := range r.Resources {
				if gr.Group == group && (len(gr.Resources) == 0 || slices.Contains(gr.Resources, resource)) {
					return r.Level
				}
			}
		}
		return ""
	}
	for _, tc := range []struct {
		group, resource, verb string
		want                  auditv1.Level
	}{
		{"", "secrets", "create", auditv1.LevelMetadata},
		{"", "secrets", "get", auditv1.LevelMetadata},
		{"", "configmaps", "update", auditv1.LevelMetadata},
		{"rbac.authorization.k8s.io", "clusterrolebindings", "create", auditv1.LevelRequest},
		{"", "nodes", "patch", auditv1.LevelRequest},
		{"apps", "deployments", "create", auditv1.LevelMetadata},
		{"", "events", "create", auditv1.LevelNone},
	} {
		if got := first(tc.group, tc.resource, tc.verb); got != tc.want {
			t.Errorf("%s %s.%s: level %q, want %q", tc.verb, tc.resource, tc.group, got, tc.want)
		}
	}
}

// TestAPIServerSecurityFlags: with encryption the API server reads the
// encryption configuration from a read-only mount; with audit off it gets no
// audit flag; the controller manager and the scheduler have no profiling.
func TestAPIServerSecurityFlags(t *testing.T) {
	inv := exampleInventory()
	h := inv.ControlPlanes()[0]
	off := false
	for _, tc := range []struct {
		name        string
		encryption  bool
		auditOff    bool
		want, avoid []string
	}{
		{"both on", true, false, []string{"--encryption-provider-config=/etc/kubernetes/encryption/config.yaml", "--audit-policy-file=", "name: encryption-config", "--profiling=false"}, nil},
		{"both off", false, true, []string{"--profiling=false"}, []string{"--encryption-provider-config", "--audit-", "audit-log"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inv.Cluster.Audit.Enabled = nil
			if tc.auditOff {
				inv.Cluster.Audit.Enabled = &off
			}
			files, err := StaticPods(inv, h, ControlPlaneParams{Encryption: tc.encryption})
			if err != nil {
				t.Fatal(err)
			}
			all := string(joinFiles(files))
			for _, w := range tc.want {
				if !strings.Contains(all, w) {
					t.Errorf("missing %q", w)
				}
			}
			for _, a := range tc.avoid {
				if strings.Contains(all, a) {
					t.Errorf("unexpected %q", a)
				}
			}
			if n := strings.Count(all, "--profiling=false"); n != 3 {
				t.Errorf("--profiling=false %d times, want 3 (API server, controller manager, scheduler)", n)
			}
		})
	}
}
