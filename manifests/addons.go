package manifests

import (
	"fmt"
	"maps"
	"net"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientcmdv1 "k8s.io/client-go/tools/clientcmd/api/v1"
	componentbaseconfig "k8s.io/component-base/config/v1alpha1"
	kubeproxyv1alpha1 "k8s.io/kube-proxy/config/v1alpha1"
	"sigs.k8s.io/yaml"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/pki"
)

const kubeProxyKubeconfigPath = "/var/lib/kube-proxy/kubeconfig.conf"

// KubeProxyConfiguration is kube-proxy's config as kubeadm 1.37 defaults it (mode
// iptables, which kubeadm up to v1.36 leaves empty: kube-proxy's own default on
// Linux is the same; clusterCIDR = pod subnet, bindAddress 0.0.0.0 (:: for IPv6 nodes),
// clientConnection.kubeconfig from the ConfigMap), with one difference:
// conntrack.maxPerCore is 0, so kube-proxy never writes the host-global
// net.netfilter.nf_conntrack_max sysctl. That write fails when nodes are
// containers (kind does the same) and leaves the kernel's default table size.
// The bind address follows the address family of seed, the control plane the
// cluster's API is on (kubeadm: of its init node's advertise address).
func KubeProxyConfiguration(inv *inventory.Inventory, seed *inventory.Host) *kubeproxyv1alpha1.KubeProxyConfiguration {
	d := defaults(inv)
	bind := "0.0.0.0"
	if seed != nil {
		if ip := net.ParseIP(seed.NodeIP()); ip != nil && ip.To4() == nil {
			bind = "::"
		}
	}
	cfg := &kubeproxyv1alpha1.KubeProxyConfiguration{
		TypeMeta:         metav1.TypeMeta{APIVersion: kubeproxyv1alpha1.SchemeGroupVersion.String(), Kind: "KubeProxyConfiguration"},
		BindAddress:      bind,
		ClusterCIDR:      d.podSubnet,
		ClientConnection: componentbaseconfig.ClientConnectionConfiguration{Kubeconfig: kubeProxyKubeconfigPath},
		Conntrack:        kubeproxyv1alpha1.KubeProxyConntrackConfiguration{MaxPerCore: ptrTo(int32(0))},
	}
	if d.minor >= 37 {
		cfg.Mode = "iptables"
	}
	if len(inv.Cluster.FeatureGates) > 0 {
		cfg.FeatureGates = maps.Clone(inv.Cluster.FeatureGates)
	}
	return cfg
}

// kubeProxyKubeconfig is the ConfigMap's kubeconfig.conf: the API server endpoint,
// the in-cluster CA and the pod's service-account token.
func kubeProxyKubeconfig(server string) ([]byte, error) {
	cfg := clientcmdv1.Config{
		APIVersion: "v1",
		Kind:       "Config",
		Clusters: []clientcmdv1.NamedCluster{{Name: "default", Cluster: clientcmdv1.Cluster{
			CertificateAuthority: "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
			Server:               server,
		}}},
		Contexts: []clientcmdv1.NamedContext{{Name: "default", Context: clientcmdv1.Context{
			Cluster: "default", Namespace: "default", AuthInfo: "default",
		}}},
		CurrentContext: "default",
		AuthInfos: []clientcmdv1.NamedAuthInfo{{Name: "default", AuthInfo: clientcmdv1.AuthInfo{
			TokenFile: "/var/run/secrets/kubernetes.io/serviceaccount/token",
		}}},
	}
	return yaml.Marshal(cfg)
}

