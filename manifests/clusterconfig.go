package manifests

import (
	"fmt"
	"maps"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/pki"
)

// kubeadm's ClusterConfiguration, kubeadm.k8s.io/v1beta4: the fields kubeforge sets,
// with v1beta4's JSON names and omitempty tags (k8s.io/kubernetes is not a library).
type clusterConfiguration struct {
	metav1.TypeMeta             `json:",inline"`
	Etcd                        etcdConfig       `json:"etcd,omitempty"`
	Networking                  networking       `json:"networking,omitempty"`
	KubernetesVersion           string           `json:"kubernetesVersion,omitempty"`
	ControlPlaneEndpoint        string           `json:"controlPlaneEndpoint,omitempty"`
	APIServer                   apiServerConfig  `json:"apiServer,omitempty"`
	ControllerManager           componentConfig  `json:"controllerManager,omitempty"`
	Scheduler                   componentConfig  `json:"scheduler,omitempty"`
	DNS                         struct{}         `json:"dns,omitempty"`
	Proxy                       struct{}         `json:"proxy,omitempty"`
	CertificatesDir             string           `json:"certificatesDir,omitempty"`
	ImageRepository             string           `json:"imageRepository,omitempty"`
	FeatureGates                map[string]bool  `json:"featureGates,omitempty"`
	ClusterName                 string           `json:"clusterName,omitempty"`
	EncryptionAlgorithm         string           `json:"encryptionAlgorithm,omitempty"`
	CertificateValidityPeriod   *metav1.Duration `json:"certificateValidityPeriod,omitempty"`
	CACertificateValidityPeriod *metav1.Duration `json:"caCertificateValidityPeriod,omitempty"`
}

type componentConfig struct {
	ExtraArgs    []kubeadmArg    `json:"extraArgs,omitempty"`
	ExtraVolumes []hostPathMount `json:"extraVolumes,omitempty"`
}

// hostPathMount is v1beta4's HostPathMount: a host directory or file mounted
// into a control-plane component.
type hostPathMount struct {
	Name      string              `json:"name"`
	HostPath  string              `json:"hostPath"`
	MountPath string              `json:"mountPath"`
	ReadOnly  bool                `json:"readOnly,omitempty"`
	PathType  corev1.HostPathType `json:"pathType,omitempty"`
}

type apiServerConfig struct {
	componentConfig `json:",inline"`
	CertSANs        []string `json:"certSANs,omitempty"`
}

type kubeadmArg struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type networking struct {
	ServiceSubnet string `json:"serviceSubnet,omitempty"`
	PodSubnet     string `json:"podSubnet,omitempty"`
	DNSDomain     string `json:"dnsDomain,omitempty"`
}

type etcdConfig struct {
	Local *localEtcd `json:"local,omitempty"`
}

type localEtcd struct {
	DataDir   string       `json:"dataDir"`
	ExtraArgs []kubeadmArg `json:"extraArgs,omitempty"`
}

// recordedArgs are a component's extraArgs as kubeadm-config records them:
// kubeforge's own flags (own), then the user's (extra), which win as they do
// in the static pod. `kubeadm upgrade apply` renders the static pods from
// these, so they keep kubeforge's flags.
func recordedArgs(own []arg, extra map[string]string) []kubeadmArg {
	m := make(map[string]string, len(own)+len(extra))
	for _, a := range own {
		m[a.name] = a.value
	}
	maps.Copy(m, extra)
	return kubeadmArgs(m)
}

// hostPathMounts are vols and their mounts (paired by name) as v1beta4's
// extraVolumes.
func hostPathMounts(vols []corev1.Volume, mounts []corev1.VolumeMount) []hostPathMount {
	var out []hostPathMount
	for _, v := range vols {
		i := slices.IndexFunc(mounts, func(m corev1.VolumeMount) bool { return m.Name == v.Name })
		if v.HostPath == nil || i < 0 {
			continue
		}
		hm := hostPathMount{Name: v.Name, HostPath: v.HostPath.Path, MountPath: mounts[i].MountPath, ReadOnly: mounts[i].ReadOnly}
		if v.HostPath.Type != nil {
			hm.PathType = *v.HostPath.Type
		}
		out = append(out, hm)
	}
	return out
}

