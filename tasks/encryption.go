package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"

	"github.com/kubeforge/kubeforge/internal/atomicfile"
	"github.com/kubeforge/kubeforge/manifests"
	"github.com/kubeforge/kubeforge/pki"
)

// Encryption at rest (docs/security.md). The keys are the PKI bundle's
// encryption providers, in the order the API servers use them: the first
// encrypts what is written, every one decrypts, and the identity provider,
// kept among them, reads what was stored before encryption was on (it
// passes over encrypted values, so its place after the first does not
// matter).
//
// A new key reaches a running cluster in phases, each complete on every
// control plane before the next begins, so that no API server ever reads a
// value written with a key it lacks: the key is added last (read only); it
// becomes first (writes); every object is rewritten with it, which etcd
// shows; the old keys are dropped. rotationFile in the state dir names the
// key a rotation moves to, so a run killed at any point resumes where it
// stopped. Turning encryption on for a running cluster is such a rotation
// from the identity provider.

// rotationFile names the key a rotation under way moves to.
const rotationFile = "encryption-rotation.json"

// Rotation is a key rotation under way.
type Rotation struct {
	Target  string    `json:"target"` // the name of the key the cluster moves to
	Started time.Time `json:"started"`
}

func (e *Env) rotationPath() string { return filepath.Join(e.StateDir, rotationFile) }

// loadRotation returns the rotation under way, nil when none.
func (e *Env) loadRotation() (*Rotation, error) {
	data, err := os.ReadFile(e.rotationPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the key rotation under way: %w", err)
	}
	var r Rotation
	if err := json.Unmarshal(data, &r); err != nil || r.Target == "" {
		return nil, fmt.Errorf("read the key rotation under way: %s is not kubeforge's (%v): remove it if no rotation is under way", e.rotationPath(), err)
	}
	return &r, nil
}

func (e *Env) saveRotation(r *Rotation) error {
	if e.Opts.DryRun {
		return nil
	}
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return atomicfile.Write(e.rotationPath(), data, 0o600)
}

func (e *Env) endRotation() error {
	if e.Opts.DryRun {
		return nil
	}
	if err := os.Remove(e.rotationPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("end the key rotation: %w", err)
	}
	return nil
}

// keyIndex is the position of the key named name in keys, -1 when absent.
func keyIndex(keys []pki.EncryptionKey, name string) int {
	return slices.IndexFunc(keys, func(k pki.EncryptionKey) bool { return k.Provider != pki.Identity && k.Name == name })
}

// ensureEncryption gives the run's PKI its encryption keys as the inventory
// asks, from what the hosts hold: a new cluster starts with a key; a running
// one without a key starts a rotation from the identity provider. It refuses
// what would leave data unreadable: encryption turned off, or a provider
// changed outside a rotation.
func (e *Env) ensureEncryption() error {
	keys := e.PKI.EncryptionKeys()
	enc := e.Inv.Cluster.Encryption
	if !e.Inv.EncryptionEnabled() {
		if len(keys) > 0 {
			return fmt.Errorf("cluster.encryption.enabled is false, but this cluster's Secrets are encrypted with %s (%s): "+
				"turning encryption off is not supported; set enabled: true (docs/security.md)", keys[0], filepath.Join(e.PKIDir(), "encryption-config.yaml"))
		}
		return nil
	}
	r, err := e.loadRotation()
	if err != nil {
		return err
	}
	if len(keys) > 0 {
		if r == nil && keys[0].Provider != enc.Provider {
			e.warn(fmt.Sprintf("cluster.encryption.provider is %s but the cluster's key is %s, which stays: `kubeforge secrets rotate-key -i INVENTORY` moves the cluster to a new %s key (docs/security.md)",
				enc.Provider, keys[0], enc.Provider))
		}
		if had := e.PKI.EncryptionResources(); had != nil && !slices.Equal(slices.Sorted(slices.Values(had)), slices.Sorted(slices.Values(enc.Resources))) && e.clusterHasData() {
			return fmt.Errorf("cluster.encryption.resources is [%s] but this cluster encrypts [%s]: changing the list on a running cluster is not supported "+
				"(an API server that has not got the new list yet could not read what another writes); set it back (docs/security.md)",
				strings.Join(enc.Resources, ", "), strings.Join(had, ", "))
		}
		e.PKI.SetEncryptionResources(enc.Resources)
		return nil
	}
	if !e.factsRead() && !e.madeCA() {
		return nil // `certs generate` for a cluster that may exist: up decides from the hosts
	}
	k, err := pki.NewEncryptionKey(enc.Provider, enc.Key, time.Now())
	if err != nil {
		return err
	}
	e.PKI.SetEncryptionResources(enc.Resources)
	if !e.clusterHasData() {
		e.PKI.SetEncryptionKeys([]pki.EncryptionKey{k, {Provider: pki.Identity}})
		return nil
	}
	e.warn(fmt.Sprintf("encryption at rest is turned on for a running cluster: key %s is added to every control plane, then made the one that writes, then every %s is rewritten with it (docs/security.md)",
		k, strings.Join(enc.Resources, ", ")))
	// The rotation first: keys without it would be used as they are, and the
	// identity provider would go on writing.
	if err := e.saveRotation(&Rotation{Target: k.Name, Started: time.Now().UTC()}); err != nil {
		return err
	}
	e.PKI.SetEncryptionKeys([]pki.EncryptionKey{{Provider: pki.Identity}, k})
	return nil
}

