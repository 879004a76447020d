package manifests

import (
	"crypto/sha256"
	"fmt"
	"math"
	"net"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	netutils "k8s.io/utils/net"
	"sigs.k8s.io/yaml"

	"github.com/kubeforge/kubeforge/internal/nodefile"
	"github.com/kubeforge/kubeforge/inventory"
)

// Component names, as kubeadm names the static pods and their manifest files.
const (
	Etcd                  = "etcd"
	KubeAPIServer         = "kube-apiserver"
	KubeControllerManager = "kube-controller-manager"
	KubeScheduler         = "kube-scheduler"
)

// Annotations kubeadm puts on the etcd and kube-apiserver static pods.
const (
	EtcdAdvertiseClientURLsAnnotation   = "kubeadm.kubernetes.io/etcd.advertise-client-urls"
	APIServerAdvertiseAddressAnnotation = "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint"
)

// The etcd ports, from kubeadm's constants.
const (
	EtcdClientPort = 2379
	EtcdPeerPort   = 2380
)

// Probe ports and settings from kubeadm's constants.
const (
	etcdMetricsPort           = 2381
	controllerManagerPort     = 10257
	schedulerPort             = 10259
	probePortName             = "probe-port"
	componentHealthTimeoutSec = 240 // ControlPlaneComponentHealthCheck: 4m
)

// TrustStorePaths are the host trust-store directories kubeadm v1.37 mounts
// into the API server and controller manager when they exist on the host
// (besides /etc/ssl/certs, always): Debian's and the RHEL family's.
var TrustStorePaths = []string{"/etc/ca-certificates", "/etc/pki/ca-trust", "/etc/pki/tls/certs", "/usr/local/share/ca-certificates", "/usr/share/ca-certificates"}

// debianTrustStores are those a Debian-family host has: what is mounted when
// the host was not read (an offline render).
var debianTrustStores = []string{"/etc/ca-certificates", "/usr/local/share/ca-certificates", "/usr/share/ca-certificates"}

// EtcdParams are per-host values for the local etcd member.
type EtcdParams struct {
	// InitialCluster is "node1=https://10.0.0.1:2380,node2=..." (the members as known
	// when this one starts). Empty means this member alone.
	InitialCluster string
	// InitialClusterState is "new" (or empty) for the first member, "existing" for the
	// members that join. As kubeadm does, "new" writes no --initial-cluster-state flag.
	InitialClusterState string
}

// StaticPods returns /etc/kubernetes/manifests/{etcd,kube-apiserver,kube-controller-manager,kube-scheduler}.yaml
// for control-plane host h, as kubeadm 1.37 writes them. The advertise address is
// h.NodeIP(); inv's component extraArgs override the defaults. Files are 0600.
func StaticPods(inv *inventory.Inventory, h *inventory.Host, p ControlPlaneParams) ([]nodefile.File, error) {
	etcd := p.Etcd
	if h == nil || !h.IsControlPlane() {
		name := "<nil>"
		if h != nil {
			name = h.Name
		}
		return nil, fmt.Errorf("render static pods for %s: not a control-plane host", name)
	}
	ip := h.NodeIP()
	if netutils.ParseIPSloppy(ip) == nil {
		return nil, fmt.Errorf("render static pods for %s: advertise address %q is not an IP address", h.Name, ip)
	}
	etcdPod, err := etcdPod(inv, h, etcd)
	if err != nil {
		return nil, fmt.Errorf("render static pods for %s: %w", h.Name, err)
	}
	pods := []*corev1.Pod{etcdPod, apiServerPod(inv, h, p), controllerManagerPod(inv, p), schedulerPod(inv)}
	files := make([]nodefile.File, 0, len(pods))
	for _, p := range pods {
		data, err := yaml.Marshal(p)
		if err != nil {
			return nil, fmt.Errorf("marshal %s manifest: %w", p.Name, err)
		}
		files = append(files, nodefile.File{Path: path.Join(ManifestsDir, p.Name+".yaml"), Mode: 0o600, Data: data})
	}
	return files, nil
}

// componentPod is kubeadm's staticpodutil.ComponentPod.
func componentPod(c corev1.Container, volumes []corev1.Volume, annotations map[string]string) *corev1.Pod {
	sortVolumes(volumes)
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        c.Name,
			Namespace:   metav1.NamespaceSystem,
			Labels:      map[string]string{"component": c.Name, "tier": "control-plane"},
			Annotations: annotations,
		},
		Spec: corev1.PodSpec{
			Containers:        []corev1.Container{c},
			Priority:          ptrTo(int32(2000001000)),
			PriorityClassName: "system-node-critical",
			HostNetwork:       true,
			Volumes:           volumes,
			SecurityContext: &corev1.PodSecurityContext{
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
		},
	}
}

