package manifests

import (
	"strings"

	"github.com/kubeforge/kubeforge/inventory"
)

// Versions kubeadm v1.37 pins (cmd/kubeadm/app/constants).
const (
	PauseVersion   = "3.10.2"
	EtcdVersion    = "3.7.0-0"
	CoreDNSVersion = "v1.14.6"
)

// Paths of a kubeadm node.
const (
	KubernetesDir       = "/etc/kubernetes"
	CertificatesDir     = "/etc/kubernetes/pki"
	ManifestsDir        = "/etc/kubernetes/manifests"
	EtcdDataDir         = "/var/lib/etcd"
	KubeletDir          = "/var/lib/kubelet"
	KubeletBinary       = "/usr/bin/kubelet"
	KubeletUnitPath     = "/usr/lib/systemd/system/kubelet.service"
	KubeletDropInPath   = "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf"
	KubeletConfigPath   = KubeletDir + "/config.yaml"
	KubeletInstancePath = KubeletDir + "/instance-config.yaml"
	KubeletFlagsPath    = KubeletDir + "/kubeadm-flags.env"
	CNIConfigPath       = "/etc/cni/net.d/10-kubeforge.conflist"
)

// clusterDefaults is the cluster settings with every default filled in.
type clusterDefaults struct {
	version         string // "v1.37.2"
	imageTag        string // version as an image tag
	podSubnet       string
	serviceSubnet   string
	dnsDomain       string
	imageRepository string
	runtimeEndpoint string
	cgroupDriver    string
	clusterName     string
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// defaults returns inv's cluster settings with kubeadm's defaults for empty values.
func defaults(inv *inventory.Inventory) clusterDefaults {
	c := inv.Cluster
	v := or(c.KubernetesVersion, inventory.DefaultKubernetesVersion)
	if !strings.HasPrefix(v, "v") {
		v = "v" + v
	}
	return clusterDefaults{
		version:         v,
		imageTag:        strings.ReplaceAll(v, "+", "_"),
		podSubnet:       or(c.PodSubnet, inventory.DefaultPodSubnet),
		serviceSubnet:   or(c.ServiceSubnet, inventory.DefaultServiceSubnet),
		dnsDomain:       or(c.DNSDomain, inventory.DefaultDNSDomain),
		imageRepository: strings.TrimSuffix(or(c.ImageRepository, inventory.DefaultImageRepository), "/"),
		runtimeEndpoint: or(c.ContainerRuntimeEndpoint, inventory.DefaultContainerRuntimeEndpoint),
		cgroupDriver:    or(c.Kubelet.CgroupDriver, inventory.DefaultCgroupDriver),
		clusterName:     or(c.Name, inventory.DefaultClusterName),
	}
}

// serviceIP returns the n-th address of the first service subnet (1: the kubernetes
// Service, 10: kube-dns).
func serviceIP(inv *inventory.Inventory, n int) (string, error) {
	ip, err := inv.ServiceIP(n)
	if err != nil {
		return "", err
	}
	return ip.String(), nil
}