// factsRead: this run read the hosts' facts.
func (e *Env) factsRead() bool {
	for _, h := range e.Hosts(e.Inv.Hosts) {
		if h.Facts != nil {
			return true
		}
	}
	return false
}

// madeCA: this run made the cluster CA (there was no cluster before it).
func (e *Env) madeCA() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, c := range e.certChanges {
		if c.Name == pki.CAName && c.Action == pki.ActionCreated {
			return true
		}
	}
	return false
}

// clusterHasData: a control plane holds etcd data (the cluster runs, or ran).
func (e *Env) clusterHasData() bool {
	for _, h := range e.Hosts(e.Inv.ControlPlanes()) {
		if h.Facts != nil && h.Facts.EtcdData {
			return true
		}
	}
	return false
}

// BeginKeyRotation starts a rotation to a new key of the inventory's
// provider, added last to the keys, or resumes the one under way.
func BeginKeyRotation(_ context.Context, env *Env) error {
	r, err := env.loadRotation()
	if err != nil {
		return err
	}
	keys := env.PKI.EncryptionKeys()
	if r != nil && keyIndex(keys, r.Target) >= 0 {
		env.Log.Info("resuming the key rotation under way", "to", r.Target, "started", r.Started)
		return nil
	}
	if len(keys) == 0 {
		return errors.New("this cluster has no encryption key: run `kubeforge up` with cluster.encryption on first")
	}
	k, err := pki.NewEncryptionKey(env.Inv.Cluster.Encryption.Provider, nil, time.Now())
	if err != nil {
		return err
	}
	if keyIndex(keys, k.Name) >= 0 {
		return fmt.Errorf("a key named %s exists already: wait a second and run again", k.Name)
	}
	if err := env.refuseLeavingControlPlanes(); err != nil {
		return err
	}
	env.PKI.SetEncryptionKeys(append(keys, k))
	env.Log.Info("new encryption key", "key", k.String())
	if env.Opts.DryRun {
		return nil
	}
	// The rotation first: a kill before the keys are saved leaves a rotation to
	// a key the keys lack, which the next run ends (rotationKeys).
	if err := env.saveRotation(&Rotation{Target: k.Name, Started: time.Now().UTC()}); err != nil {
		return err
	}
	return env.savePKI()
}

// refuseLeavingControlPlanes: a control plane marked remove: true still
// serves with its keys until scale removes it, and a rotation would not reach
// it.
func (e *Env) refuseLeavingControlPlanes() error {
	for _, h := range e.Leaving {
		if h.IsControlPlane() {
			return fmt.Errorf("control plane %s is marked remove: true: its API server would keep the old keys; run `kubeforge scale` to remove it first", h.Name)
		}
	}
	return nil
}

// PromoteKey makes the rotation's key the one that writes, once every
// control plane holds it.
func PromoteKey(ctx context.Context, env *Env) error {
	r, keys, err := env.rotationKeys()
	if err != nil || r == nil {
		return err
	}
	i := keyIndex(keys, r.Target)
	if i == 0 {
		return nil
	}
	if err := env.controlPlanesHoldKeys(ctx); err != nil {
		return err
	}
	k := keys[i]
	keys = append([]pki.EncryptionKey{k}, slices.Delete(keys, i, i+1)...)
	return env.setKeys(keys, "key "+k.String()+" now encrypts writes")
}

