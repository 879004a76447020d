package tasks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/manifests"
	"github.com/kubeforge/kubeforge/pki"
)

// clusterParams reads the cluster-wide facts from the hosts' facts: cgroup v1
// when a host whose facts were read runs it; encryption at rest when the PKI
// holds encryption keys.
func (e *Env) clusterParams() manifests.ClusterParams {
	// As the static pods have it (render.go): the API servers read the encryption config once keys exist.
	p := manifests.ClusterParams{Encryption: e.PKI != nil && len(e.PKI.EncryptionKeys()) > 0, Seed: e.Seed()}
	for _, h := range e.Hosts(e.Inv.Hosts) {
		if h.Facts != nil && !h.Facts.CgroupV2 {
			p.CgroupV1 = true
		}
	}
	return p
}

// Bootstrap makes what `kubeadm init` makes through the API once the control
// plane is up: the cluster-admins binding (as super-admin), then the kubeadm
// and kubelet ConfigMaps, the bootstrap RBAC, kube-proxy and CoreDNS; then the
// pod network's objects (flannel's and kube-router's, or cni.manifest's).
// Objects already as wanted are left alone.
func Bootstrap(ctx context.Context, env *Env) error {
	h, err := env.apiHost()
	if err != nil {
		return err
	}
	// Its API server must be ready first. A run that skipped the init finds
	// etcd with data, but the API server may still be starting: a kubelet
	// that systemd restarted after a failed run starts the static pods on
	// its own. Requests that came too early failed with "discover API
	// resources: unknown" (CI, 2026-12-07). Where the init just waited, this
	// is one request.
	if err := waitAPIServer(ctx, env, h); err != nil {
		return err
	}
	objs, err := manifests.ClusterObjects(env.Inv, env.clusterParams())
	if err != nil {
		return fmt.Errorf("render cluster objects: %w", err)
	}
	// The first object is the kubeadm:cluster-admins binding that admin.conf
	// needs; only super-admin (system:masters) can make it.
	super, err := env.PKI.SuperAdminKubeconfig(env.Inv.Cluster.Name, env.serverURL())
	if err != nil {
		return fmt.Errorf("make super-admin kubeconfig: %w", err)
	}
	scfg, err := apiConfig(super, h)
	if err != nil {
		return err
	}
	sa, err := newApplier(scfg)
	if err != nil {
		return err
	}
	if err := env.applyAll(ctx, h, sa, objs[:1]); err != nil {
		return err
	}
	if err := ConnectAPI(ctx, env); err != nil {
		return err
	}
	aa, err := newApplier(env.KubeConfig)
	if err != nil {
		return err
	}
	if err := env.applyAll(ctx, h, aa, objs[1:]); err != nil {
		return err
	}
	// kubeadm publishes cluster-info at init: `kubeadm join` works on a
	// cluster of control planes only too. Tokens add their signatures later.
	if err := publishClusterInfo(ctx, env, h, env.Kube, nil); err != nil {
		return err
	}
	network, err := manifests.NetworkObjects(env.Inv, env.NetworkPlugin())
	if err != nil {
		return fmt.Errorf("render the pod network's objects: %w", err)
	}
	if err := env.applyAll(ctx, h, aa, network); err != nil {
		return err
	}
	if env.NetworkPlugin() != inventory.CNIManifest {
		return nil
	}
	cni, err := readManifest(env.Inv.Cluster.CNI.Manifest)
	if err != nil {
		return err
	}
	return env.applyAll(ctx, h, aa, cni)
}

// readManifest decodes a multi-document YAML (or JSON) file of API objects.
func readManifest(path string) ([]runtime.Object, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read CNI manifest: %w", err)
	}
	defer f.Close()
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
	var out []runtime.Object
	for i := 1; ; i++ {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, fmt.Errorf("read CNI manifest %s, document %d: %w", path, i, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		if u.GetKind() == "" || u.GetAPIVersion() == "" {
			return nil, fmt.Errorf("read CNI manifest %s, document %d: no apiVersion or kind", path, i)
		}
		if u.IsList() {
			if err := u.EachListItem(func(o runtime.Object) error { out = append(out, o); return nil }); err != nil {
				return nil, fmt.Errorf("read CNI manifest %s, document %d: %w", path, i, err)
			}
			continue
		}
		out = append(out, u)
	}
}

func (e *Env) applyAll(ctx context.Context, h *Host, a *applier, objs []runtime.Object) error {
	for _, o := range objs {
		res, name, err := a.apply(ctx, o)
		if err != nil {
			return err
		}
		if res.changed {
			h.Changed(Change{Kind: ChangeObject, What: name})
		}
		// kube-proxy's pods start (again) with the ConfigMap applied before
		// them (the ConfigMap comes first): recorded, so kube-proxy/restart
		// finds them current.
		if res.specChanged && isKubeProxyDaemonSet(o) {
			if err := recordKubeProxyConfig(ctx, e, false); err != nil {
				return err
			}
		}
	}
	return nil
}