func ptrTo[T any](v T) *T { return &v }

// component is one Kubernetes control-plane container, as kubeadm builds
// them: its flags, mounts, HTTPS probes on probeHost:port (live for liveness
// and startup, ready for readiness, "" for none) and CPU request.
type component struct {
	name        string
	args        []string
	mounts      []corev1.VolumeMount
	probeHost   string
	live, ready string
	cpu         string
	port        int32
}

func (c component) container(inv *inventory.Inventory) corev1.Container {
	out := corev1.Container{
		Name:            c.name,
		Image:           Images(inv)[c.name],
		ImagePullPolicy: corev1.PullIfNotPresent,
		Command:         append([]string{c.name}, c.args...),
		VolumeMounts:    c.mounts,
		LivenessProbe:   livenessProbe(c.probeHost, c.live, corev1.URISchemeHTTPS),
		StartupProbe:    startupProbe(c.probeHost, c.live, corev1.URISchemeHTTPS),
		Resources:       cpuRequest(c.cpu),
		Ports:           probePort(c.port),
	}
	if c.ready != "" {
		out.ReadinessProbe = readinessProbe(c.probeHost, c.ready, corev1.URISchemeHTTPS)
	}
	return out
}

func sortVolumes(v []corev1.Volume) {
	for i := 1; i < len(v); i++ {
		for j := i; j > 0 && v[j].Name < v[j-1].Name; j-- {
			v[j], v[j-1] = v[j-1], v[j]
		}
	}
}

func sortMounts(v []corev1.VolumeMount) {
	for i := 1; i < len(v); i++ {
		for j := i; j > 0 && v[j].Name < v[j-1].Name; j-- {
			v[j], v[j-1] = v[j-1], v[j]
		}
	}
}

func hostPathVolume(name, p string, t corev1.HostPathType) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: p, Type: &t}}}
}

// httpProbe is kubeadm's createHTTPProbe.
func httpProbe(host, p string, scheme corev1.URIScheme, initialDelay, timeout, failure, period int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Host: host, Path: p, Port: intstr.FromString(probePortName), Scheme: scheme,
		}},
		InitialDelaySeconds: initialDelay,
		TimeoutSeconds:      timeout,
		FailureThreshold:    failure,
		PeriodSeconds:       period,
	}
}

func livenessProbe(host, p string, s corev1.URIScheme) *corev1.Probe {
	return httpProbe(host, p, s, 10, 15, 8, 10)
}

func readinessProbe(host, p string, s corev1.URIScheme) *corev1.Probe {
	return httpProbe(host, p, s, 0, 15, 3, 1)
}

func startupProbe(host, p string, s corev1.URIScheme) *corev1.Probe {
	const period = 10
	failure := int32(math.Ceil(float64(componentHealthTimeoutSec) / period))
	return httpProbe(host, p, s, period, 15, failure, period)
}

func cpuRequest(cpu string) corev1.ResourceRequirements {
	return corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu)}}
}

func probePort(port int32) []corev1.ContainerPort {
	return []corev1.ContainerPort{{Name: probePortName, ContainerPort: port, Protocol: corev1.ProtocolTCP}}
}

// bindProbeHost is the probe host for a component whose bind-address may be overridden
// (kubeadm's GetControllerManagerProbeAddress / GetSchedulerProbeAddress).
func bindProbeHost(extra map[string]string) string {
	addr, ok := extra["bind-address"]
	if !ok {
		return "127.0.0.1"
	}
	if addr == "0.0.0.0" || addr == "::" {
		return ""
	}
	return addr
}

func loopback(ip string) string {
	if netutils.IsIPv6String(ip) {
		return "::1"
	}
	return "127.0.0.1"
}

func pkiPath(name string) string { return path.Join(CertificatesDir, name) }