// DropOldKeys leaves the rotation's key and the identity provider once etcd
// shows every object written with it.
func DropOldKeys(ctx context.Context, env *Env) error {
	r, keys, err := env.rotationKeys()
	if err != nil || r == nil {
		return err
	}
	if len(keys) == 2 && keys[1].Provider == pki.Identity && keys[0].Name == r.Target {
		return nil
	}
	if keyIndex(keys, r.Target) != 0 {
		return fmt.Errorf("the rotation's key %s does not encrypt writes yet: run again", r.Target)
	}
	// Every API server must write with the new key before etcd's word counts:
	// one still on the old first key would write with it after the check.
	if err := env.controlPlanesHoldKeys(ctx); err != nil {
		return err
	}
	stale, err := env.staleObjects(ctx, keys[0])
	if err != nil {
		return err
	}
	if len(stale) > 0 {
		return fmt.Errorf("%d objects are not written with key %s yet (first: %s): run again", len(stale), keys[0], stale[0])
	}
	return env.setKeys([]pki.EncryptionKey{keys[0], {Provider: pki.Identity}}, "old keys dropped")
}

// FinishRotation ends the rotation once every control plane runs with its
// final keys.
func FinishRotation(ctx context.Context, env *Env) error {
	r, keys, err := env.rotationKeys()
	if err != nil || r == nil {
		return err
	}
	if len(keys) != 2 || keys[0].Name != r.Target {
		return fmt.Errorf("the rotation to %s is not complete: run again", r.Target)
	}
	if err := env.controlPlanesHoldKeys(ctx); err != nil {
		return err
	}
	env.Log.Info("key rotation complete", "key", keys[0].String())
	return env.endRotation()
}

// rotationKeys returns the rotation under way and the keys; a rotation
// whose key is not among them (a restore brought older keys) is over.
func (e *Env) rotationKeys() (*Rotation, []pki.EncryptionKey, error) {
	r, err := e.loadRotation()
	if err != nil || r == nil {
		return nil, nil, err
	}
	keys := e.PKI.EncryptionKeys()
	if keyIndex(keys, r.Target) < 0 {
		e.warn(fmt.Sprintf("the key rotation to %s was abandoned: the cluster's keys no longer hold it", r.Target))
		return nil, nil, e.endRotation()
	}
	return r, keys, nil
}

func (e *Env) setKeys(keys []pki.EncryptionKey, what string) error {
	e.PKI.SetEncryptionKeys(keys)
	e.Log.Info("encryption keys", "change", what)
	if e.Opts.DryRun {
		return nil
	}
	return e.savePKI()
}

// controlPlanesHoldKeys checks that every control plane holds the current
// encryption configuration and that its API server runs with it: the mirror
// pod carries the input stamp of the manifest rendered now, and is ready.
func (e *Env) controlPlanesHoldKeys(ctx context.Context) error {
	if e.Opts.DryRun {
		return nil
	}
	if err := e.refuseLeavingControlPlanes(); err != nil {
		return err
	}
	kc, err := superAdminClient(e)
	if err != nil {
		return err
	}
	for _, h := range e.Hosts(e.Inv.ControlPlanes()) {
		if e.Unreachable(h.Name) {
			return fmt.Errorf("control plane %s is down: its API server may not hold the current encryption keys; run again once it is up", h.Name)
		}
		files, err := e.NodeFiles(h)
		if err != nil {
			return err
		}
		var want string
		for _, f := range files {
			if f.Path == manifests.ManifestsDir+"/"+manifests.KubeAPIServer+".yaml" {
				want = manifests.InputsOf(f.Data)
			}
		}
		// The kubelet updates the mirror pod a few seconds after the pod restarts.
		var got string
		var ready bool
		var last error
		err = wait.PollUntilContextTimeout(ctx, time.Second, e.waitTimeout(), true, func(ctx context.Context) (bool, error) {
			pod, err := kc.CoreV1().Pods(metav1.NamespaceSystem).Get(ctx, manifests.KubeAPIServer+"-"+h.Name, metav1.GetOptions{})
			if err != nil {
				last = err
				return false, nil
			}
			got, ready = pod.Annotations[manifests.InputsAnnotation], podReady(pod.Status.Conditions)
			return got == want && ready, nil
		})
		if err != nil {
			return fmt.Errorf("control plane %s: its API server does not run with the current encryption keys (its pod's inputs %s, want %s; ready %v; last error %v): run again once it does",
				h.Name, got, want, ready, last)
		}
	}
	return nil
}

