package manifests

import (
	"strings"

	k8sversion "k8s.io/apimachinery/pkg/util/version"

	"github.com/kubeforge/kubeforge/inventory"
)

// Pins are the versions one kubeadm minor pins (cmd/kubeadm/app/constants:
// PauseVersion, DefaultEtcdVersion, CoreDNSVersion).
type Pins struct{ Pause, Etcd, CoreDNS string }

// pins holds, per supported Kubernetes minor, what its kubeadm pins.
var pins = map[uint]Pins{
	35: {Pause: "3.10.1", Etcd: "3.6.6-0", CoreDNS: "v1.13.1"},
	36: {Pause: "3.10.2", Etcd: "3.6.8-0", CoreDNS: "v1.14.2"},
	37: {Pause: "3.10.2", Etcd: "3.7.0-0", CoreDNS: "v1.14.6"},
	38: {Pause: "3.10.2", Etcd: "3.7.1-0", CoreDNS: "v1.15.0"}, // kubeadm v1.38.0-beta.0; a preview minor (inventory.allowPreRelease)
}

// PinsFor returns the pins of version's minor (validation admits only the
// minors that have them; an unknown one gets the newest's).
func PinsFor(version string) Pins {
	if v, err := k8sversion.ParseGeneric(version); err == nil {
		if p, ok := pins[v.Minor()]; ok {
			return p
		}
	}
	return pins[37]
}

// minorOf is version's minor (37 for "v1.37.2"); the default version's when
// version does not parse (validation admits only versions that do).
func minorOf(version string) uint {
	if v, err := k8sversion.ParseGeneric(version); err == nil {
		return v.Minor()
	}
	return k8sversion.MustParseGeneric(inventory.DefaultKubernetesVersion).Minor()
}

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
	// FlexVolumeDir is the controller manager's FlexVolume plugin directory
	// that kubeadm up to v1.35 mounts into it.
	FlexVolumeDir = "/usr/libexec/kubernetes/kubelet-plugins/volume/exec"
)

// clusterDefaults is the cluster settings with every default filled in.
type clusterDefaults struct {
	version         string // "v1.37.2"
	minor           uint   // 37
	imageTag        string // version as an image tag
	pins            Pins
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
		minor:           minorOf(v),
		imageTag:        strings.ReplaceAll(v, "+", "_"),
		pins:            PinsFor(v),
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