// controlPlaneVolumes returns the certificate volumes of the API server and the
// controller manager: k8s-certs, ca-certs and the host's extra trust stores.
func controlPlaneVolumes(trustStores []string) ([]corev1.Volume, []corev1.VolumeMount) {
	vols := []corev1.Volume{
		hostPathVolume("k8s-certs", CertificatesDir, corev1.HostPathDirectoryOrCreate),
		hostPathVolume("ca-certs", "/etc/ssl/certs", corev1.HostPathDirectoryOrCreate),
	}
	mounts := []corev1.VolumeMount{
		{Name: "k8s-certs", MountPath: CertificatesDir, ReadOnly: true},
		{Name: "ca-certs", MountPath: "/etc/ssl/certs", ReadOnly: true},
	}
	if trustStores == nil {
		trustStores = debianTrustStores
	}
	for _, p := range trustStores {
		name := strings.ReplaceAll(p, "/", "-")[1:]
		vols = append(vols, hostPathVolume(name, p, corev1.HostPathDirectoryOrCreate))
		mounts = append(mounts, corev1.VolumeMount{Name: name, MountPath: p, ReadOnly: true})
	}
	return vols, mounts
}

func apiServerPod(inv *inventory.Inventory, h *inventory.Host, p ControlPlaneParams) *corev1.Pod {
	d := defaults(inv)
	ip := h.NodeIP()
	extra := withFeatureGates(inv, inv.Cluster.APIServer.ExtraArgs)
	base := []arg{
		{"advertise-address", ip},
		{"enable-admission-plugins", "NodeRestriction"},
		{"service-cluster-ip-range", d.serviceSubnet},
		{"service-account-key-file", pkiPath("sa.pub")},
		{"service-account-signing-key-file", pkiPath("sa.key")},
		{"service-account-issuer", "https://kubernetes.default.svc." + d.dnsDomain},
		{"client-ca-file", pkiPath("ca.crt")},
		{"tls-cert-file", pkiPath("apiserver.crt")},
		{"tls-private-key-file", pkiPath("apiserver.key")},
		{"kubelet-client-certificate", pkiPath("apiserver-kubelet-client.crt")},
		{"kubelet-client-key", pkiPath("apiserver-kubelet-client.key")},
		{"enable-bootstrap-token-auth", "true"},
		{"secure-port", strconv.Itoa(inventory.DefaultAPIServerPort)},
		{"allow-privileged", "true"},
		{"kubelet-preferred-address-types", "InternalIP,ExternalIP,Hostname"},
		{"requestheader-username-headers", "X-Remote-User"},
		{"requestheader-group-headers", "X-Remote-Group"},
		{"requestheader-extra-headers-prefix", "X-Remote-Extra-"},
		{"requestheader-client-ca-file", pkiPath("front-proxy-ca.crt")},
		{"requestheader-allowed-names", "front-proxy-client"},
		{"proxy-client-cert-file", pkiPath("front-proxy-client.crt")},
		{"proxy-client-key-file", pkiPath("front-proxy-client.key")},
		{"etcd-servers", "https://" + net.JoinHostPort(loopback(ip), strconv.Itoa(EtcdClientPort))},
		{"etcd-cafile", pkiPath("etcd/ca.crt")},
		{"etcd-certfile", pkiPath("apiserver-etcd-client.crt")},
		{"etcd-keyfile", pkiPath("apiserver-etcd-client.key")},
	}
	// kubeadm sets --authorization-mode=Node,RBAC unless structured authorization
	// (--authorization-config) is used.
	if _, structured := extra["authorization-config"]; !structured {
		base = setArg(base, "authorization-mode", "Node,RBAC")
	}
	own, secVols, secMounts := apiServerOwnArgs(inv, p.Encryption)
	base = append(base, own...)
	vols, mounts := controlPlaneVolumes(p.TrustStores)
	vols, mounts = append(vols, secVols...), append(mounts, secMounts...)
	sortMounts(mounts)
	endpoint := net.JoinHostPort(ip, strconv.Itoa(inventory.DefaultAPIServerPort))
	c := component{name: KubeAPIServer, args: argsToCommand(base, extra), mounts: mounts, probeHost: ip,
		live: "/livez", ready: "/readyz", cpu: "250m", port: inventory.DefaultAPIServerPort}.container(inv)
	return componentPod(c, vols, map[string]string{APIServerAdvertiseAddressAnnotation: endpoint})
}

