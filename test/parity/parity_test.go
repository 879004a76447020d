//go:build parity

package parity

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8sversion "k8s.io/apimachinery/pkg/util/version"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/manifests"
	"github.com/kubeforge/kubeforge/pki"
	"github.com/kubeforge/kubeforge/tasks"
	"github.com/kubeforge/kubeforge/test/harnesslib"
)

// A case is one cluster's settings, said twice: as a kubeforge inventory and
// as the kubeadm configuration that asks kubeadm for the same cluster.
type parityCase struct {
	name, inventory, kubeadm string
	// setup shapes the host kubeadm runs on; trustStores is what kubeforge's
	// facts find on such a host (the node image is Debian's).
	setup       string
	trustStores []string
}

var debianTrustStores = []string{"/etc/ca-certificates", "/usr/local/share/ca-certificates", "/usr/share/ca-certificates"}

// initConfiguration is kubeadm's side of oneControlPlane: the node cp1 at 10.0.0.11.
const initConfiguration = `apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: 10.0.0.11
  bindPort: 6443
nodeRegistration:
  name: cp1
  criSocket: unix:///run/containerd/containerd.sock
---
`

const oneControlPlane = `ssh:
  user: root
hosts:
  - name: cp1
    address: 10.0.0.11
    roles: [control-plane]
`

// defaultInventory and defaultKubeadm ask for the same cluster with every
// setting at its default.
const defaultInventory = `apiVersion: kubeforge.io/v1alpha1
kind: Cluster
cluster:
  name: kubeforge
  kubernetesVersion: @VERSION@
` + oneControlPlane

const defaultKubeadm = initConfiguration + `apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: @VERSION@
clusterName: kubeforge
networking:
  podSubnet: 10.244.0.0/16
  serviceSubnet: 10.96.0.0/12
  dnsDomain: cluster.local
`

// versionToken stands in the cases for the Kubernetes version under test.
const versionToken = "@VERSION@"

var cases = []parityCase{{
	name: "defaults", inventory: defaultInventory, kubeadm: defaultKubeadm,
}, {
	// A host with the RHEL family's trust stores (and Debian's): kubeadm mounts each that exists.
	name: "rhel-trust-stores", inventory: defaultInventory, kubeadm: defaultKubeadm,
	setup:       "mkdir -p /etc/pki/ca-trust /etc/pki/tls/certs",
	trustStores: []string{"/etc/ca-certificates", "/etc/pki/ca-trust", "/etc/pki/tls/certs", "/usr/local/share/ca-certificates", "/usr/share/ca-certificates"},
}, {
	name: "customised",
	inventory: `apiVersion: kubeforge.io/v1alpha1
kind: Cluster
cluster:
  name: prod-eu
  kubernetesVersion: @VERSION@
  controlPlaneEndpoint: api.example.com:6443
  certSANs: [api.example.com, 192.0.2.10]
  podSubnet: 10.32.0.0/16
  serviceSubnet: 10.100.0.0/16
  dnsDomain: corp.internal
  imageRepository: registry.example.com/k8s
  certificateValidity: 720h
  keyType: ecdsa
  kubelet:
    cgroupDriver: cgroupfs
    config: {maxPods: 50}
  apiServer:
    extraArgs: {authorization-mode: Webhook, audit-log-maxage: "30"}
  controllerManager:
    extraArgs: {node-cidr-mask-size-ipv4: "25"}
  featureGates: {ImageVolume: true}
` + oneControlPlane,
	kubeadm: initConfiguration + `apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: @VERSION@
clusterName: prod-eu
controlPlaneEndpoint: api.example.com:6443
imageRepository: registry.example.com/k8s
certificateValidityPeriod: 720h
encryptionAlgorithm: ECDSA-P256
networking:
  podSubnet: 10.32.0.0/16
  serviceSubnet: 10.100.0.0/16
  dnsDomain: corp.internal
apiServer:
  certSANs: [api.example.com, 192.0.2.10]
  extraArgs:
  - {name: authorization-mode, value: Webhook}
  - {name: audit-log-maxage, value: "30"}
  - {name: feature-gates, value: ImageVolume=true}
controllerManager:
  extraArgs:
  - {name: node-cidr-mask-size-ipv4, value: "25"}
  - {name: feature-gates, value: ImageVolume=true}
scheduler:
  extraArgs:
  - {name: feature-gates, value: ImageVolume=true}
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
maxPods: 50
featureGates: {ImageVolume: true}
---
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
featureGates: {ImageVolume: true}
`,
}}

