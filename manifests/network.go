package manifests

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/url"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/pki"
)

// The default pod network (cni.plugin flannel, docs/network.md): flannel's
// VXLAN overlay and kube-router's NetworkPolicy firewall, both from the
// artifacts (test/scripts/network.sh builds them under their upstream names).
const (
	FlannelVersion    = "v0.28.11"
	KubeRouterVersion = "v2.1.0"
	FlannelImage      = "docker.io/flannel/flannel:" + FlannelVersion
	KubeRouterImage   = "docker.io/cloudnativelabs/kube-router:" + KubeRouterVersion
	FlannelDaemonSet  = "kube-flannel"
	FlannelConfigMap  = "kube-flannel-cfg"
	// KubeRouterDaemonSet runs kube-router with only its firewall.
	KubeRouterDaemonSet = "kube-router"
	// FlannelVXLANPort is the UDP port of flannel's VXLAN (Linux's IANA
	// port is 4789; flannel keeps the kernel's historical default).
	FlannelVXLANPort = 8472
	// flannelRunDir holds flanneld's subnet.env on the host.
	flannelRunDir = "/run/flannel"
	// netConfAnnotation, on the flannel pods' template, is the digest of
	// net-conf.json: flanneld reads it only at start, so a change rolls them.
	netConfAnnotation = "kubeforge.io/net-conf"
)

// FlannelNetConf is flannel's net-conf.json for inv: the cluster's pod
// subnet as the flannel network, the VXLAN backend on its default port, and
// iptables (not nftables) rules, as kube-proxy's iptables mode has them.
// flanneld takes each node's subnet from its Node's spec.podCIDR (the
// controller manager's, or kubeforge's when it planned them).
func FlannelNetConf(inv *inventory.Inventory) string {
	conf := map[string]any{
		"Network":        defaults(inv).podSubnet,
		"EnableNFTables": false,
		"Backend":        map[string]any{"Type": "vxlan", "Port": FlannelVXLANPort},
	}
	b, _ := json.MarshalIndent(conf, "", "  ") // plain maps and strings: cannot fail
	return string(b) + "\n"
}

