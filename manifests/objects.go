package manifests

import (
	"crypto/sha256"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/pki"
)

// Names of the objects and groups kubeadm 1.37 creates (cmd/kubeadm/app/constants
// and phases).
const (
	ClusterAdminsGroup            = pki.ClusterAdminsGroup
	NodesGroup                    = pki.NodesGroup
	BootstrapTokenGroup           = pki.NodeBootstrapTokenAuthGroup
	KubeadmConfigConfigMap        = "kubeadm-config"
	ClusterConfigurationKey       = "ClusterConfiguration"
	KubeletConfigConfigMap        = "kubelet-config"
	KubeletConfigConfigMapKey     = "kubelet"
	KubeProxyConfigMap            = "kube-proxy"
	KubeProxyDaemonSet            = "kube-proxy"
	KubeProxyConfigMapKey         = "config.conf"
	ComponentConfigHashAnnotation = "kubeadm.kubernetes.io/component-config.hash"

	nodesKubeadmConfigRole   = "kubeadm:nodes-kubeadm-config"
	kubeletConfigRole        = "kubeadm:kubelet-config"
	kubeletBootstrapCRB      = "kubeadm:kubelet-bootstrap"
	autoApproveBootstrapCRB  = "kubeadm:node-autoapprove-bootstrap"
	autoApproveRotationCRB   = "kubeadm:node-autoapprove-certificate-rotation"
	getNodesRole             = "kubeadm:get-nodes"
	apiServerKubeletCRB      = "kubeadm:apiserver-kubelet-client"
	apiServerKubeletClientCN = "kube-apiserver-kubelet-client"
	clusterInfoRole          = "kubeadm:bootstrap-signer-clusterinfo"
	nodeProxierCRB           = "kubeadm:node-proxier"
)

// The label and taint kubeadm's mark-control-plane phase puts on control-plane nodes.
const (
	LabelNodeRoleControlPlane  = "node-role.kubernetes.io/control-plane"
	LabelExcludeFromExternalLB = "node.kubernetes.io/exclude-from-external-load-balancers"
)

// ControlPlaneTaint is the taint kubeadm puts on control-plane nodes.
func ControlPlaneTaint() corev1.Taint {
	return corev1.Taint{Key: LabelNodeRoleControlPlane, Effect: corev1.TaintEffectNoSchedule}
}

var (
	crbType  = metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"}
	crType   = metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"}
	roleType = metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "Role"}
	rbType   = metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"}
	cmType   = metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"}
	saType   = metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"}
	svcType  = metav1.TypeMeta{APIVersion: "v1", Kind: "Service"}
	dsType   = metav1.TypeMeta{APIVersion: "apps/v1", Kind: "DaemonSet"}
	depType  = metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"}
)

// ClusterParams are facts about the hosts that change the cluster objects.
type ClusterParams struct {
	// CgroupV1: a host of the cluster runs cgroup v1, so the kubelet-config
	// ConfigMap carries failCgroupV1: false.
	CgroupV1 bool
	// Encryption: the API servers read an encryption configuration (the
	// cluster has encryption keys), so kubeadm-config records its flag.
	Encryption bool
	// Seed is the control plane the cluster's API endpoint is on without a
	// controlPlaneEndpoint (kubeadm's init node), as the caller decided it:
	// kube-proxy binds to its address family.
	Seed *inventory.Host
}