// allowed are the intended differences, each with its reason. A pattern
// matches a difference's key (a regexp, anchored); minors, when set, are the
// Kubernetes minors the entry holds for (others: every minor). An entry that
// holds for the version under test and matches no difference fails the test
// too: the list stays short and true.
var allowed = []struct {
	pattern, why string
	minors       []uint
}{
	{`/etc/kubernetes/manifests/.*\.metadata\.annotations\.kubeforge\.io/inputs`,
		"kubeforge stamps each static pod with a digest of the files it reads, so a renewed certificate restarts it (after `kubeadm certs renew` the user restarts them)", nil},
	{`/var/lib/kubelet/kubeadm-flags\.env\.--node-ip`,
		"the node IP is the inventory's address; the kubelet's own guess follows the default route, which is wrong on hosts with several interfaces", nil},
	{`.*\.subjects\[.*\]\.apiGroup`,
		"kubeforge spells out a Group subject's apiGroup; the API server defaults it to the same value, so the stored objects are equal", nil},
	{`ClusterRoleBinding/kubeadm:cluster-admins(\..*)?`,
		"kubeadm creates this binding through super-admin.conf while it writes admin.conf, outside the objects its dry run prints; kubeforge applies it with the others", nil},
	{`ConfigMap/kube-system/kube-proxy\.data\.config\.conf\.conntrack\.maxPerCore`,
		"kube-proxy must not write the host-global nf_conntrack_max sysctl (it fails on nodes that are containers; kind does the same)", nil},
	{`ConfigMap/kube-system/kube-proxy\.metadata\.annotations\.kubeadm\.kubernetes\.io/component-config\.hash`,
		"the hash of kube-proxy's config, which differs by maxPerCore", nil},
	{`Secret/kube-system/bootstrap-token-[a-z0-9]{6}(\..*)?`,
		"kubeadm init mints a join token; kubeforge mints one only when a kubelet joins (join/token) and deletes it afterwards (join/cleanup)", nil},
	{`/etc/kubernetes/manifests/kube-apiserver\.yaml\.spec\.containers\[kube-apiserver\]\.command\.--audit-(log-(maxage|maxbackup|maxsize|path)|policy-file)`,
		"audit logging is on by default (cluster.audit, docs/security.md; CIS 1.2.16-1.2.19); kubeadm leaves it to extraArgs and extraVolumes", nil},
	{`/etc/kubernetes/manifests/kube-apiserver\.yaml\.spec\.(containers\[kube-apiserver\]\.volumeMounts|volumes)\[(audit-log|audit-policy|encryption-config)\]\..*`,
		"the audit policy and log directory and the encryption configuration are mounted into the API server (cluster.audit, cluster.encryption)", nil},
	{`/etc/kubernetes/manifests/kube-apiserver\.yaml\.spec\.containers\[kube-apiserver\]\.command\.--encryption-provider-config`,
		"Secrets are encrypted at rest by default with a key kubeforge keeps with the PKI (cluster.encryption, docs/security.md); kubeadm does not encrypt", nil},
	{`/etc/kubernetes/manifests/kube-(apiserver|controller-manager|scheduler)\.yaml\.spec\.containers\[kube-(apiserver|controller-manager|scheduler)\]\.command\.--profiling`,
		"no profiling endpoint (CIS 1.2.15, 1.3.2, 1.4.1); kubeadm keeps the upstream default, on", nil},
	{`/etc/kubernetes/manifests/kube-apiserver\.yaml\.spec\.containers\[kube-apiserver\]\.command\.--service-account-extend-token-expiration`,
		"service-account tokens expire when they say (CIS 1.2.30); kubeadm keeps the upstream extension of projected tokens to a year", nil},
	{`ConfigMap/kube-system/kubeadm-config\.data\.ClusterConfiguration\.(apiServer|controllerManager|scheduler)\.(extraArgs\[(profiling|service-account-extend-token-expiration|audit-(log-(maxage|maxbackup|maxsize|path)|policy-file)|encryption-provider-config)\]|extraVolumes\[(audit-log|audit-policy|encryption-config)\])(\..*)?`,
		"kubeadm-config records the flags and volumes above as extraArgs and extraVolumes, so the static pods `kubeadm upgrade apply` renders from it keep them (docs/parity.md, kubeadm's day-2 commands)", nil},
	{`Service/kube-system/kube-dns\.metadata\.resourceVersion`,
		"kubeadm's template carries resourceVersion \"0\", which the API server ignores on create", nil},
	{`/etc/kubernetes/pki/apiserver-kubelet-client\.crt\.subject`,
		"kubeadm v1.35 puts the API server's kubelet client in kubeadm:cluster-admins; v1.36 dropped that (least privilege) and binds it to system:kubelet-api-admin, which kubeforge does for every minor",
		[]uint{35}},
	{`ClusterRoleBinding/kubeadm:apiserver-kubelet-client(\..*)?`,
		"the binding of the API server's kubelet client to system:kubelet-api-admin, which kubeadm creates from v1.36 (see the entry above)",
		[]uint{35}},
}