// RotationUnderway matches every control plane while a key rotation is under
// way (the state dir says so).
var RotationUnderway = &Predicate{Name: "a key rotation under way", Match: func(env *Env, h *Host) bool {
	_, err := os.Stat(env.rotationPath())
	return err == nil
}}

// RollControlPlane converges one control plane's files (its encryption
// configuration, and with it its API server) and waits for the API server.
func RollControlPlane(ctx context.Context, env *Env, h *Host) error {
	if err := installNode(ctx, env, h); err != nil {
		return err
	}
	return waitAPIServer(ctx, env, h)
}

// storagePrefixes are where the API server keeps each resource
// cluster.encryption.resources may name, in etcd (inventory validation
// allows these only).
var storagePrefixes = map[string]string{"secrets": "/registry/secrets/", "configmaps": "/registry/configmaps/"}

// staleObject is an object etcd holds not written with the current key.
type staleObject struct {
	Resource, Namespace, Name string
}

func (o staleObject) String() string {
	if o.Namespace == "" {
		return o.Resource + "/" + o.Name
	}
	return o.Resource + "/" + o.Namespace + "/" + o.Name
}

// staleObjects lists, from etcd itself, the objects of the encrypted
// resources whose stored value does not start with key's prefix.
func (e *Env) staleObjects(ctx context.Context, key pki.EncryptionKey) ([]staleObject, error) {
	cli, _, err := e.liveEtcd(ctx)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	return staleIn(ctx, cli, e.Inv.Cluster.Encryption.Resources, key.Prefix())
}

func staleIn(ctx context.Context, cli *clientv3.Client, resources []string, prefix string) ([]staleObject, error) {
	var out []staleObject
	for _, r := range resources {
		p, ok := storagePrefixes[r]
		if !ok {
			return nil, fmt.Errorf("read %s from etcd: kubeforge does not know where the API server stores them", r)
		}
		resp, err := cli.Get(ctx, p, clientv3.WithPrefix())
		if err != nil {
			return nil, fmt.Errorf("read %s from etcd: %w", p, err)
		}
		for _, kv := range resp.Kvs {
			if strings.HasPrefix(string(kv.Value), prefix) {
				continue
			}
			ns, name, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), p), "/")
			out = append(out, staleObject{Resource: r, Namespace: ns, Name: name})
		}
	}
	return out, nil
}

// RewriteObjects rewrites, through the API, every object of the encrypted
// resources that etcd shows not written with the first key (so the API
// server writes it with that key), then checks etcd again.
func RewriteObjects(ctx context.Context, env *Env) error {
	keys := env.PKI.EncryptionKeys()
	if len(keys) == 0 || keys[0].Provider == pki.Identity {
		return nil
	}
	stale, err := env.staleObjects(ctx, keys[0])
	if err != nil || len(stale) == 0 {
		return err
	}
	if env.Opts.DryRun {
		env.Log.Info("would rewrite objects with the current key", "count", len(stale), "key", keys[0].String())
		return nil
	}
	// What is rewritten must land under the first key on whichever API server
	// takes the write.
	if err := env.controlPlanesHoldKeys(ctx); err != nil {
		return err
	}
	if err := ConnectAPI(ctx, env); err != nil {
		return err
	}
	dc, err := dynamic.NewForConfig(env.KubeConfig)
	if err != nil {
		return fmt.Errorf("make API client: %w", err)
	}
	gvrs, err := resourceVersions(env)
	if err != nil {
		return err
	}
	start := time.Now()
	for _, o := range stale {
		gvr, ok := gvrs[o.Resource]
		if !ok {
			return fmt.Errorf("rewrite %s: the API serves no resource %s", o, o.Resource)
		}
		ri := dc.Resource(gvr).Namespace(o.Namespace)
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			obj, err := ri.Get(ctx, o.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			_, err = ri.Update(ctx, obj, metav1.UpdateOptions{FieldManager: "kubeforge"})
			return err
		})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("rewrite %s with key %s: %w", o, keys[0], err)
		}
	}
	left, err := env.staleObjects(ctx, keys[0])
	if err != nil {
		return err
	}
	if len(left) > 0 {
		return fmt.Errorf("rewrote %d objects but etcd still holds %d not written with key %s (first: %s): run again", len(stale), len(left), keys[0], left[0])
	}
	env.Log.Info("objects rewritten with the current key", "count", len(stale), "key", keys[0].String(), "took", time.Since(start).Round(time.Millisecond))
	if h, err := env.apiHost(); err == nil {
		h.Changed(Change{Kind: ChangeObject, What: fmt.Sprintf("%d objects rewritten with key %s", len(stale), keys[0])})
	}
	return nil
}