func kubeProxyObjects(inv *inventory.Inventory, seed *inventory.Host) ([]runtime.Object, error) {
	// kube-proxy runs on every node: with the node-local proxy, 127.0.0.1:6443
	// is the proxy on a worker and the local API server on a control plane.
	server, err := pki.NodeServerURL(inv)
	if err != nil {
		return nil, fmt.Errorf("build kube-proxy config: %w", err)
	}
	kubeconfig, err := kubeProxyKubeconfig(server)
	if err != nil {
		return nil, fmt.Errorf("marshal kube-proxy kubeconfig: %w", err)
	}
	config, err := yaml.Marshal(KubeProxyConfiguration(inv, seed))
	if err != nil {
		return nil, fmt.Errorf("marshal kube-proxy config: %w", err)
	}
	const name = "kube-proxy"
	labels := map[string]string{"k8s-app": name}
	ds := &appsv1.DaemonSet{
		TypeMeta:   dsType,
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metav1.NamespaceSystem, Labels: labels},
		Spec: appsv1.DaemonSetSpec{
			Selector:       &metav1.LabelSelector{MatchLabels: labels},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					PriorityClassName: "system-node-critical",
					Containers: []corev1.Container{{
						Name:            name,
						Image:           Images(inv)["kube-proxy"],
						ImagePullPolicy: corev1.PullIfNotPresent,
						Command: []string{
							"/usr/local/bin/kube-proxy",
							"--config=/var/lib/kube-proxy/" + KubeProxyConfigMapKey,
							"--hostname-override=$(NODE_NAME)",
						},
						SecurityContext: &corev1.SecurityContext{Privileged: ptrTo(true)},
						VolumeMounts: []corev1.VolumeMount{
							{MountPath: "/var/lib/kube-proxy", Name: "kube-proxy"},
							{MountPath: "/run/xtables.lock", Name: "xtables-lock"},
							{MountPath: "/lib/modules", Name: "lib-modules", ReadOnly: true},
						},
						Env: []corev1.EnvVar{{
							Name:      "NODE_NAME",
							ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}},
						}},
					}},
					HostNetwork:        true,
					ServiceAccountName: name,
					Volumes: []corev1.Volume{
						{Name: "kube-proxy", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
							LocalObjectReference: corev1.LocalObjectReference{Name: KubeProxyConfigMap},
						}}},
						hostPathVolume("xtables-lock", "/run/xtables.lock", corev1.HostPathFileOrCreate),
						{Name: "lib-modules", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/lib/modules"}}},
					},
					Tolerations:  []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					NodeSelector: map[string]string{"kubernetes.io/os": "linux"},
				},
			},
		},
	}
	return []runtime.Object{
		&corev1.ServiceAccount{TypeMeta: saType, ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metav1.NamespaceSystem}},
		clusterRoleBinding(nodeProxierCRB, "system:node-proxier", saSubject(name)),
		getConfigMapRole(name, KubeProxyConfigMap),
		roleBinding(metav1.NamespaceSystem, name, groupSubject(BootstrapTokenGroup)),
		configMap(metav1.NamespaceSystem, KubeProxyConfigMap, map[string]string{"app": name}, map[string]string{
			"kubeconfig.conf":     trimNewline(string(kubeconfig)),
			KubeProxyConfigMapKey: trimNewline(string(config)),
		}, len(inv.Cluster.FeatureGates) == 0), // a user-supplied config carries no hash (kubeadm)
		ds,
	}, nil
}

// corefile is kubeadm 1.37's Corefile for dnsDomain.
func corefile(dnsDomain string) string {
	var b strings.Builder
	b.WriteString(".:53 {\n")
	b.WriteString("    errors\n")
	b.WriteString("    health {\n       lameduck 5s\n    }\n")
	b.WriteString("    ready\n")
	fmt.Fprintf(&b, "    kubernetes %s in-addr.arpa ip6.arpa {\n", dnsDomain)
	b.WriteString("       pods insecure\n       fallthrough in-addr.arpa ip6.arpa\n       ttl 30\n    }\n")
	b.WriteString("    prometheus :9153\n")
	b.WriteString("    forward . /etc/resolv.conf {\n       max_concurrent 1000\n    }\n")
	fmt.Fprintf(&b, "    cache 30 {\n       disable success %s\n       disable denial %s\n    }\n", dnsDomain, dnsDomain)
	b.WriteString("    loop\n    reload\n    loadbalance\n}\n")
	return b.String()
}

