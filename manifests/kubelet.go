package manifests

import (
	"bytes"
	"fmt"
	corev1 "k8s.io/api/core/v1"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	"sigs.k8s.io/yaml"

	"github.com/kubeforge/kubeforge/internal/nodefile"
	"github.com/kubeforge/kubeforge/inventory"
)

// SystemdResolvConf is systemd-resolved's list of upstream servers.
const SystemdResolvConf = "/run/systemd/resolve/resolv.conf"

// KubeletParams are facts about the host that change kubelet files.
type KubeletParams struct {
	// CgroupV1 is true when the host runs cgroup v1: the config sets failCgroupV1=false.
	CgroupV1 bool
	// NodeIP is the kubelet's --node-ip (empty: none).
	NodeIP string
	// Hostname is the host's own hostname. When it is set and differs from the
	// inventory name, the kubelet gets --hostname-override=<inventory name>, as
	// kubeadm does when the node name differs from the hostname.
	Hostname string
	// ResolvConf is the host's resolv.conf for the kubelet when the inventory
	// sets none: systemd-resolved's upstream list where it runs (its stub,
	// 127.0.0.53, would make CoreDNS forward to itself), as kubeadm does.
	ResolvConf string
}

// KubeletConfiguration is the typed kubelet config as kubeadm 1.37 writes it to
// /var/lib/kubelet/config.yaml (the cluster-wide defaults of kubeadm's kubelet
// component config plus this host's instance config: containerRuntimeEndpoint),
// with failSwapOn true, failCgroupV1 false on cgroup v1 hosts and resolvConf from
// the inventory. inv.Cluster.Kubelet.Config is merged over it (objects merge, other
// values replace); a key the kubelet config does not know is an error.
func KubeletConfiguration(inv *inventory.Inventory, p KubeletParams) (*kubeletv1beta1.KubeletConfiguration, error) {
	cfg, err := kubeletBase(inv)
	if err != nil {
		return nil, err
	}
	cfg.ContainerRuntimeEndpoint = defaults(inv).runtimeEndpoint
	if p.CgroupV1 {
		cfg.FailCgroupV1 = ptrTo(false)
	}
	if cfg.ResolverConfig == nil && p.ResolvConf != "" {
		cfg.ResolverConfig = ptrTo(p.ResolvConf)
	}
	return mergeKubeletConfig(cfg, inv.Cluster.Kubelet.Config)
}

// kubeletBase is the cluster-wide part of the kubelet config (the kubelet-config
// ConfigMap's content) before the inventory's overrides: no per-host fields.
func kubeletBase(inv *inventory.Inventory) (*kubeletv1beta1.KubeletConfiguration, error) {
	d := defaults(inv)
	dnsIP, err := serviceIP(inv, 10)
	if err != nil {
		return nil, fmt.Errorf("build kubelet configuration: %w", err)
	}
	cfg := &kubeletv1beta1.KubeletConfiguration{
		TypeMeta: metav1.TypeMeta{
			APIVersion: kubeletv1beta1.SchemeGroupVersion.String(),
			Kind:       "KubeletConfiguration",
		},
		StaticPodPath: ManifestsDir,
		ClusterDNS:    []string{dnsIP},
		ClusterDomain: d.dnsDomain,
		Authentication: kubeletv1beta1.KubeletAuthentication{
			X509:      kubeletv1beta1.KubeletX509Authentication{ClientCAFile: pkiPath("ca.crt")},
			Webhook:   kubeletv1beta1.KubeletWebhookAuthentication{Enabled: ptrTo(true)},
			Anonymous: kubeletv1beta1.KubeletAnonymousAuthentication{Enabled: ptrTo(false)},
		},
		Authorization:      kubeletv1beta1.KubeletAuthorization{Mode: kubeletv1beta1.KubeletAuthorizationModeWebhook},
		HealthzBindAddress: "127.0.0.1",
		HealthzPort:        ptrTo(int32(10248)),
		RotateCertificates: true,
		CgroupDriver:       d.cgroupDriver,
	}
	if inv.Cluster.Kubelet.ResolvConf != "" {
		cfg.ResolverConfig = ptrTo(inv.Cluster.Kubelet.ResolvConf)
	}
	if len(inv.Cluster.FeatureGates) > 0 {
		cfg.FeatureGates = map[string]bool{}
		for k, v := range inv.Cluster.FeatureGates {
			cfg.FeatureGates[k] = v
		}
	}
	return cfg, nil
}

// mergeKubeletConfig applies overrides to cfg with inventory.MergeKubeletConfig,
// the merge and strict decoding validation checks the inventory with.
func mergeKubeletConfig(cfg *kubeletv1beta1.KubeletConfiguration, overrides map[string]any) (*kubeletv1beta1.KubeletConfiguration, error) {
	out, err := inventory.MergeKubeletConfig(cfg, overrides)
	if err != nil {
		return nil, fmt.Errorf("decode kubelet config overrides: %w", err)
	}
	return out, nil
}

