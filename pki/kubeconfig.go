package pki

import (
	"fmt"
	"path"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kubeforge/kubeforge/inventory"
)

// kubeconfigWithCert builds a kubeconfig as kubeadm's CreateWithCerts: the
// cluster entry named after the cluster, user = the certificate's CN,
// context "<user>@<cluster>".
func kubeconfigWithCert(cluster, server string, caPEM []byte, kp *keyPair) ([]byte, error) {
	user := kp.Cert.Subject.CommonName
	cfg := basicKubeconfig(cluster, server, user, caPEM)
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: kp.CertPEM, ClientKeyData: kp.KeyPEM}
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return nil, fmt.Errorf("write kubeconfig for %s: %w", user, err)
	}
	return data, nil
}

func basicKubeconfig(cluster, server, user string, caPEM []byte) *clientcmdapi.Config {
	ctx := user + "@" + cluster
	return &clientcmdapi.Config{
		Clusters:       map[string]*clientcmdapi.Cluster{cluster: {Server: server, CertificateAuthorityData: caPEM}},
		Contexts:       map[string]*clientcmdapi.Context{ctx: {Cluster: cluster, AuthInfo: user}},
		AuthInfos:      map[string]*clientcmdapi.AuthInfo{},
		CurrentContext: ctx,
	}
}

func (b *Bundle) kubeconfig(host, name, cluster, server string) ([]byte, error) {
	kp := b.leaves[leafID{Host: host, Name: name}]
	if kp == nil || kp.Cert == nil || kp.Key == nil {
		who := host
		if who == "" {
			who = "the workstation"
		}
		return nil, fmt.Errorf("render %s for %s: its client certificate is missing (run Ensure first)", name, who)
	}
	return kubeconfigWithCert(cluster, server, b.CACertPEM(), kp)
}

// AdminKubeconfig is the workstation's admin.conf (user kubernetes-admin, group
// kubeadm:cluster-admins) for cluster, pointing at server.
func (b *Bundle) AdminKubeconfig(cluster, server string) ([]byte, error) {
	return b.kubeconfig("", "admin.conf", cluster, server)
}

// SuperAdminKubeconfig is the workstation's super-admin.conf (group
// system:masters) pointing at server; it is what creates the
// kubeadm:cluster-admins binding that admin.conf needs.
func (b *Bundle) SuperAdminKubeconfig(cluster, server string) ([]byte, error) {
	return b.kubeconfig("", "super-admin.conf", cluster, server)
}