// resourceVersions maps each encrypted resource to the version the API
// serves it at.
func resourceVersions(env *Env) (map[string]schema.GroupVersionResource, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(env.KubeConfig)
	if err != nil {
		return nil, fmt.Errorf("make discovery client: %w", err)
	}
	lists, err := dc.ServerPreferredResources()
	if err != nil && len(lists) == 0 {
		return nil, fmt.Errorf("discover the API's resources: %w", err)
	}
	out := map[string]schema.GroupVersionResource{}
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			continue
		}
		for _, r := range l.APIResources {
			name := r.Name
			if gv.Group != "" {
				name += "." + gv.Group
			}
			if slices.Contains(env.Inv.Cluster.Encryption.Resources, name) {
				out[name] = gv.WithResource(r.Name)
			}
		}
	}
	return out, nil
}

// podReady: the pod's Ready condition is true.
func podReady(conds []corev1.PodCondition) bool {
	for _, c := range conds {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// PlanEncryption adds to the plan what encryption at rest still needs, from
// the state dir's keys and rotation and from what etcd holds.
func PlanEncryption(ctx context.Context, env *Env) error {
	if env.Plan == nil || env.PKI == nil {
		return nil
	}
	keys := env.PKI.EncryptionKeys()
	if len(keys) == 0 {
		return nil
	}
	var lines []string
	r, err := env.loadRotation()
	if err != nil {
		return err
	}
	if r != nil {
		names := make([]string, len(keys))
		for i, k := range keys {
			names[i] = k.String()
		}
		switch i := keyIndex(keys, r.Target); {
		case i > 0:
			lines = append(lines, fmt.Sprintf("rotation to key %s: roll out keys [%s] on every control plane, one at a time; then the new key writes; rewrite; drop the old keys", r.Target, strings.Join(names, ", ")))
		case i == 0:
			lines = append(lines, fmt.Sprintf("rotation to key %s: keys [%s] on every control plane; rewrite what the old keys hold; drop them", r.Target, strings.Join(names, ", ")))
		}
	}
	if r == nil && len(keys) > 1 && keys[0].Provider == pki.Identity {
		// A dry run that turns encryption on: the rotation is not recorded.
		lines = append(lines, fmt.Sprintf("turn on: key %s added to every control plane (one API server at a time), then made the key that writes; every %s rewritten with it",
			keys[1], strings.Join(env.Inv.Cluster.Encryption.Resources, ", ")))
	}
	if env.Plan.Init == "" && keys[0].Provider != pki.Identity {
		stale, err := env.staleObjects(ctx, keys[0])
		if err != nil {
			env.warn(fmt.Sprintf("could not read etcd to count the objects to encrypt: %v", err))
		} else if len(stale) > 0 {
			lines = append(lines, fmt.Sprintf("rewrite %d objects not written with key %s (first: %s)", len(stale), keys[0], stale[0]))
		}
	}
	env.mu.Lock()
	env.Plan.Encryption = lines
	env.mu.Unlock()
	return nil
}

// PlanKeyRotation adds to the plan what `secrets rotate-key` does: a new
// key and its phases, or the rotation under way (PlanEncryption says so).
func PlanKeyRotation(ctx context.Context, env *Env) error {
	if env.Plan == nil {
		return nil
	}
	keys := env.PKI.EncryptionKeys()
	if len(keys) == 0 {
		return errors.New("this cluster has no encryption key: run `kubeforge up` with cluster.encryption on first")
	}
	r, err := env.loadRotation()
	if err != nil || (r != nil && keyIndex(keys, r.Target) >= 0) {
		return err
	}
	cli, _, err := env.liveEtcd(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	all, err := staleIn(ctx, cli, env.Inv.Cluster.Encryption.Resources, "\x00") // no stored value starts with NUL: every object
	if err != nil {
		return err
	}
	line := fmt.Sprintf("new %s key: added to every control plane's keys (one API server at a time), then made the key that writes, "+
		"then %d objects (%s) rewritten with it and checked in etcd, then %s dropped",
		env.Inv.Cluster.Encryption.Provider, len(all), strings.Join(env.Inv.Cluster.Encryption.Resources, ", "), keys[0])
	env.mu.Lock()
	env.Plan.Encryption = append(env.Plan.Encryption, line)
	env.mu.Unlock()
	return nil
}