// NetworkObjects returns the API objects of the pod network plugin: for
// "flannel", flannel's and kube-router's ServiceAccounts, RBAC, flannel's
// ConfigMap and both DaemonSets; nothing for the others.
func NetworkObjects(inv *inventory.Inventory, plugin string) ([]runtime.Object, error) {
	if plugin != inventory.CNIFlannel {
		return nil, nil
	}
	// As kube-proxy: the node-local API endpoint (the API proxy on a worker,
	// the local API server on a control plane), so the network does not wait
	// for the Service network that kube-proxy makes.
	server, err := pki.NodeServerURL(inv)
	if err != nil {
		return nil, fmt.Errorf("build the pod network's API endpoint: %w", err)
	}
	u, err := url.Parse(server)
	if err != nil {
		return nil, fmt.Errorf("parse the pod network's API endpoint %q: %w", server, err)
	}
	apiHost, apiPort, err := net.SplitHostPort(u.Host)
	if err != nil {
		return nil, fmt.Errorf("parse the pod network's API endpoint %q: %w", server, err)
	}
	apiEnv := []corev1.EnvVar{
		{Name: "KUBERNETES_SERVICE_HOST", Value: apiHost},
		{Name: "KUBERNETES_SERVICE_PORT", Value: apiPort},
		fieldEnv("NODE_NAME", "spec.nodeName"),
	}
	netConf := FlannelNetConf(inv)
	sum := sha256.Sum256([]byte(netConf))

	flannelRole := &rbacv1.ClusterRole{
		TypeMeta:   crType,
		ObjectMeta: metav1.ObjectMeta{Name: "flannel"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}},
			{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"nodes/status"}, Verbs: []string{"patch"}},
		},
	}
	routerRole := &rbacv1.ClusterRole{
		TypeMeta:   crType,
		ObjectMeta: metav1.ObjectMeta{Name: "kube-router"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"namespaces", "pods", "services", "nodes", "endpoints"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update"}},
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch", "update"}},
		},
	}
	xtables := hostPathVolume("xtables-lock", "/run/xtables.lock", corev1.HostPathFileOrCreate)
	xtablesMount := corev1.VolumeMount{Name: "xtables-lock", MountPath: "/run/xtables.lock"}

	flannelLabels := map[string]string{"app": "flannel", "k8s-app": "flannel"}
	flannel := networkDaemonSet(FlannelDaemonSet, "flannel", flannelLabels, corev1.Container{
		Name:            "kube-flannel",
		Image:           FlannelImage,
		ImagePullPolicy: corev1.PullIfNotPresent,
		// --iface: the node's own address (the kubelet's --node-ip, the
		// inventory's address), never a guess from the routes.
		Command: []string{"/opt/bin/flanneld", "--ip-masq", "--kube-subnet-mgr", "--iface=$(HOST_IP)"},
		Env: append(append([]corev1.EnvVar(nil), apiEnv...),
			fieldEnv("POD_NAME", "metadata.name"),
			fieldEnv("POD_NAMESPACE", "metadata.namespace"),
			fieldEnv("HOST_IP", "status.hostIP"),
			corev1.EnvVar{Name: "EVENT_QUEUE_DEPTH", Value: "5000"},
		),
		Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("100m"),
			corev1.ResourceMemory: resource.MustParse("50Mi"),
		}},
		SecurityContext: &corev1.SecurityContext{Privileged: ptrTo(true)},
		VolumeMounts: []corev1.VolumeMount{
			{Name: "run", MountPath: flannelRunDir},
			{Name: "flannel-cfg", MountPath: "/etc/kube-flannel/"},
			xtablesMount,
		},
	}, []corev1.Volume{
		hostPathVolume("run", flannelRunDir, corev1.HostPathDirectoryOrCreate),
		{Name: "flannel-cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: FlannelConfigMap},
		}}},
		xtables,
	})
	flannel.Spec.Template.Annotations = map[string]string{netConfAnnotation: hex.EncodeToString(sum[:])}

	routerLabels := map[string]string{"k8s-app": "kube-router"}
	router := networkDaemonSet(KubeRouterDaemonSet, "kube-router", routerLabels, corev1.Container{
		Name:            "kube-router",
		Image:           KubeRouterImage,
		ImagePullPolicy: corev1.PullIfNotPresent,
		// Only the NetworkPolicy firewall: flannel routes the pods, kube-proxy
		// serves the Services.
		Command: []string{"/usr/local/bin/kube-router",
			"--run-router=false", "--run-firewall=true", "--run-service-proxy=false", "--run-loadbalancer=false",
			"--enable-cni=false", "--metrics-port=0", "--health-port=0"},
		Env: apiEnv,
		Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("100m"),
			corev1.ResourceMemory: resource.MustParse("64Mi"),
		}},
		SecurityContext: &corev1.SecurityContext{Privileged: ptrTo(true)},
		VolumeMounts: []corev1.VolumeMount{
			xtablesMount,
			{Name: "lib-modules", MountPath: "/lib/modules", ReadOnly: true},
		},
	}, []corev1.Volume{
		xtables,
		hostPathVolume("lib-modules", "/lib/modules", corev1.HostPathDirectoryOrCreate),
	})

	return []runtime.Object{
		&corev1.ServiceAccount{TypeMeta: saType, ObjectMeta: metav1.ObjectMeta{Name: "flannel", Namespace: metav1.NamespaceSystem}},
		flannelRole,
		clusterRoleBinding("flannel", "flannel", saSubject("flannel")),
		configMap(metav1.NamespaceSystem, FlannelConfigMap, flannelLabels, map[string]string{"net-conf.json": netConf}, false),
		flannel,
		&corev1.ServiceAccount{TypeMeta: saType, ObjectMeta: metav1.ObjectMeta{Name: "kube-router", Namespace: metav1.NamespaceSystem}},
		routerRole,
		clusterRoleBinding("kube-router", "kube-router", saSubject("kube-router")),
		router,
	}, nil
}

// networkDaemonSet is a pod network DaemonSet: one privileged host-network
// pod on every Linux node, whatever its taints, node-critical.
func networkDaemonSet(name, sa string, labels map[string]string, c corev1.Container, vols []corev1.Volume) *appsv1.DaemonSet {
	return &appsv1.DaemonSet{
		TypeMeta:   dsType,
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metav1.NamespaceSystem, Labels: labels},
		Spec: appsv1.DaemonSetSpec{
			Selector:       &metav1.LabelSelector{MatchLabels: labels},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					PriorityClassName:  "system-node-critical",
					HostNetwork:        true,
					ServiceAccountName: sa,
					Containers:         []corev1.Container{c},
					Volumes:            vols,
					Tolerations:        []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					NodeSelector:       map[string]string{"kubernetes.io/os": "linux"},
				},
			},
		},
	}
}

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
}
