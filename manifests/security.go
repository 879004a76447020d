package manifests

import (
	"fmt"
	"path"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	"sigs.k8s.io/yaml"

	"github.com/kubeforge/kubeforge/internal/nodefile"
	"github.com/kubeforge/kubeforge/inventory"
)

// AuditPolicyPath is the audit policy on each control plane; its directory is
// mounted read-only into the API server.
var AuditPolicyPath = path.Join(KubernetesDir, "audit", "policy.yaml")

// encryptionConfigDir holds the EncryptionConfiguration pki renders
// (pki.EncryptionConfigPath), mounted read-only into the API server.
var encryptionConfigDir = path.Join(KubernetesDir, "encryption")

// DefaultAuditPolicy is kubeforge's audit policy: nothing for the health and
// version endpoints, the busiest read-only system traffic, leases and events;
// metadata only for Secrets, ConfigMaps and token reviews and requests
// (whose bodies hold credentials); the request body of every write to RBAC,
// nodes and pods' bindings and evictions; metadata for everything else.
// RequestReceived is left out (each request's ResponseComplete says it all).
func DefaultAuditPolicy() []byte {
	writes := []string{"create", "update", "patch", "delete", "deletecollection"}
	p := auditv1.Policy{
		TypeMeta:   metav1.TypeMeta{APIVersion: auditv1.SchemeGroupVersion.String(), Kind: "Policy"},
		OmitStages: []auditv1.Stage{auditv1.StageRequestReceived},
		Rules: []auditv1.PolicyRule{
			{Level: auditv1.LevelNone, NonResourceURLs: []string{"/healthz*", "/livez*", "/readyz*", "/version", "/version/", "/metrics", "/openapi*"}},
			{Level: auditv1.LevelNone, Users: []string{"system:kube-proxy"}, Verbs: []string{"watch"},
				Resources: []auditv1.GroupResources{{Group: "", Resources: []string{"endpoints", "services", "services/status"}}, {Group: "discovery.k8s.io", Resources: []string{"endpointslices"}}}},
			{Level: auditv1.LevelNone, UserGroups: []string{"system:nodes"}, Verbs: []string{"get"},
				Resources: []auditv1.GroupResources{{Group: "", Resources: []string{"nodes", "nodes/status"}}}},
			// Leases: leader election and node heartbeats renew them every few seconds.
			{Level: auditv1.LevelNone, Resources: []auditv1.GroupResources{{Group: "coordination.k8s.io", Resources: []string{"leases"}}}},
			{Level: auditv1.LevelNone, Resources: []auditv1.GroupResources{{Group: "", Resources: []string{"events"}}, {Group: "events.k8s.io", Resources: []string{"events"}}}},
			{Level: auditv1.LevelMetadata, Resources: []auditv1.GroupResources{
				{Group: "", Resources: []string{"secrets", "configmaps", "serviceaccounts/token"}},
				{Group: "authentication.k8s.io", Resources: []string{"tokenreviews"}},
				{Group: "certificates.k8s.io", Resources: []string{"certificatesigningrequests"}},
			}},
			{Level: auditv1.LevelRequest, Verbs: writes, Resources: []auditv1.GroupResources{
				{Group: "rbac.authorization.k8s.io"},
				{Group: "", Resources: []string{"nodes", "nodes/status", "pods/binding", "pods/eviction", "namespaces"}},
				{Group: "admissionregistration.k8s.io"},
			}},
			{Level: auditv1.LevelMetadata},
		},
	}
	data, err := yaml.Marshal(&p)
	if err != nil {
		panic(fmt.Sprintf("marshal the default audit policy: %v", err)) // a fixed value of known types
	}
	return data
}

// AuditFiles are what a control plane receives for the audit log: the
// policy (the inventory's or kubeforge's); none when audit is off.
func AuditFiles(inv *inventory.Inventory, h *inventory.Host) []nodefile.File {
	if !inv.AuditEnabled() || !h.IsControlPlane() {
		return nil
	}
	data := inv.Cluster.Audit.PolicyData
	if data == nil {
		data = DefaultAuditPolicy()
	}
	return []nodefile.File{{Path: AuditPolicyPath, Mode: 0o600, Data: data}}
}

// securityArgs are the API server's flags and volumes for the audit log
// and, with encryption, for encryption at rest.
func securityArgs(inv *inventory.Inventory, encryption bool) ([]arg, []corev1.Volume, []corev1.VolumeMount) {
	var args []arg
	var vols []corev1.Volume
	var mounts []corev1.VolumeMount
	if inv.AuditEnabled() {
		a := inv.Cluster.Audit
		if a.LogPath == "" {
			a.LogPath = inventory.DefaultAuditLogPath
		}
		logDir := path.Dir(a.LogPath)
		policyDir := path.Dir(AuditPolicyPath)
		args = append(args,
			arg{"audit-policy-file", AuditPolicyPath},
			arg{"audit-log-path", a.LogPath},
			arg{"audit-log-maxage", strconv.Itoa(deref(a.MaxAge, inventory.DefaultAuditMaxAge))},
			arg{"audit-log-maxbackup", strconv.Itoa(deref(a.MaxBackup, inventory.DefaultAuditMaxBackup))},
			arg{"audit-log-maxsize", strconv.Itoa(deref(a.MaxSize, inventory.DefaultAuditMaxSize))})
		vols = append(vols, hostPathVolume("audit-policy", policyDir, corev1.HostPathDirectoryOrCreate),
			hostPathVolume("audit-log", logDir, corev1.HostPathDirectoryOrCreate))
		mounts = append(mounts, corev1.VolumeMount{Name: "audit-policy", MountPath: policyDir, ReadOnly: true},
			corev1.VolumeMount{Name: "audit-log", MountPath: logDir})
	}
	if encryption {
		args = append(args, arg{"encryption-provider-config", path.Join(encryptionConfigDir, "config.yaml")})
		vols = append(vols, hostPathVolume("encryption-config", encryptionConfigDir, corev1.HostPathDirectoryOrCreate))
		mounts = append(mounts, corev1.VolumeMount{Name: "encryption-config", MountPath: encryptionConfigDir, ReadOnly: true})
	}
	return args, vols, mounts
}

func deref(p *int, def int) int {
	if p == nil {
		return def
	}
	return *p
}