// NodeFiles returns the PKI files and kubeconfigs host h receives, at kubeadm's
// paths under /etc/kubernetes. A control plane gets the CAs with their keys (when
// kubeforge holds them), its own leaves, sa.key/sa.pub, admin.conf,
// controller-manager.conf, scheduler.conf, kubelet.conf and, on the seed only
// (seed as in Ensure), super-admin.conf; and the encryption configuration
// when the cluster has encryption at rest. admin.conf and super-admin.conf point at the
// controlPlaneEndpoint, or without one (as kubeadm) at the host's own API
// server; controller-manager.conf, scheduler.conf and kubelet.conf at
// the local API server (kubeadm 1.37's control-plane kubelet local mode). A worker
// gets pki/ca.crt only: its bootstrap-kubelet.conf needs a token (see
// BootstrapKubeletFile), and it never gets a CA key.
func (b *Bundle) NodeFiles(inv *inventory.Inventory, seed, h *inventory.Host) ([]File, error) {
	ca := b.cas[CAName]
	if ca == nil || ca.Cert == nil {
		return nil, fmt.Errorf("render node files for %s: the cluster CA is missing (run Ensure first)", h.Name)
	}
	files := []File{{Path: path.Join(PKIDir, "ca.crt"), Mode: 0o644, Data: ca.CertPEM}}
	if !h.IsControlPlane() {
		return files, nil
	}
	addPair := func(base string, kp *keyPair, withKey bool) {
		files = append(files, File{Path: path.Join(PKIDir, base+".crt"), Mode: 0o644, Data: kp.CertPEM})
		if withKey && kp.KeyPEM != nil {
			files = append(files, File{Path: path.Join(PKIDir, base+".key"), Mode: 0o600, Data: kp.KeyPEM})
		}
	}
	if ca.KeyPEM != nil {
		files = append(files, File{Path: path.Join(PKIDir, "ca.key"), Mode: 0o600, Data: ca.KeyPEM})
	}
	for _, cs := range caSpecs[1:] {
		kp := b.cas[cs.Name]
		if kp == nil || kp.Cert == nil {
			return nil, fmt.Errorf("render node files for %s: CA %s is missing (run Ensure first)", h.Name, cs.Name)
		}
		addPair(cs.BaseName, kp, true)
	}
	if b.sa == nil || b.sa.Key == nil {
		return nil, fmt.Errorf("render node files for %s: the service-account key is missing (run Ensure first)", h.Name)
	}
	files = append(files,
		File{Path: path.Join(PKIDir, "sa.key"), Mode: 0o600, Data: b.sa.KeyPEM},
		File{Path: path.Join(PKIDir, "sa.pub"), Mode: 0o600, Data: b.sa.PubPEM})
	if len(b.encryption) > 0 {
		data, err := b.EncryptionConfig(inv.Cluster.Encryption.Resources)
		if err != nil {
			return nil, fmt.Errorf("render node files for %s: %w", h.Name, err)
		}
		files = append(files, File{Path: EncryptionConfigPath, Mode: 0o600, Data: data})
	}

	endpoint, err := ServerURL(inv, seed)
	if err != nil {
		return nil, fmt.Errorf("render node files for %s: %w", h.Name, err)
	}
	for _, spec := range leafSpecs {
		if !spec.Hosts(h, seed) {
			continue
		}
		if spec.Kubeconfig == "" {
			kp := b.leaves[leafID{Host: h.Name, Name: spec.Name}]
			if kp == nil || kp.Cert == nil || kp.Key == nil {
				return nil, fmt.Errorf("render node files for %s: certificate %s is missing (run Ensure first)", h.Name, spec.Name)
			}
			addPair(spec.BaseName, kp, true)
			continue
		}
		// As kubeadm: admin.conf and super-admin.conf name the cluster endpoint when there is one, else the
		// host's own API server (so each control plane's admin.conf works while that control plane does).
		server := endpoint
		if inv.Cluster.ControlPlaneEndpoint == "" || (spec.Kubeconfig != "admin.conf" && spec.Kubeconfig != "super-admin.conf") {
			server = LocalServerURL(h)
		}
		data, err := b.kubeconfig(h.Name, spec.Name, inv.Cluster.Name, server)
		if err != nil {
			return nil, err
		}
		files = append(files, File{Path: path.Join(KubernetesDir, spec.Kubeconfig), Mode: 0o600, Data: data})
	}
	return files, nil
}

// BootstrapKubeletFile is /etc/kubernetes/bootstrap-kubelet.conf for a joining
// node: the cluster CA, the server of the workers' kubelets (the cluster
// endpoint, or the node-local API proxy) and token t.
func (b *Bundle) BootstrapKubeletFile(inv *inventory.Inventory, t BootstrapToken) (File, error) {
	server, err := NodeServerURL(inv)
	if err != nil {
		return File{}, fmt.Errorf("render bootstrap-kubelet.conf: %w", err)
	}
	data, err := BootstrapKubeconfig(b.CACertPEM(), server, t)
	if err != nil {
		return File{}, err
	}
	return File{Path: BootstrapKubeletPath, Mode: 0o600, Data: data}, nil
}

// BootstrapKubeletPath is where a joining kubelet finds its bootstrap kubeconfig.
const BootstrapKubeletPath = KubernetesDir + "/bootstrap-kubelet.conf"