// TestKubeadmParity renders each case with kubeadm's code and with
// kubeforge's, and compares certificates, kubeconfigs, static pods, kubelet
// files and API objects field by field.
func TestKubeadmParity(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	// The artifacts directory names the version under test (its VERSION file)
	// and holds that version's kubeadm, so each minor is checked against its own.
	artifacts := filepath.Join(root, ".cache", "artifacts")
	if v := os.Getenv("KUBEFORGE_PARITY_ARTIFACTS"); v != "" {
		artifacts = v
	}
	kubeadm := filepath.Join(artifacts, "bin", "kubeadm")
	if v := os.Getenv("KUBEFORGE_KUBEADM"); v != "" {
		kubeadm = v
	}
	if _, err := os.Stat(kubeadm); err != nil {
		t.Fatalf("no kubeadm binary (run `make artifacts`): %v", err)
	}
	b, err := os.ReadFile(filepath.Join(artifacts, "VERSION"))
	if err != nil {
		t.Fatalf("read the artifacts' version: %v", err)
	}
	version := strings.TrimSpace(string(b))
	v, err := k8sversion.ParseGeneric(version)
	if err != nil {
		t.Fatalf("artifacts version %q: %v", version, err)
	}
	t.Logf("Kubernetes %s, kubeadm %s", version, kubeadm)
	// A pre-release (the preview minor) is installed only when the inventory allows it.
	invVersion := version
	if sv, err := k8sversion.ParseSemantic(version); err == nil && sv.PreRelease() != "" {
		invVersion += "\n  allowPreRelease: true"
	}
	holds := func(i int) bool { return allowed[i].minors == nil || slices.Contains(allowed[i].minors, v.Minor()) }
	used := make([]bool, len(allowed))
	defer func() {
		for i, u := range used {
			if !u && holds(i) && !t.Failed() {
				t.Errorf("allow-list entry %q (%s) matches no difference: remove it", allowed[i].pattern, allowed[i].why)
			}
		}
	}()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ko, err := RunKubeadm(kubeadm, harnesslib.DefaultImage, strings.ReplaceAll(tc.kubeadm, versionToken, version), tc.setup)
			if err != nil {
				t.Fatal(err)
			}
			stores := tc.trustStores
			if stores == nil {
				stores = debianTrustStores
			}
			kfFiles, kfObjs := renderKubeforge(t, strings.ReplaceAll(tc.inventory, versionToken, invVersion), stores)
			var diffs []Difference
			ka, err := FlattenFiles(ko.Files)
			if err != nil {
				t.Fatal(err)
			}
			kb, err := FlattenFiles(onlyPaths(kfFiles, ko.Files))
			if err != nil {
				t.Fatal(err)
			}
			diffs = append(diffs, Compare(ka, kb)...)
			oa, err := FlattenObjects(ko.Objects)
			if err != nil {
				t.Fatal(err)
			}
			ob, err := FlattenObjects(kfObjs)
			if err != nil {
				t.Fatal(err)
			}
			diffs = append(diffs, Compare(oa, ob)...)
			var unexplained []string
			for _, d := range diffs {
				ok := false
				for i, a := range allowed {
					if holds(i) && regexp.MustCompile("^(?:"+a.pattern+")$").MatchString(d.Key) {
						used[i], ok = true, true
					}
				}
				if !ok {
					unexplained = append(unexplained, d.String())
				}
			}
			if len(unexplained) > 0 {
				t.Errorf("%d differences from kubeadm that the allow-list does not explain:\n  %s", len(unexplained), strings.Join(unexplained, "\n  "))
			}
			t.Logf("%d fields compared; %d differences, all allowed", len(ka)+len(oa), len(diffs)-len(unexplained))
		})
	}
}

// onlyPaths keeps the files of got that kubeadm also renders (those kubeadm
// renders and kubeforge lacks show up as absent fields).
func onlyPaths(got map[string][]byte, want map[string][]byte) map[string][]byte {
	out := map[string][]byte{}
	for p, b := range got {
		if _, ok := want[p]; ok {
			out[p] = b
		}
	}
	return out
}

// renderKubeforge renders the seed's files (the file's first control plane: nothing is observed) and the cluster
// objects, as `up` would push and apply them.
func renderKubeforge(t *testing.T, invYAML string, trustStores []string) (map[string][]byte, []runtime.Object) {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(p, []byte(invYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	env := tasks.NewEnv(inv, filepath.Join(dir, "state"), slog.New(slog.NewTextHandler(io.Discard, nil)), tasks.Options{})
	if err := tasks.EnsureCerts(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	h := env.Host(env.Seed())
	// kubeadm runs in a container whose hostname is not the node name.
	h.Facts = &tasks.Facts{CgroupV2: true, Hostname: "parity-container", TrustStores: trustStores}
	files, err := env.NodeFiles(h)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		out[f.Path] = f.Data
	}
	objs, err := manifests.ClusterObjects(inv, manifests.ClusterParams{Encryption: len(env.PKI.EncryptionKeys()) > 0, Seed: env.Seed()})
	if err != nil {
		t.Fatal(err)
	}
	// cluster-info is published by the cluster/bootstrap step, from this kubeconfig.
	ci, err := pki.ClusterInfoKubeconfig(env.PKI.CACertPEM(), inv.ServerURL(env.Seed()))
	if err != nil {
		t.Fatal(err)
	}
	objs = append(objs, &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: "cluster-info", Namespace: metav1.NamespacePublic}, Data: map[string]string{"kubeconfig": string(ci)}})
	return out, objs
}