// isKubeProxyDaemonSet reports whether o is kube-proxy's DaemonSet.
func isKubeProxyDaemonSet(o runtime.Object) bool {
	ds, ok := o.(*appsv1.DaemonSet)
	return ok && ds.Namespace == metav1.NamespaceSystem && ds.Name == manifests.KubeProxyDaemonSet
}

// MarkNodes labels and taints every control-plane node as kubeadm
// does, and applies the inventory's labels and taints to every node that exists.
func MarkNodes(ctx context.Context, env *Env) error {
	for _, h := range env.Hosts(env.Inv.Hosts) {
		node, err := env.Kube.CoreV1().Nodes().Get(ctx, h.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("get node %s: %w", h.Name, err)
		}
		labels, taints := nodeMarks(h)
		patch, changed := nodePatch(node, labels, taints)
		if !changed {
			continue
		}
		if _, err := env.Kube.CoreV1().Nodes().Patch(ctx, h.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{FieldManager: "kubeforge"}); err != nil {
			return fmt.Errorf("label node %s: %w", h.Name, err)
		}
		h.Changed(Change{Kind: ChangeNode, What: "labelled and tainted node"})
	}
	return nil
}

// nodeMarks returns the labels and taints h's Node carries: kubeadm's
// control-plane label and taint, then the inventory's.
func nodeMarks(h *Host) (map[string]string, []corev1.Taint) {
	labels := map[string]string{}
	var taints []corev1.Taint
	if h.IsControlPlane() {
		labels[manifests.LabelNodeRoleControlPlane] = ""
		labels[manifests.LabelExcludeFromExternalLB] = ""
		taints = append(taints, manifests.ControlPlaneTaint())
	}
	for k, v := range h.Labels {
		labels[k] = v
	}
	for _, t := range h.Taints {
		taints = append(taints, corev1.Taint{Key: t.Key, Value: t.Value, Effect: corev1.TaintEffect(t.Effect)})
	}
	return labels, taints
}

// nodePatch returns the patch that adds labels and taints node lacks.
func nodePatch(node *corev1.Node, labels map[string]string, taints []corev1.Taint) ([]byte, bool) {
	want := map[string]any{}
	addLabels := map[string]string{}
	for k, v := range labels {
		if cur, ok := node.Labels[k]; !ok || cur != v {
			addLabels[k] = v
		}
	}
	if len(addLabels) > 0 {
		want["metadata"] = map[string]any{"labels": addLabels}
	}
	all := append([]corev1.Taint(nil), node.Spec.Taints...)
	added := false
	for _, t := range taints {
		found := false
		for _, c := range node.Spec.Taints {
			if c.Key == t.Key && c.Effect == t.Effect && c.Value == t.Value {
				found = true
			}
		}
		if !found {
			all = append(all, t)
			added = true
		}
	}
	if added {
		want["spec"] = map[string]any{"taints": all}
	}
	if len(want) == 0 {
		return nil, false
	}
	b, _ := json.Marshal(want)
	return b, true
}

// EnsureJoinToken mints a short-lived bootstrap token and publishes the signed
// cluster-info, but only when the plan has a worker whose kubelet joins.
func EnsureJoinToken(ctx context.Context, env *Env) error {
	if env.Plan == nil || len(env.Plan.JoinNodes) == 0 {
		env.Log.Info("unchanged", "what", "bootstrap token (no host to join)")
		return nil
	}
	h, err := env.apiHost()
	if err != nil {
		return err
	}
	tok, err := pki.NewBootstrapToken()
	if err != nil {
		return err
	}
	sec := pki.BootstrapTokenSecret(tok, 30*time.Minute, time.Now(), "kubeforge join")
	if _, err := env.Kube.CoreV1().Secrets(sec.Namespace).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create bootstrap token: %w", err)
	}
	if err := publishClusterInfo(ctx, env, h, env.Kube, &tok); err != nil {
		return err
	}
	env.Token = &tok
	return nil
}

// DeleteJoinToken deletes the bootstrap token this run minted, and its
// cluster-info signature, once every host has joined (as kubeadm's short
// TTL intends; a user's own `kubeadm token create` is left alone).
func DeleteJoinToken(ctx context.Context, env *Env) error {
	if env.Token == nil {
		return nil
	}
	name := "bootstrap-token-" + env.Token.ID
	if err := env.Kube.CoreV1().Secrets(metav1.NamespaceSystem).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete bootstrap token: %w", err)
	}
	patch := []byte(`{"data":{"` + pki.ClusterInfoSignatureKey(*env.Token) + `":null}}`)
	if _, err := env.Kube.CoreV1().ConfigMaps(metav1.NamespacePublic).Patch(ctx, "cluster-info", types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("remove the token's cluster-info signature: %w", err)
	}
	env.Log.Info("deleted bootstrap token", "id", env.Token.ID)
	env.Token = nil
	return nil
}