func controllerManagerPod(inv *inventory.Inventory, p ControlPlaneParams) *corev1.Pod {
	externalCA := p.ExternalCA
	d := defaults(inv)
	extra := withFeatureGates(inv, inv.Cluster.ControllerManager.ExtraArgs)
	kubeconfig := path.Join(KubernetesDir, "controller-manager.conf")
	base := append(electedArgs(kubeconfig),
		arg{"client-ca-file", pkiPath("ca.crt")},
		arg{"requestheader-client-ca-file", pkiPath("front-proxy-ca.crt")},
		arg{"root-ca-file", pkiPath("ca.crt")},
		arg{"service-account-private-key-file", pkiPath("sa.key")},
		arg{"cluster-signing-cert-file", signing(externalCA, pkiPath("ca.crt"))},
		arg{"cluster-signing-key-file", signing(externalCA, pkiPath("ca.key"))},
		arg{"use-service-account-credentials", "true"},
		arg{"controllers", "*,bootstrapsigner,tokencleaner"},
		// kubeadm adds these when a pod subnet is set; kubeforge always has one.
		arg{"allocate-node-cidrs", "true"},
		arg{"cluster-cidr", d.podSubnet},
		arg{"service-cluster-ip-range", d.serviceSubnet},
		arg{"cluster-name", d.clusterName},
	)
	vols, mounts := controlPlaneVolumes(p.TrustStores)
	vols = append(vols, hostPathVolume("kubeconfig", kubeconfig, corev1.HostPathFileOrCreate))
	mounts = append(mounts, corev1.VolumeMount{Name: "kubeconfig", MountPath: kubeconfig, ReadOnly: true})
	// kubeadm up to v1.35 mounts the FlexVolume plugin directory, read-write (drivers
	// talk over sockets there); v1.36 dropped the mount.
	if d.minor <= 35 {
		dir := or(extra["flex-volume-plugin-dir"], FlexVolumeDir)
		vols = append(vols, hostPathVolume("flexvolume-dir", dir, corev1.HostPathDirectoryOrCreate))
		mounts = append(mounts, corev1.VolumeMount{Name: "flexvolume-dir", MountPath: dir})
	}
	sortMounts(mounts)
	host := bindProbeHost(extra)
	c := component{name: KubeControllerManager, args: argsToCommand(base, extra), mounts: mounts, probeHost: host,
		live: "/healthz", cpu: "200m", port: controllerManagerPort}.container(inv)
	return componentPod(c, vols, nil)
}

func schedulerPod(inv *inventory.Inventory) *corev1.Pod {
	extra := withFeatureGates(inv, inv.Cluster.Scheduler.ExtraArgs)
	kubeconfig := path.Join(KubernetesDir, "scheduler.conf")
	base := electedArgs(kubeconfig)
	host := bindProbeHost(extra)
	c := component{name: KubeScheduler, args: argsToCommand(base, extra), mounts: []corev1.VolumeMount{{Name: "kubeconfig", MountPath: kubeconfig, ReadOnly: true}},
		probeHost: host, live: "/livez", ready: "/readyz", cpu: "100m", port: schedulerPort}.container(inv)
	return componentPod(c, []corev1.Volume{hostPathVolume("kubeconfig", kubeconfig, corev1.HostPathFileOrCreate)}, nil)
}

// electedArgs are the flags the controller manager and the scheduler share:
// loopback bind, leader election, and kubeconfig for the API and its
// authentication and authorization.
func electedArgs(kubeconfig string) []arg {
	return append(slices.Clone(hardeningArgs), []arg{
		{"bind-address", "127.0.0.1"},
		{"leader-elect", "true"},
		{"kubeconfig", kubeconfig},
		{"authentication-kubeconfig", kubeconfig},
		{"authorization-kubeconfig", kubeconfig},
	}...)
}

// hardeningArgs are the flags the API server, the controller manager and the
// scheduler get beyond kubeadm's, for the CIS benchmark (1.2.15, 1.3.2,
// 1.4.1: no profiling endpoint; docs/security.md).
var hardeningArgs = []arg{{"profiling", "false"}}

// apiServerOwnArgs are the API server's flags beyond kubeadm's, with the
// volumes and mounts they need: hardeningArgs, service-account tokens that
// expire when they say (CIS 1.2.30; kubeadm keeps the upstream extension to a
// year), the audit log and encryption at rest (securityArgs). The static pod
// has them, and kubeadm-config records them as extraArgs and extraVolumes.
func apiServerOwnArgs(inv *inventory.Inventory, encryption bool) ([]arg, []corev1.Volume, []corev1.VolumeMount) {
	args := append(slices.Clone(hardeningArgs), arg{"service-account-extend-token-expiration", "false"})
	sec, vols, mounts := securityArgs(inv, encryption)
	return append(args, sec...), vols, mounts
}

// signing is a signing flag's value: empty with an external CA, as kubeadm
// sets it (the CSR signer then does not start, instead of failing on a key
// that is not there).
func signing(externalCA bool, p string) string {
	if externalCA {
		return ""
	}
	return p
}

