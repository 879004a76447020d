// Package manifests renders the files and API objects a kubeadm v1.37 cluster has,
// from a kubeforge inventory: control-plane and etcd static pods, the kubelet's
// configuration, flags file and systemd unit, kubeadm's ClusterConfiguration, the
// objects `kubeadm init` creates once the API server is up (RBAC, kubeadm-config,
// kubelet-config, kube-proxy, CoreDNS) and the built-in bridge CNI config.
//
// Everything is built from typed k8s.io/api (and kubelet / kube-proxy config) values
// and marshalled with sigs.k8s.io/yaml; the facts (flags, probes, volumes, names)
// are taken from kubeadm v1.37's own code. Rendering is pure and deterministic:
// the same inventory gives byte-identical output.
package manifests
