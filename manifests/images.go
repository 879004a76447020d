package manifests

import (
	"github.com/kubeforge/kubeforge/inventory"
)

// Images returns the image references kubeadm uses at inv's version for inv, honouring
// imageRepository: keys "pause", "etcd", "kube-apiserver", "kube-controller-manager",
// "kube-scheduler", "kube-proxy", "coredns". As kubeadm does, CoreDNS lives under
// ".../coredns/coredns" only for the default registry.k8s.io repository.
func Images(inv *inventory.Inventory) map[string]string {
	d := defaults(inv)
	img := func(repo, name, tag string) string { return repo + "/" + name + ":" + tag }
	dnsRepo := d.imageRepository
	if dnsRepo == inventory.DefaultImageRepository {
		dnsRepo += "/coredns"
	}
	return map[string]string{
		"pause":                   img(d.imageRepository, "pause", d.pins.Pause),
		"etcd":                    img(d.imageRepository, "etcd", d.pins.Etcd),
		"kube-apiserver":          img(d.imageRepository, "kube-apiserver", d.imageTag),
		"kube-controller-manager": img(d.imageRepository, "kube-controller-manager", d.imageTag),
		"kube-scheduler":          img(d.imageRepository, "kube-scheduler", d.imageTag),
		"kube-proxy":              img(d.imageRepository, "kube-proxy", d.imageTag),
		"coredns":                 img(dnsRepo, "coredns", d.pins.CoreDNS),
	}
}