func coreDNSObjects(inv *inventory.Inventory) ([]runtime.Object, error) {
	dnsIP, err := serviceIP(inv, 10)
	if err != nil {
		return nil, fmt.Errorf("build CoreDNS service: %w", err)
	}
	const name = "coredns"
	labels := map[string]string{"k8s-app": "kube-dns"}
	role := &rbacv1.ClusterRole{
		TypeMeta:   crType,
		ObjectMeta: metav1.ObjectMeta{Name: "system:coredns"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"endpoints", "services", "pods", "namespaces"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		},
	}
	maxUnavailable := intstr.FromInt32(1)
	dep := &appsv1.Deployment{
		TypeMeta:   depType,
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metav1.NamespaceSystem, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptrTo(int32(2)),
			Strategy: appsv1.DeploymentStrategy{
				Type:          appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: &maxUnavailable},
			},
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					PriorityClassName:  "system-cluster-critical",
					ServiceAccountName: name,
					Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
						PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
							Weight: 100,
							PodAffinityTerm: corev1.PodAffinityTerm{
								LabelSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
									Key: "k8s-app", Operator: metav1.LabelSelectorOpIn, Values: []string{"kube-dns"},
								}}},
								TopologyKey: "kubernetes.io/hostname",
							},
						}},
					}},
					Tolerations: []corev1.Toleration{
						{Key: "CriticalAddonsOnly", Operator: corev1.TolerationOpExists},
						{Key: LabelNodeRoleControlPlane, Effect: corev1.TaintEffectNoSchedule},
					},
					NodeSelector: map[string]string{"kubernetes.io/os": "linux"},
					Containers: []corev1.Container{{
						Name:            name,
						Image:           Images(inv)["coredns"],
						ImagePullPolicy: corev1.PullIfNotPresent,
						Resources: corev1.ResourceRequirements{
							Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("170Mi")},
							Requests: corev1.ResourceList{
								corev1.ResourceCPU:    resource.MustParse("100m"),
								corev1.ResourceMemory: resource.MustParse("70Mi"),
							},
						},
						Args:         []string{"-conf", "/etc/coredns/Corefile"},
						VolumeMounts: []corev1.VolumeMount{{Name: "config-volume", MountPath: "/etc/coredns", ReadOnly: true}},
						Ports: []corev1.ContainerPort{
							{ContainerPort: 53, Name: "dns", Protocol: corev1.ProtocolUDP},
							{ContainerPort: 53, Name: "dns-tcp", Protocol: corev1.ProtocolTCP},
							{ContainerPort: 9153, Name: "metrics", Protocol: corev1.ProtocolTCP},
							{ContainerPort: 8080, Name: "liveness-probe", Protocol: corev1.ProtocolTCP},
							{ContainerPort: 8181, Name: "readiness-probe", Protocol: corev1.ProtocolTCP},
						},
						LivenessProbe: &corev1.Probe{
							ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
								Path: "/health", Port: intstr.FromString("liveness-probe"), Scheme: corev1.URISchemeHTTP,
							}},
							InitialDelaySeconds: 60, TimeoutSeconds: 5, SuccessThreshold: 1, FailureThreshold: 5,
						},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
								Path: "/ready", Port: intstr.FromString("readiness-probe"), Scheme: corev1.URISchemeHTTP,
							}},
						},
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: ptrTo(false),
							Capabilities: &corev1.Capabilities{
								Add:  []corev1.Capability{"NET_BIND_SERVICE"},
								Drop: []corev1.Capability{"ALL"},
							},
							ReadOnlyRootFilesystem: ptrTo(true),
						},
					}},
					DNSPolicy: corev1.DNSDefault,
					Volumes: []corev1.Volume{{Name: "config-volume", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
						LocalObjectReference: corev1.LocalObjectReference{Name: name},
						Items:                []corev1.KeyToPath{{Key: "Corefile", Path: "Corefile"}},
					}}}},
				},
			},
		},
	}
	svc := &corev1.Service{
		TypeMeta: svcType,
		ObjectMeta: metav1.ObjectMeta{
			Name:      "kube-dns",
			Namespace: metav1.NamespaceSystem,
			Labels: map[string]string{
				"k8s-app":                       "kube-dns",
				"kubernetes.io/cluster-service": "true",
				"kubernetes.io/name":            "CoreDNS",
			},
			Annotations: map[string]string{"prometheus.io/port": "9153", "prometheus.io/scrape": "true"},
		},
		Spec: corev1.ServiceSpec{
			ClusterIP: dnsIP,
			Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)},
				{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(53)},
				{Name: "metrics", Port: 9153, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(9153)},
			},
			Selector: labels,
		},
	}
	return []runtime.Object{
		&corev1.ServiceAccount{TypeMeta: saType, ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metav1.NamespaceSystem}},
		role,
		clusterRoleBinding("system:coredns", "system:coredns", saSubject(name)),
		configMap(metav1.NamespaceSystem, name, nil, map[string]string{"Corefile": corefile(defaults(inv).dnsDomain)}, false),
		dep,
		svc,
	}, nil
}