// publishClusterInfo writes kube-public/cluster-info with the CA and server
// and, given a token, its JWS signature, so `kubeadm join --discovery-token`
// works. Nothing is written when it is already as wanted.
func publishClusterInfo(ctx context.Context, env *Env, h *Host, kc kubernetes.Interface, tok *pki.BootstrapToken) error {
	ci, err := pki.ClusterInfoKubeconfig(env.PKI.CACertPEM(), env.serverURL())
	if err != nil {
		return fmt.Errorf("make cluster-info: %w", err)
	}
	want := map[string]string{"kubeconfig": string(ci)}
	if tok != nil {
		sig, err := pki.SignClusterInfo(ci, *tok)
		if err != nil {
			return fmt.Errorf("sign cluster-info: %w", err)
		}
		want[pki.ClusterInfoSignatureKey(*tok)] = sig
	}
	cms := kc.CoreV1().ConfigMaps(metav1.NamespacePublic)
	// Another writer (the bootstrap signer adds signatures) may win a race:
	// read again and retry, as client-go's retry helper does.
	raced := func(err error) bool { return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) }
	return retry.OnError(retry.DefaultRetry, raced, func() error {
		cm, err := cms.Get(ctx, "cluster-info", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cluster-info", Namespace: metav1.NamespacePublic}, Data: want}
			if _, err = cms.Create(ctx, cm, metav1.CreateOptions{}); err == nil {
				h.Changed(Change{Kind: ChangeObject, What: "ConfigMap/kube-public/cluster-info"})
			}
			return err
		}
		if err != nil {
			return fmt.Errorf("get cluster-info: %w", err)
		}
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		same := true
		for k, v := range want {
			if cm.Data[k] != v {
				cm.Data[k] = v
				same = false
			}
		}
		if same {
			return nil
		}
		if _, err = cms.Update(ctx, cm, metav1.UpdateOptions{}); err == nil && tok == nil {
			h.Changed(Change{Kind: ChangeObject, What: "ConfigMap/kube-public/cluster-info"})
		}
		return err
	})
}

// kubeProxyConfigAnnotation, on kube-proxy's DaemonSet, is the digest of the
// ConfigMap its pods last started with: kubeforge records it when its apply
// creates or rolls the DaemonSet and when it restarts the pods.
const kubeProxyConfigAnnotation = "kubeforge.io/kube-proxy-config"

// configDigest is the digest of a ConfigMap's data.
func configDigest(data map[string]string) string {
	keys := slices.Sorted(maps.Keys(data))
	sum := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(sum, "%d:%s%d:%s", len(k), k, len(data[k]), data[k])
	}
	return hex.EncodeToString(sum.Sum(nil))
}

// RestartKubeProxy restarts kube-proxy's pods (as `kubectl rollout restart`)
// when the cluster says they run another configuration than its ConfigMap's:
// the digest recorded on the DaemonSet differs from the ConfigMap's (kube-proxy
// reads its kubeconfig and configuration only at start). Judged from the
// cluster, so a run killed after changing the ConfigMap is followed by a run
// that restarts them. It runs after the workers' API proxies are in place, so
// a kube-proxy moved to 127.0.0.1 finds one.
func RestartKubeProxy(ctx context.Context, env *Env) error {
	if err := ConnectAPI(ctx, env); err != nil {
		return err
	}
	return recordKubeProxyConfig(ctx, env, true)
}

// recordKubeProxyConfig records the digest of kube-proxy's ConfigMap on its
// DaemonSet when it differs from the recorded one, restarting its pods with
// it when restart is set (they started with the recorded one). Nothing when
// either object is missing.
func recordKubeProxyConfig(ctx context.Context, env *Env, restart bool) error {
	cm, err := env.Kube.CoreV1().ConfigMaps(metav1.NamespaceSystem).Get(ctx, manifests.KubeProxyConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return fmt.Errorf("read kube-proxy's ConfigMap: %w", err)
	}
	dss := env.Kube.AppsV1().DaemonSets(metav1.NamespaceSystem)
	ds, err := dss.Get(ctx, manifests.KubeProxyDaemonSet, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return fmt.Errorf("read kube-proxy's DaemonSet: %w", err)
	}
	want := configDigest(cm.Data)
	if ds.Annotations[kubeProxyConfigAnnotation] == want {
		return nil
	}
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, kubeProxyConfigAnnotation, want)
	if restart {
		patch = fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}},"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":%q}}}}}`,
			kubeProxyConfigAnnotation, want, time.Now().UTC().Format(time.RFC3339))
	}
	if _, err := dss.Patch(ctx, manifests.KubeProxyDaemonSet, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: "kubeforge"}); err != nil {
		return fmt.Errorf("record kube-proxy's configuration on its DaemonSet: %w", err)
	}
	if restart {
		h, err := env.apiHost()
		if err != nil {
			return err
		}
		why := "its ConfigMap differs from the one its pods started with"
		if ds.Annotations[kubeProxyConfigAnnotation] == "" {
			why = "no record of the ConfigMap its pods started with"
		}
		h.Log.Info("kube-proxy restarted", "why", why)
		h.Changed(Change{Kind: ChangeRestart, What: "kube-proxy (" + why + ")"})
	}
	return nil
}