// kubeadmArgs turns an extraArgs map into v1beta4's list, sorted by name.
func kubeadmArgs(m map[string]string) []kubeadmArg {
	if len(m) == 0 {
		return nil
	}
	out := make([]kubeadmArg, 0, len(m))
	for k, v := range m {
		out = append(out, kubeadmArg{Name: k, Value: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ClusterConfiguration is kubeadm's ClusterConfiguration (kubeadm.k8s.io/v1beta4)
// for inv as YAML: what `kubeadm init` stores in kube-system/kubeadm-config under
// the key ClusterConfiguration. extraArgs are lists of {name, value} as v1beta4
// has them. Inventory featureGates are Kubernetes component gates: they appear
// as each component's --feature-gates extraArg (kubeadm's own featureGates
// field only accepts kubeadm's gates). The flags and volumes kubeforge gives
// the control-plane components beyond kubeadm's (hardening, the audit log,
// encryption at rest when p.Encryption) are extraArgs and extraVolumes too, so
// that the static pods `kubeadm upgrade apply` renders from this keep them.
func ClusterConfiguration(inv *inventory.Inventory, p ClusterParams) ([]byte, error) {
	d := defaults(inv)
	enc := "RSA-2048"
	switch inv.Cluster.KeyType {
	case "", inventory.KeyTypeRSA:
	case inventory.KeyTypeECDSA:
		enc = "ECDSA-P256"
	default:
		return nil, fmt.Errorf("build ClusterConfiguration: unknown key type %q", inv.Cluster.KeyType)
	}
	validity := inv.Cluster.CertificateValidity.Duration
	if validity == 0 {
		validity = inventory.DefaultCertificateValidity
	}
	dataDir := EtcdDataDirOf(inv)
	apiArgs, apiVols, apiMounts := apiServerOwnArgs(inv, p.Encryption)
	cc := clusterConfiguration{
		TypeMeta: metav1.TypeMeta{APIVersion: "kubeadm.k8s.io/v1beta4", Kind: "ClusterConfiguration"},
		Etcd:     etcdConfig{Local: &localEtcd{DataDir: dataDir, ExtraArgs: kubeadmArgs(inv.Cluster.Etcd.ExtraArgs)}},
		Networking: networking{
			ServiceSubnet: d.serviceSubnet,
			PodSubnet:     d.podSubnet,
			DNSDomain:     d.dnsDomain,
		},
		KubernetesVersion:    d.version,
		ControlPlaneEndpoint: inv.Cluster.ControlPlaneEndpoint,
		APIServer: apiServerConfig{
			componentConfig: componentConfig{
				ExtraArgs:    recordedArgs(apiArgs, withFeatureGates(inv, inv.Cluster.APIServer.ExtraArgs)),
				ExtraVolumes: hostPathMounts(apiVols, apiMounts),
			},
			CertSANs: append([]string(nil), inv.Cluster.CertSANs...),
		},
		ControllerManager:           componentConfig{ExtraArgs: recordedArgs(hardeningArgs, withFeatureGates(inv, inv.Cluster.ControllerManager.ExtraArgs))},
		Scheduler:                   componentConfig{ExtraArgs: recordedArgs(hardeningArgs, withFeatureGates(inv, inv.Cluster.Scheduler.ExtraArgs))},
		CertificatesDir:             CertificatesDir,
		ImageRepository:             d.imageRepository,
		ClusterName:                 d.clusterName,
		EncryptionAlgorithm:         enc,
		CertificateValidityPeriod:   &metav1.Duration{Duration: validity},
		CACertificateValidityPeriod: &metav1.Duration{Duration: pki.CAValidity},
	}
	out, err := yaml.Marshal(cc)
	if err != nil {
		return nil, fmt.Errorf("marshal ClusterConfiguration: %w", err)
	}
	return out, nil
}
