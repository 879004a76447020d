package manifests

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
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

// TestKubeadmConfigRecordsKubeforgeFlags: kubeadm-config records the flags
// and volumes kubeforge gives the control-plane components beyond kubeadm's
// (hardening, the audit log, encryption at rest) as extraArgs and
// extraVolumes, each as the static pod has it, because `kubeadm upgrade
// apply` renders the static pods from kubeadm-config alone: without them it
// drops --encryption-provider-config, and Secrets written before become
// unreadable. A user's extraArg wins over kubeforge's, as in the static pod.
func TestKubeadmConfigRecordsKubeforgeFlags(t *testing.T) {
	off := false
	for _, tc := range []struct {
		name       string
		encryption bool
		auditOff   bool
		user       map[string]string // the API server's extraArgs
		want       map[string][]string
		volumes    []string // the API server's extraVolumes
	}{
		{"audit and encryption", true, false, nil, map[string][]string{
			"apiServer": {"audit-log-maxage=30", "audit-log-maxbackup=10", "audit-log-maxsize=100", "audit-log-path=/var/log/kubernetes/audit/audit.log",
				"audit-policy-file=/etc/kubernetes/audit/policy.yaml", "encryption-provider-config=/etc/kubernetes/encryption/config.yaml",
				"profiling=false", "service-account-extend-token-expiration=false"},
			"controllerManager": {"profiling=false"}, "scheduler": {"profiling=false"},
		}, []string{"audit-policy", "audit-log", "encryption-config"}},
		{"both off", false, true, nil, map[string][]string{
			"apiServer":         {"profiling=false", "service-account-extend-token-expiration=false"},
			"controllerManager": {"profiling=false"}, "scheduler": {"profiling=false"},
		}, nil},
		{"the user's value wins", false, true, map[string]string{"profiling": "true", "v": "2"}, map[string][]string{
			"apiServer":         {"profiling=true", "service-account-extend-token-expiration=false", "v=2"},
			"controllerManager": {"profiling=false"}, "scheduler": {"profiling=false"},
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inv := exampleInventory()
			if tc.auditOff {
				inv.Cluster.Audit.Enabled = &off
			}
			inv.Cluster.APIServer.ExtraArgs = tc.user
			out, err := ClusterConfiguration(inv, ClusterParams{Encryption: tc.encryption})
			if err != nil {
				t.Fatal(err)
			}
			var cc clusterConfiguration
			if err := yaml.UnmarshalStrict(out, &cc); err != nil {
				t.Fatal(err)
			}
			files, err := StaticPods(inv, inv.ControlPlanes()[0], ControlPlaneParams{Encryption: tc.encryption})
			if err != nil {
				t.Fatal(err)
			}
			pods := decodePods(t, files)
			for comp, c := range map[string]struct {
				cfg componentConfig
				pod string
			}{
				"apiServer":         {cc.APIServer.componentConfig, KubeAPIServer},
				"controllerManager": {cc.ControllerManager, KubeControllerManager},
				"scheduler":         {cc.Scheduler, KubeScheduler},
			} {
				var got []string
				for _, a := range c.cfg.ExtraArgs {
					got = append(got, a.Name+"="+a.Value)
				}
				if !slices.Equal(got, tc.want[comp]) {
					t.Errorf("%s.extraArgs = %v, want %v", comp, got, tc.want[comp])
				}
				pod := pods[c.pod]
				if pod == nil {
					t.Fatalf("no %s static pod", c.pod)
				}
				for _, a := range got {
					if !slices.Contains(pod.Spec.Containers[0].Command, "--"+a) {
						t.Errorf("%s records --%s, which its static pod does not have", comp, a)
					}
				}
				var names []string
				for _, v := range c.cfg.ExtraVolumes {
					names = append(names, v.Name)
					i := slices.IndexFunc(pod.Spec.Volumes, func(pv corev1.Volume) bool { return pv.Name == v.Name })
					j := slices.IndexFunc(pod.Spec.Containers[0].VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == v.Name })
					if i < 0 || j < 0 {
						t.Errorf("%s records the volume %s, which its static pod does not have", comp, v.Name)
						continue
					}
					pv, m := pod.Spec.Volumes[i].HostPath, pod.Spec.Containers[0].VolumeMounts[j]
					if pv == nil || pv.Path != v.HostPath || pv.Type == nil || *pv.Type != v.PathType || m.MountPath != v.MountPath || m.ReadOnly != v.ReadOnly {
						t.Errorf("%s records the volume %+v; the static pod has %+v mounted %+v", comp, v, pv, m)
					}
				}
				if comp == "apiServer" && !slices.Equal(names, tc.volumes) {
					t.Errorf("apiServer.extraVolumes = %v, want %v", names, tc.volumes)
				}
				if comp != "apiServer" && len(names) > 0 {
					t.Errorf("%s.extraVolumes = %v, want none", comp, names)
				}
			}
		})
	}
}