// ClusterObjects returns every API object `kubeadm init` creates once the control
// plane is up, in apply order, typed and with TypeMeta set:
//
//   - ClusterRoleBinding kubeadm:cluster-admins (first: apply it with super-admin.conf,
//     admin.conf's group gets its rights from it)
//   - upload-config: kube-system/kubeadm-config and its Role/RoleBinding
//     kubeadm:nodes-kubeadm-config; kube-system/kubelet-config and kubeadm:kubelet-config
//   - bootstrap-token RBAC: kubeadm:get-nodes, kubeadm:kubelet-bootstrap,
//     kubeadm:node-autoapprove-bootstrap, kubeadm:node-autoapprove-certificate-rotation,
//     kubeadm:apiserver-kubelet-client, and kube-public's kubeadm:bootstrap-signer-clusterinfo
//   - kube-proxy (ServiceAccount, RBAC, ConfigMap, DaemonSet) and CoreDNS
//     (ServiceAccount, RBAC, ConfigMap, Deployment, Service kube-dns).
//
// Not included: the bootstrap-token Secret and the cluster-info ConfigMap, made just
// in time elsewhere.
func ClusterObjects(inv *inventory.Inventory, p ClusterParams) ([]runtime.Object, error) {
	objs := []runtime.Object{
		clusterRoleBinding(ClusterAdminsGroup, "cluster-admin", groupSubject(ClusterAdminsGroup)),
	}

	cc, err := ClusterConfiguration(inv, p)
	if err != nil {
		return nil, err
	}
	objs = append(objs,
		configMap(metav1.NamespaceSystem, KubeadmConfigConfigMap, nil, map[string]string{ClusterConfigurationKey: string(cc)}, false),
		getConfigMapRole(nodesKubeadmConfigRole, KubeadmConfigConfigMap),
		roleBinding(metav1.NamespaceSystem, nodesKubeadmConfigRole, groupSubject(BootstrapTokenGroup), groupSubject(NodesGroup)),
	)

	kc, err := kubeletBase(inv)
	if err != nil {
		return nil, err
	}
	if p.CgroupV1 {
		// So a kubelet that `kubeadm join` configures from this ConfigMap starts on such a host.
		kc.FailCgroupV1 = ptrTo(false)
	}
	if kc, err = mergeKubeletConfig(kc, inv.Cluster.Kubelet.Config); err != nil {
		return nil, fmt.Errorf("build kubelet-config: %w", err)
	}
	kcYAML, err := yaml.Marshal(kc)
	if err != nil {
		return nil, fmt.Errorf("marshal kubelet-config: %w", err)
	}
	objs = append(objs,
		configMap(metav1.NamespaceSystem, KubeletConfigConfigMap, nil, map[string]string{KubeletConfigConfigMapKey: string(kcYAML)}, !userKubeletConfig(inv)),
		getConfigMapRole(kubeletConfigRole, KubeletConfigConfigMap),
		roleBinding(metav1.NamespaceSystem, kubeletConfigRole, groupSubject(NodesGroup), groupSubject(BootstrapTokenGroup)),
	)

	objs = append(objs,
		&rbacv1.ClusterRole{
			TypeMeta:   crType,
			ObjectMeta: metav1.ObjectMeta{Name: getNodesRole},
			Rules:      []rbacv1.PolicyRule{{Verbs: []string{"get"}, APIGroups: []string{""}, Resources: []string{"nodes"}}},
		},
		clusterRoleBinding(getNodesRole, getNodesRole, groupSubject(BootstrapTokenGroup)),
		clusterRoleBinding(kubeletBootstrapCRB, "system:node-bootstrapper", groupSubject(BootstrapTokenGroup)),
		clusterRoleBinding(autoApproveBootstrapCRB, "system:certificates.k8s.io:certificatesigningrequests:nodeclient", groupSubject(BootstrapTokenGroup)),
		clusterRoleBinding(autoApproveRotationCRB, "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", groupSubject(NodesGroup)),
		clusterRoleBinding(apiServerKubeletCRB, "system:kubelet-api-admin", rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: apiServerKubeletClientCN}),
		&rbacv1.Role{
			TypeMeta:   roleType,
			ObjectMeta: metav1.ObjectMeta{Name: clusterInfoRole, Namespace: metav1.NamespacePublic},
			Rules: []rbacv1.PolicyRule{{
				Verbs: []string{"get"}, APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{"cluster-info"},
			}},
		},
		roleBinding(metav1.NamespacePublic, clusterInfoRole, rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "system:anonymous"}),
	)

	proxy, err := kubeProxyObjects(inv, p.Seed)
	if err != nil {
		return nil, err
	}
	dns, err := coreDNSObjects(inv)
	if err != nil {
		return nil, err
	}
	objs = append(objs, proxy...)
	return append(objs, dns...), nil
}

func groupSubject(name string) rbacv1.Subject {
	return rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: name}
}

func saSubject(name string) rbacv1.Subject {
	return rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: metav1.NamespaceSystem}
}

func clusterRoleBinding(name, role string, subjects ...rbacv1.Subject) *rbacv1.ClusterRoleBinding {
	return &rbacv1.ClusterRoleBinding{
		TypeMeta:   crbType,
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   subjects,
	}
}

// roleBinding binds the Role of the same name in namespace ns.
func roleBinding(ns, name string, subjects ...rbacv1.Subject) *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{
		TypeMeta:   rbType,
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects:   subjects,
	}
}

// getConfigMapRole lets its subjects get the kube-system ConfigMap cm only.
func getConfigMapRole(name, cm string) *rbacv1.Role {
	return &rbacv1.Role{
		TypeMeta:   roleType,
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metav1.NamespaceSystem},
		Rules: []rbacv1.PolicyRule{{
			Verbs: []string{"get"}, APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{cm},
		}},
	}
}

// userKubeletConfig reports whether the inventory sets anything of the
// KubeletConfiguration, as a kubeadm user would by supplying one (kubeadm
// then leaves out the component-config hash).
func userKubeletConfig(inv *inventory.Inventory) bool {
	k := inv.Cluster.Kubelet
	return len(k.Config) > 0 || len(inv.Cluster.FeatureGates) > 0 || k.ResolvConf != "" ||
		(k.CgroupDriver != "" && k.CgroupDriver != inventory.DefaultCgroupDriver)
}

// configMap builds a ConfigMap; signed ones carry kubeadm's component-config hash
// annotation (sha256 over the values in key order), which `kubeadm upgrade` checks
// to tell generated configs from user-supplied ones.
func configMap(ns, name string, labels, data map[string]string, signed bool) *corev1.ConfigMap {
	cm := &corev1.ConfigMap{
		TypeMeta:   cmType,
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Data:       data,
	}
	if signed {
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		h := sha256.New()
		for _, k := range keys {
			h.Write([]byte(data[k]))
		}
		cm.Annotations = map[string]string{ComponentConfigHashAnnotation: fmt.Sprintf("sha256:%x", h.Sum(nil))}
	}
	return cm
}

// trimNewline drops one trailing newline, as a YAML "|-" block scalar does: kubeadm
// embeds kube-proxy's config and kubeconfig that way.
func trimNewline(s string) string { return strings.TrimSuffix(s, "\n") }