// ControlPlaneParams are what a control plane's static pods depend on beyond
// the inventory: its etcd member's flags, and whether the cluster CA's key
// stays with the user (an external CA).
type ControlPlaneParams struct {
	Etcd EtcdParams
	// ExternalCA: the controller manager gets no signing flags (kubeadm leaves
	// them out too); kubelet client certificates are then signed outside.
	ExternalCA bool
	// TrustStores are the host's trust-store directories (of TrustStorePaths)
	// to mount; nil when the host was not read: Debian's.
	TrustStores []string
	// Encryption: the API server reads pki.EncryptionConfigPath (the cluster
	// has encryption keys).
	Encryption bool
}

// EtcdDataDirOf is where etcd keeps its data: /var/lib/etcd, or the
// data-dir of the inventory's etcd extraArgs.
func EtcdDataDirOf(inv *inventory.Inventory) string {
	if v := inv.Cluster.Etcd.ExtraArgs["data-dir"]; v != "" {
		return v
	}
	return EtcdDataDir
}

// EtcdPeerURL is the peer URL of the etcd member on h ("https://<node IP>:2380"),
// the form EtcdParams.InitialCluster lists.
func EtcdPeerURL(h *inventory.Host) string {
	return "https://" + net.JoinHostPort(h.NodeIP(), strconv.Itoa(EtcdPeerPort))
}

// EtcdClientURL is the client URL of the etcd member on h ("https://<node IP>:2379").
func EtcdClientURL(h *inventory.Host) string {
	return "https://" + net.JoinHostPort(h.NodeIP(), strconv.Itoa(EtcdClientPort))
}

func etcdPod(inv *inventory.Inventory, h *inventory.Host, p EtcdParams) (*corev1.Pod, error) {
	ip := h.NodeIP()
	lo := loopback(ip)
	extra := inv.Cluster.Etcd.ExtraArgs
	dataDir := EtcdDataDirOf(inv)
	self := h.Name + "=" + EtcdPeerURL(h)
	base := []arg{
		{"name", h.Name},
		{"listen-client-urls", "https://" + net.JoinHostPort(lo, strconv.Itoa(EtcdClientPort)) + "," + EtcdClientURL(h)},
		{"advertise-client-urls", EtcdClientURL(h)},
		{"listen-peer-urls", EtcdPeerURL(h)},
		{"initial-advertise-peer-urls", EtcdPeerURL(h)},
		{"data-dir", dataDir},
		{"cert-file", pkiPath("etcd/server.crt")},
		{"key-file", pkiPath("etcd/server.key")},
		{"trusted-ca-file", pkiPath("etcd/ca.crt")},
		{"client-cert-auth", "true"},
		{"peer-cert-file", pkiPath("etcd/peer.crt")},
		{"peer-key-file", pkiPath("etcd/peer.key")},
		{"peer-trusted-ca-file", pkiPath("etcd/ca.crt")},
		{"peer-client-cert-auth", "true"},
		{"snapshot-count", "10000"},
		{"listen-metrics-urls", "http://" + net.JoinHostPort(lo, strconv.Itoa(etcdMetricsPort))},
		{"feature-gates", "InitialCorruptCheck=true"},
		{"watch-progress-notify-interval", "5s"},
	}
	switch p.InitialClusterState {
	case "", "new":
		ic := p.InitialCluster
		if ic == "" {
			ic = self
		}
		base = setArg(base, "initial-cluster", ic)
	case "existing":
		if p.InitialCluster == "" {
			return nil, fmt.Errorf("render etcd: initial cluster state \"existing\" needs the initial cluster")
		}
		base = setArg(base, "initial-cluster", p.InitialCluster)
		base = setArg(base, "initial-cluster-state", "existing")
	default:
		return nil, fmt.Errorf("render etcd: initial cluster state %q: want \"new\" or \"existing\"", p.InitialClusterState)
	}
	if ic := valueOf(base, "initial-cluster"); !containsMember(ic, self) {
		return nil, fmt.Errorf("render etcd: initial cluster %q does not list this member %q", ic, self)
	}

	probeHost, probePortNum, probeScheme := etcdProbe(extra, lo)
	certsDir := CertificatesDir + "/etcd"
	c := corev1.Container{
		Name:            Etcd,
		Image:           Images(inv)[Etcd],
		ImagePullPolicy: corev1.PullIfNotPresent,
		Command:         append([]string{Etcd}, argsToCommand(base, extra)...),
		VolumeMounts: []corev1.VolumeMount{
			{Name: "etcd-data", MountPath: dataDir},
			{Name: "etcd-certs", MountPath: certsDir},
		},
		Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("100m"),
			corev1.ResourceMemory: resource.MustParse("100Mi"),
		}},
		LivenessProbe:  livenessProbe(probeHost, "/livez", probeScheme),
		ReadinessProbe: readinessProbe(probeHost, "/readyz", probeScheme),
		StartupProbe:   startupProbe(probeHost, "/readyz", probeScheme),
		Ports:          probePort(probePortNum),
	}
	vols := []corev1.Volume{
		hostPathVolume("etcd-data", dataDir, corev1.HostPathDirectoryOrCreate),
		hostPathVolume("etcd-certs", certsDir, corev1.HostPathDirectoryOrCreate),
	}
	return componentPod(c, vols, map[string]string{EtcdAdvertiseClientURLsAnnotation: EtcdClientURL(h)}), nil
}