// KubeletFiles returns the kubelet's files for host h, as kubeadm 1.37 and its
// packages lay them out: /var/lib/kubelet/config.yaml, /var/lib/kubelet/instance-config.yaml
// (the per-node containerRuntimeEndpoint that `kubeadm upgrade node` re-applies),
// /var/lib/kubelet/kubeadm-flags.env, and the systemd unit and kubeadm drop-in
// under /usr/lib/systemd/system (kubelet binary at /usr/bin/kubelet).
func KubeletFiles(inv *inventory.Inventory, h *inventory.Host, p KubeletParams) ([]nodefile.File, error) {
	if h == nil {
		return nil, fmt.Errorf("render kubelet files: no host")
	}
	cfg, err := KubeletConfiguration(inv, p)
	if err != nil {
		return nil, fmt.Errorf("render kubelet files for %s: %w", h.Name, err)
	}
	config, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("marshal kubelet configuration for %s: %w", h.Name, err)
	}
	instance := fmt.Sprintf("containerRuntimeEndpoint: %s\n", strconv.Quote(cfg.ContainerRuntimeEndpoint))
	flags, err := kubeletFlags(inv, h, p)
	if err != nil {
		return nil, fmt.Errorf("render kubelet files for %s: %w", h.Name, err)
	}
	return []nodefile.File{
		// 0600 where kubeadm writes 0644: the CIS benchmark's 4.1.9 (config) and 4.1.1 (unit) ask it (docs/security.md).
		{Path: KubeletConfigPath, Mode: 0o600, Data: config},
		{Path: KubeletInstancePath, Mode: 0o644, Data: []byte(instance)},
		{Path: KubeletFlagsPath, Mode: 0o644, Data: flags},
		{Path: KubeletUnitPath, Mode: 0o600, Data: []byte(kubeletUnit)},
		{Path: KubeletDropInPath, Mode: 0o600, Data: []byte(kubeletDropIn)},
	}, nil
}

// kubeletFlags is kubeadm-flags.env: KUBELET_KUBEADM_ARGS="...", kubeadm's flags
// (hostname-override, register-with-taints for workers) plus --node-ip, sorted,
// then inv.Cluster.Kubelet.ExtraArgs.
func kubeletFlags(inv *inventory.Inventory, h *inventory.Host, p KubeletParams) ([]byte, error) {
	var base []arg
	if p.NodeIP != "" {
		base = append(base, arg{"node-ip", p.NodeIP})
	}
	if p.Hostname != "" && p.Hostname != h.Name {
		base = append(base, arg{"hostname-override", h.Name})
	}
	// kubeadm registers a joining worker's taints with the flag; control planes get
	// theirs in the mark-control-plane phase.
	if !h.IsControlPlane() && len(h.Taints) > 0 {
		taints := make([]string, 0, len(h.Taints))
		for _, t := range h.Taints {
			if t.Key == "" || t.Effect == "" {
				return nil, fmt.Errorf("taint %q: key and effect are required", t.Key+"="+t.Value+":"+t.Effect)
			}
			taints = append(taints, (&corev1.Taint{Key: t.Key, Value: t.Value, Effect: corev1.TaintEffect(t.Effect)}).ToString())
		}
		base = append(base, arg{"register-with-taints", strings.Join(taints, ",")})
	}
	for name, v := range inv.Cluster.Kubelet.ExtraArgs {
		if strings.ContainsAny(name+v, "\"\n") {
			return nil, fmt.Errorf("kubelet extra arg %q: quotes and newlines are not allowed", name)
		}
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "KUBELET_KUBEADM_ARGS=%q\n", strings.Join(argsToCommand(base, inv.Cluster.Kubelet.ExtraArgs), " "))
	return b.Bytes(), nil
}

// kubeletUnit is the kubelet.service the kubelet .deb/.rpm packages install.
const kubeletUnit = `[Unit]
Description=kubelet: The Kubernetes Node Agent
Documentation=https://kubernetes.io/docs/
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=/usr/bin/kubelet
Restart=always
StartLimitInterval=0
RestartSec=10

[Install]
WantedBy=multi-user.target
`

// kubeletDropIn is the 10-kubeadm.conf drop-in the kubeadm package installs.
const kubeletDropIn = `# Installed by kubeforge, equivalent to the kubeadm package's drop-in (kubelet v1.11+).
[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
# Written by kubeforge (as by "kubeadm init" and "kubeadm join"): sets KUBELET_KUBEADM_ARGS.
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
# Left to the user for last-resort overrides: may set KUBELET_EXTRA_ARGS.
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
`