func valueOf(args []arg, name string) string {
	for _, a := range args {
		if a.name == name {
			return a.value
		}
	}
	return ""
}

func containsMember(initialCluster, member string) bool {
	for _, m := range strings.Split(initialCluster, ",") {
		if strings.TrimSpace(m) == member {
			return true
		}
	}
	return false
}

// etcdProbe is kubeadm's GetEtcdProbeEndpoint: the first --listen-metrics-urls.
func etcdProbe(extra map[string]string, lo string) (string, int32, corev1.URIScheme) {
	v, ok := extra["listen-metrics-urls"]
	if !ok {
		return lo, etcdMetricsPort, corev1.URISchemeHTTP
	}
	first, _, _ := strings.Cut(v, ",")
	scheme := corev1.URISchemeHTTP
	if strings.HasPrefix(first, "https://") {
		scheme = corev1.URISchemeHTTPS
	}
	hostport := first
	if i := strings.Index(hostport, "://"); i >= 0 {
		hostport = hostport[i+3:]
	}
	hostport, _, _ = strings.Cut(hostport, "/")
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return lo, etcdMetricsPort, scheme
	}
	if host == "" {
		host = lo
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return host, etcdMetricsPort, scheme
	}
	return host, int32(n), scheme
}

// InputsAnnotation carries, on each static pod, a digest of the files it reads
// from its host-path volumes (certificates, keys, kubeconfigs). Renewing a
// certificate changes the digest, so the manifest changes and the kubelet
// restarts the pod: it never keeps serving a certificate that was replaced.
const InputsAnnotation = "kubeforge.io/inputs"

// InputsOf returns the InputsAnnotation of a static pod manifest, "" when
// it has none or does not parse.
func InputsOf(manifest []byte) string {
	var pod corev1.Pod
	if yaml.Unmarshal(manifest, &pod) != nil {
		return ""
	}
	return pod.Annotations[InputsAnnotation]
}

// StampInputs sets InputsAnnotation on each static pod in pods from the
// content of the files in files that lie under one of its host-path volumes.
func StampInputs(pods, files []nodefile.File) ([]nodefile.File, error) {
	out := make([]nodefile.File, 0, len(pods))
	for _, pf := range pods {
		var pod corev1.Pod
		if err := yaml.Unmarshal(pf.Data, &pod); err != nil {
			return nil, fmt.Errorf("read %s: %w", pf.Path, err)
		}
		h := sha256.New()
		n := 0
		sorted := append([]nodefile.File(nil), files...)
		sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
		for _, f := range sorted {
			for _, v := range pod.Spec.Volumes {
				if v.HostPath == nil {
					continue
				}
				if p := v.HostPath.Path; f.Path == p || strings.HasPrefix(f.Path, strings.TrimSuffix(p, "/")+"/") {
					fmt.Fprintf(h, "%s\x00%x\x00", f.Path, sha256.Sum256(f.Data))
					n++
					break
				}
			}
		}
		if n == 0 {
			out = append(out, pf)
			continue
		}
		if pod.Annotations == nil {
			pod.Annotations = map[string]string{}
		}
		pod.Annotations[InputsAnnotation] = fmt.Sprintf("sha256:%x", h.Sum(nil))[:23]
		data, err := yaml.Marshal(&pod)
		if err != nil {
			return nil, fmt.Errorf("marshal %s: %w", pf.Path, err)
		}
		pf.Data = data
		out = append(out, pf)
	}
	return out, nil
}
