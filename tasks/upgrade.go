package tasks

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8sversion "k8s.io/apimachinery/pkg/util/version"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeforge/kubeforge/internal/nodefile"
	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/manifests"
	"github.com/kubeforge/kubeforge/ssh"
)

// UpgradeCordonAnnotation marks a node that `kubeforge upgrade` cordoned (its
// value: the version it upgrades to). Only such a node is uncordoned by the
// upgrade: a cordon someone else made stays.
const UpgradeCordonAnnotation = "kubeforge.io/upgrade-cordoned"

// controlPlaneComponents are the static pods whose images carry the version.
var controlPlaneComponents = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}

// UpgradePlan is what `kubeforge upgrade` does, decided from the cluster as
// observed: the versions every kubelet reports and every control plane's
// static pods run, and the files that differ from a fresh render at the
// target version.
type UpgradePlan struct {
	From string `json:"from"` // the oldest version found running
	To   string `json:"to"`   // the inventory's
	// Running is every node's observed versions: "kubelet" and, on control
	// planes, each static pod's image tag.
	Running map[string]map[string]string `json:"running"`
	// ControlPlanes and Workers are the nodes still to upgrade, in order.
	ControlPlanes []string `json:"controlPlanes,omitempty"`
	Workers       []string `json:"workers,omitempty"`
	// Uncordon are nodes already upgraded that an interrupted run left cordoned.
	Uncordon []string `json:"uncordon,omitempty"`
	// Batches are the workers' batches (--max-unavailable).
	Batches [][]string `json:"batches,omitempty"`
	// Snapshot: etcd is copied to the workstation before the first change.
	Snapshot bool `json:"snapshot"`
	// Hop: an intermediate step of a chained upgrade (control planes only).
	Hop bool `json:"hop,omitempty"`
	// Why says, for a node to upgrade whose versions are all the target's,
	// what else the plan found: a missing mirror pod, files that differ.
	Why map[string]string `json:"why,omitempty"`
}

// Empty reports whether the cluster already runs the target everywhere.
func (u *UpgradePlan) Empty() bool {
	return len(u.ControlPlanes)+len(u.Workers)+len(u.Uncordon) == 0
}

// pending reports whether node name is upgraded (or uncordoned) by this plan.
func (u *UpgradePlan) pending(name string) bool {
	return u != nil && (slices.Contains(u.ControlPlanes, name) || slices.Contains(u.Workers, name) || slices.Contains(u.Uncordon, name))
}

// Upgrading matches the nodes the upgrade plan still has work on.
var Upgrading = &Predicate{Name: "not upgraded yet", Match: func(env *Env, h *Host) bool {
	return env.Upgrade.pending(h.Name)
}}

// imageTag returns the tag of an image reference ("" when it has none).
func imageTag(ref string) string {
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[i+1:]
	}
	return ""
}

// PlanUpgrade observes the versions that run, checks that the inventory's
// version is a step kubeforge takes (one minor at a time, never down; every
// node Ready and every etcd member a healthy voter; the artifacts present)
// and plans the upgrade. A refusal changes nothing.
func PlanUpgrade(ctx context.Context, env *Env) error {
	to := env.Inv.Cluster.KubernetesVersion
	target, err := k8sversion.ParseSemantic(to)
	if err != nil {
		return fmt.Errorf("the inventory's kubernetesVersion %q: %w", to, err)
	}
	if env.Kube == nil || env.Cluster == nil {
		return &ErrRefused{Reason: "no API server answers: an upgrade needs a running cluster (`kubeforge up` makes one)"}
	}
	if p := env.Plan; p != nil && (p.Init != "" || len(p.JoinCP)+len(p.JoinNodes)+len(p.Etcd) > 0) {
		return &ErrRefused{Reason: "the cluster is not converged (" + planSummary(p) + "): an upgrade starts from a converged cluster; " +
			"run `kubeforge up` with the cluster's current kubernetesVersion and artifacts first"}
	}
	nodes, err := env.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	byName := map[string]*corev1.Node{}
	for i := range nodes.Items {
		byName[nodes.Items[i].Name] = &nodes.Items[i]
	}
	if err := env.upgradeHealthy(byName); err != nil {
		return err
	}
	u := &UpgradePlan{To: to, Running: map[string]map[string]string{}, Hop: env.Opts.UpgradeHop}
	oldest := target
	var problems []string
	hop := env.Opts.UpgradeHop
	for _, h := range env.Hosts(env.Inv.Hosts) {
		if hop && !h.IsControlPlane() {
			continue // a hop moves the control planes only
		}
		n := byName[h.Name]
		if n == nil {
			problems = append(problems, h.Name+" is not a node of the cluster (run `kubeforge up` at the current version to join it first)")
			continue
		}
		running := map[string]string{"kubelet": n.Status.NodeInfo.KubeletVersion}
		var unseen []string // static pods without their mirror (a kubelet just restarted): judged by their files
		if h.IsControlPlane() {
			for _, c := range controlPlaneComponents {
				pod, err := env.Kube.CoreV1().Pods("kube-system").Get(ctx, c+"-"+h.Name, metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					unseen = append(unseen, c)
					continue
				}
				if err != nil {
					return fmt.Errorf("read the %s pod of %s: %w", c, h.Name, err)
				}
				if len(pod.Spec.Containers) > 0 {
					running[c] = imageTag(pod.Spec.Containers[0].Image)
				}
			}
		}
		u.Running[h.Name] = running
		ours := n.Annotations[UpgradeCordonAnnotation] != ""
		if !NodeReady(n) && !ours {
			problems = append(problems, h.Name+" is not Ready")
		}
		for _, c := range n.Status.Conditions {
			if c.Type != corev1.NodeReady && c.Status == corev1.ConditionTrue {
				problems = append(problems, fmt.Sprintf("%s reports %s (%s): the kubelet may evict pods or delete images; fix it first", h.Name, c.Type, c.Message))
			}
		}
		if hop && reached(running, target) {
			continue // at the hop's version or past it (a later hop or the last step ran)
		}
		p, o, stale := checkVersions(h.Name, running, target)
		problems = append(problems, p...)
		if o != nil && o.LessThan(oldest) {
			oldest = o
		}
		if why := otherwiseStale(unseen, env.Plan.hostPlan(h.Name)); why != "" {
			if !stale {
				if u.Why == nil {
					u.Why = map[string]string{}
				}
				u.Why[h.Name] = why
				env.warn(fmt.Sprintf("%s runs %s everywhere but is upgraded again: %s", h.Name, to, why))
			}
			stale = true // its files are not those of a fresh render at the target
		}
		switch {
		case stale && h.IsControlPlane():
			u.ControlPlanes = append(u.ControlPlanes, h.Name)
		case stale:
			u.Workers = append(u.Workers, h.Name)
		case ours:
			u.Uncordon = append(u.Uncordon, h.Name)
		}
	}
	if len(problems) > 0 {
		return &ErrRefused{Reason: "the upgrade to " + to + " cannot start:\n  - " + strings.Join(problems, "\n  - ")}
	}
	if err := env.upgradeArtifacts(); err != nil {
		return err
	}
	u.From = "v" + oldest.String()
	u.Snapshot = !u.Empty()
	size := env.batchSize(len(u.Workers))
	for i := 0; i < len(u.Workers); i += size {
		u.Batches = append(u.Batches, u.Workers[i:min(i+size, len(u.Workers))])
	}
	env.mu.Lock()
	env.Upgrade = u
	env.mu.Unlock()
	return nil
}

// reached reports whether every Kubernetes component a node runs is at
// target or newer (etcd, versioned apart, goes with them).
func reached(running map[string]string, target *k8sversion.Version) bool {
	for what, v := range running {
		if what == "etcd" {
			continue
		}
		got, err := k8sversion.ParseSemantic(v)
		if err != nil || got.LessThan(target) {
			return false
		}
	}
	return true
}

// checkVersions judges what one node runs against the target: a downgrade,
// a control-plane component more than one minor behind, or a kubelet outside
// the skew policy (three minors) are problems. It returns the oldest
// Kubernetes version found and whether anything differs from the target
// (etcd is judged by the tag the target's kubeadm pins).
func checkVersions(host string, running map[string]string, target *k8sversion.Version) (problems []string, oldest *k8sversion.Version, stale bool) {
	to := "v" + target.String()
	whats := make([]string, 0, len(running))
	for w := range running {
		whats = append(whats, w)
	}
	sort.Strings(whats)
	for _, what := range whats {
		v := running[what]
		if what == "etcd" {
			stale = stale || v != manifests.PinsFor(to).Etcd
			continue
		}
		got, err := k8sversion.ParseSemantic(v)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %s reports version %q, which kubeforge cannot read", host, what, v))
			continue
		}
		switch {
		case got.GreaterThan(target):
			problems = append(problems, fmt.Sprintf("%s: %s runs %s, newer than the inventory's %s: kubeforge does not downgrade (set kubernetesVersion: %s to keep it)", host, what, v, to, v))
		case what != "kubelet" && got.Minor()+1 < target.Minor():
			problems = append(problems, fmt.Sprintf("%s: %s runs %s: control planes move one minor at a time; "+
				"give the build of every minor between with --via DIR (v1.%d first) and the upgrade walks them", host, what, v, got.Minor()+1))
		case what == "kubelet" && got.Minor()+3 < target.Minor():
			problems = append(problems, fmt.Sprintf("%s: the kubelet runs %s, more than three minors older than %s (the version skew policy)", host, v, to))
		}
		if oldest == nil || got.LessThan(oldest) {
			oldest = got
		}
		stale = stale || !got.EqualTo(target)
	}
	return problems, oldest, stale
}

// filesDiffer lists what a host's plan writes or imports: the node is not
// what a fresh render at the target makes. The API proxy's binary
// (kubeforge's own, refreshed by the next up or upgrade of the node) does not
// make a node stale: no drain for a new kubeforge build alone.
func filesDiffer(hp *HostPlan) []string {
	if hp == nil {
		return nil
	}
	var out []string
	for _, f := range hp.Files {
		if f.Path != manifests.APIProxyBinaryPath {
			out = append(out, f.Path+" ("+f.Reason+")")
		}
	}
	for _, i := range hp.Images {
		out = append(out, "image "+i)
	}
	return out
}

// otherwiseStale says why a node is still to upgrade apart from its
// versions: static pods without a mirror pod, files that differ.
func otherwiseStale(unseen []string, hp *HostPlan) string {
	var why []string
	if len(unseen) > 0 {
		why = append(why, "no mirror pod for "+strings.Join(unseen, ", "))
	}
	if d := filesDiffer(hp); len(d) > 3 {
		why = append(why, fmt.Sprintf("%s and %d more differ", strings.Join(d[:3], ", "), len(d)-3))
	} else if len(d) > 0 {
		why = append(why, strings.Join(d, ", ")+" differ")
	}
	return strings.Join(why, "; ")
}

// planSummary names what a converge plan would still do.
func planSummary(p *Plan) string {
	var s []string
	if p.Init != "" {
		s = append(s, p.Init+" would initialise a cluster")
	}
	for _, h := range p.JoinCP {
		s = append(s, h+" would join as a control plane")
	}
	for _, h := range p.JoinNodes {
		s = append(s, h+" would join")
	}
	for _, a := range p.Etcd {
		s = append(s, "etcd: "+a.Action+" "+a.Host+a.Member)
	}
	return strings.Join(s, "; ")
}

// upgradeHealthy: every control plane's API server answers (but the one an
// interrupted upgrade left mid-way, cordoned: its upgrade waits for it), and
// etcd's members are exactly the control planes, all started voters.
func (e *Env) upgradeHealthy(nodes map[string]*corev1.Node) error {
	cf := e.Cluster
	var problems []string
	for _, cp := range e.Inv.ControlPlanes() {
		if n := nodes[cp.Name]; n != nil && n.Annotations[UpgradeCordonAnnotation] != "" {
			continue
		}
		if !slices.Contains(cf.APIUp, cp.Name) {
			problems = append(problems, "the API server on "+cp.Name+" does not answer /readyz")
		}
	}
	if cf.Etcd == nil {
		problems = append(problems, "no etcd member answered")
	} else {
		for _, m := range cf.Etcd.Members {
			if m.Host == "" {
				problems = append(problems, fmt.Sprintf("etcd member %x (%s) is not an inventory control plane", m.ID, m.PeerURL))
			}
		}
		problems = append(problems, voterProblems(cf.Etcd.Members, len(e.Inv.ControlPlanes()))...)
	}
	if len(problems) > 0 {
		return &ErrRefused{Reason: "the cluster is not healthy, so it is not upgraded:\n  - " + strings.Join(problems, "\n  - ")}
	}
	return nil
}

// voterProblems: every member a started voter, one per control plane.
func voterProblems(members []EtcdMember, cps int) []string {
	var problems []string
	for _, m := range members {
		if m.Learner || m.Name == "" {
			problems = append(problems, fmt.Sprintf("etcd member %x (%s) is not a started voter", m.ID, m.PeerURL))
		}
	}
	if len(members) != cps {
		problems = append(problems, fmt.Sprintf("etcd has %d members for %d control planes", len(members), cps))
	}
	return problems
}

// upgradeArtifacts checks that the artifacts directory holds the binaries and
// every image the target version's files name (the upgrade is offline).
func (e *Env) upgradeArtifacts() error {
	dir := e.Inv.Cluster.Artifacts
	if dir == "" {
		return &ErrRefused{Reason: "an upgrade pushes the new version from the workstation: set cluster.artifacts to the build of " + e.Inv.Cluster.KubernetesVersion}
	}
	have := map[string]bool{}
	tarballs, _ := filepath.Glob(filepath.Join(dir, "images", "*.tar"))
	for _, p := range tarballs {
		a, err := e.artifact(p, true)
		if err != nil {
			return err
		}
		for _, t := range a.tags {
			have[t] = true
		}
	}
	var missing []string
	for _, ref := range manifests.Images(e.Inv) {
		if !have[ref] {
			missing = append(missing, ref)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return &ErrRefused{Reason: fmt.Sprintf("the artifacts directory %s lacks the images of %s: %s", dir, e.Inv.Cluster.KubernetesVersion, strings.Join(missing, ", "))}
	}
	return nil
}

// batchSize is --max-unavailable of n workers: a count, or a percentage
// rounded down, at least one.
func (e *Env) batchSize(n int) int {
	mu := e.Opts.MaxUnavailable
	if mu == "" {
		return 1
	}
	v := intstr.Parse(mu)
	size, err := intstr.GetScaledValueFromIntOrPercent(&v, n, false)
	if err != nil || size < 1 {
		return 1
	}
	return size
}

// ParseMaxUnavailable checks a --max-unavailable value: a positive count or a
// percentage in (0, 100].
func ParseMaxUnavailable(s string) error {
	v := intstr.Parse(s)
	if v.Type == intstr.String {
		pct, err := strconv.Atoi(strings.TrimSuffix(s, "%"))
		if err != nil || !strings.HasSuffix(s, "%") || pct <= 0 || pct > 100 {
			return fmt.Errorf("--max-unavailable %q: give a count (2) or a percentage (25%%)", s)
		}
		return nil
	}
	if v.IntValue() < 1 {
		return fmt.Errorf("--max-unavailable %q: at least one node", s)
	}
	return nil
}

// WriteUpgradePlan prints the upgrade plan.
func (u *UpgradePlan) WriteUpgradePlan(w io.Writer) {
	fmt.Fprintf(w, "Upgrade from %s to %s:\n", u.From, u.To)
	switch {
	case u.Empty() && u.Hop:
		fmt.Fprintf(w, "  every control plane runs %s or newer: nothing to do at this intermediate step\n", u.To)
		return
	case u.Empty():
		fmt.Fprintf(w, "  every node runs %s: nothing to do\n", u.To)
		return
	}
	if u.Snapshot {
		fmt.Fprintln(w, "  1. etcd snapshot to the workstation (a `kubeforge restore` archive)")
	}
	for i, cp := range u.ControlPlanes {
		fmt.Fprintf(w, "  control plane %d/%d: %s (%s): cordon, drain, stop the kubelet, new static pods and kubelet, start it (each static pod restarts once), wait healthy and Ready, uncordon\n",
			i+1, len(u.ControlPlanes), cp, runningSummary(u.Running[cp]))
		if why := u.Why[cp]; why != "" {
			fmt.Fprintf(w, "    because: %s\n", why)
		}
	}
	if u.Hop {
		fmt.Fprintln(w, "  the workers and the cluster's objects wait for the last step (kubelets may lag three minors)")
		return
	}
	fmt.Fprintln(w, "  then: kubeadm-config and kubelet-config ConfigMaps, kube-proxy and CoreDNS")
	for i, b := range u.Batches {
		var parts []string
		for _, n := range b {
			part := n + " (" + runningSummary(u.Running[n]) + ")"
			if why := u.Why[n]; why != "" {
				part += " because " + why
			}
			parts = append(parts, part)
		}
		fmt.Fprintf(w, "  worker batch %d/%d: %s: cordon all, drain, kubelet, wait Ready, uncordon\n", i+1, len(u.Batches), strings.Join(parts, ", "))
	}
	for _, n := range u.Uncordon {
		fmt.Fprintf(w, "  %s: upgraded, uncordon\n", n)
	}
}

func runningSummary(r map[string]string) string {
	keys := make([]string, 0, len(r))
	for k := range r {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var s []string
	for _, k := range keys {
		s = append(s, k+" "+r[k])
	}
	return strings.Join(s, ", ")
}

// WriteJSON prints the upgrade plan as one JSON document.
func (u *UpgradePlan) WriteJSON(w io.Writer) error {
	return json.NewEncoder(w).Encode(struct {
		Type string       `json:"type"`
		Plan *UpgradePlan `json:"upgrade"`
	}{"upgrade", u})
}

// stagedBinDir is where an upgrade stages the new binaries on a host until
// the node's turn comes: the running kubelet's binary is not replaced before.
func stagedBinDir(version string) string { return RemoteArtifactsDir + "/staged/" + version }

// StagePush puts the target version on a host that the plan upgrades: the
// image tarballs and the binaries, into a staging directory (nothing that
// runs changes), host to host as the artifacts step does (docs/artifacts.md).
var StagePush = PeerPush{Files: stagedFiles}

func stagedFiles(env *Env, h *Host) ([]ssh.File, error) {
	files, _, err := artifactFiles(env, h)
	if err != nil {
		return nil, err
	}
	for i, f := range files {
		if strings.HasPrefix(f.Path, "/usr/bin/") {
			files[i].Path = stagedBinDir(env.Upgrade.To) + "/" + path.Base(f.Path)
		}
	}
	return files, nil
}

// ImportUpgradeImages imports the target version's images (kubeadm's
// pre-pull) that containerd on h lacks, from the staged tarballs.
func ImportUpgradeImages(ctx context.Context, env *Env, h *Host) error {
	_, imgs, err := artifactFiles(env, h)
	if err != nil {
		return err
	}
	return importImages(ctx, h, imgs)
}

// installStaged moves the staged binaries into /usr/bin (each atomically) and
// removes the staging directory and other versions' image tarballs.
func installStaged(ctx context.Context, env *Env, h *Host) error {
	files, _, err := artifactFiles(env, h)
	if err != nil {
		return err
	}
	dir := stagedBinDir(env.Upgrade.To)
	var copies []ssh.Copy
	keep := []string{}
	for _, f := range files {
		if strings.HasPrefix(f.Path, "/usr/bin/") {
			copies = append(copies, ssh.Copy{From: dir + "/" + path.Base(f.Path), To: f.Path, Mode: 0o755, SHA256: f.SHA256})
		} else {
			keep = append(keep, f.Path)
		}
	}
	out, err := h.Client.CopyFiles(ctx, copies, true)
	if err != nil {
		return fmt.Errorf("install the new binaries: %w", err)
	}
	for _, p := range out {
		h.Changed(Change{Kind: ChangeFile, What: p})
	}
	// The binaries are in place (or were already): the staged copies and the
	// old version's image tarballs go.
	clean := "rm -rf " + ssh.Quote(dir) + "\nfor f in " + ssh.Quote(RemoteArtifactsDir+"/images") + "/*.tar; do [ -e \"$f\" ] || continue; case \"$f\" in"
	for _, k := range keep {
		clean += " " + ssh.Quote(k) + ")" + " ;;"
	}
	clean += " *) rm -f \"$f\" ;; esac; done"
	if len(keep) == 0 {
		clean = "rm -rf " + ssh.Quote(dir)
	}
	if _, err := h.Client.Run(ctx, clean); err != nil {
		return fmt.Errorf("remove the staged files: %w", err)
	}
	return nil
}

// CordonBatch cordons every node of a batch before any of them is drained,
// so evicted pods do not land on a node about to go. Each cordon is marked
// as the upgrade's (UpgradeCordonAnnotation).
func CordonBatch(ctx context.Context, env *Env, hosts []*Host) error {
	for _, h := range hosts {
		if err := env.upgradeCordon(ctx, h); err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
	}
	return nil
}

func (e *Env) upgradeCordon(ctx context.Context, h *Host) error {
	node, err := e.Kube.CoreV1().Nodes().Get(ctx, h.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get node: %w", err)
	}
	if node.Spec.Unschedulable {
		return nil // cordoned already: by us (marked) or by someone else (left as it is)
	}
	patch, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{UpgradeCordonAnnotation: e.Upgrade.To}},
		"spec":     map[string]any{"unschedulable": true},
	})
	if _, err := e.Kube.CoreV1().Nodes().Patch(ctx, h.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("cordon: %w", err)
	}
	h.Changed(Change{Kind: ChangeNode, What: "cordoned node"})
	return nil
}

// upgradeUncordon uncordons h if the upgrade cordoned it.
func (e *Env) upgradeUncordon(ctx context.Context, h *Host) error {
	node, err := e.Kube.CoreV1().Nodes().Get(ctx, h.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get node: %w", err)
	}
	if node.Annotations[UpgradeCordonAnnotation] == "" {
		return nil
	}
	patch, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]any{UpgradeCordonAnnotation: nil}},
		"spec":     map[string]any{"unschedulable": nil},
	})
	if _, err := e.Kube.CoreV1().Nodes().Patch(ctx, h.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("uncordon: %w", err)
	}
	h.Changed(Change{Kind: ChangeNode, What: "uncordoned node"})
	return nil
}

// UpgradeNode upgrades one node, as kubeadm's procedure does it: drain
// (PodDisruptionBudgets respected, --drain-timeout); on a control plane the
// new etcd manifest first, then the other static pods, each waited for; then
// the kubelet's binary and files and a restart; wait until the node is Ready
// on the new version; uncordon. Every part is judged on the host or in the
// cluster, so a re-run after a crash at any point goes on from there.
func UpgradeNode(ctx context.Context, env *Env, h *Host) error {
	u := env.Upgrade
	if slices.Contains(u.Uncordon, h.Name) {
		return env.upgradeUncordon(ctx, h)
	}
	if err := env.upgradeCordon(ctx, h); err != nil {
		return err
	}
	node, err := env.Kube.CoreV1().Nodes().Get(ctx, h.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get node: %w", err)
	}
	if err := env.drainNode(ctx, h, node, false, "the node stays cordoned and nothing further was touched: fix what blocks the eviction "+
		"(a PodDisruptionBudget with no room? a pod without a controller?) and run upgrade again"); err != nil {
		return err
	}
	// The runtime's files follow the target too (containerd's sandbox image
	// is the target kubeadm's pause pin: v1.35 pins another than v1.36):
	// converged as up does, containerd restarted only when they changed.
	if err := InstallRuntime(ctx, env, h); err != nil {
		return err
	}
	files, err := env.NodeFiles(h)
	if err != nil {
		return err
	}
	var kubelet, rest []nodefile.File
	for _, f := range files {
		if isKubeletInput(h, f.Path) {
			kubelet = append(kubelet, f)
		} else {
			rest = append(rest, f)
		}
	}
	if h.IsControlPlane() {
		if err := upgradeControlPlane(ctx, env, h, rest, kubelet); err != nil {
			return err
		}
	} else {
		if _, err := push(ctx, h, rest); err != nil {
			return err
		}
		if env.Inv.UsesAPIProxy() {
			if err := startAPIProxy(ctx, env, h); err != nil { // its binary may be a newer kubeforge's
				return err
			}
		}
		if err := installStaged(ctx, env, h); err != nil {
			return err
		}
		if _, err := push(ctx, h, kubelet); err != nil {
			return err
		}
		if err := startKubelet(ctx, env, h); err != nil {
			return err
		}
	}
	if err := env.waitNodeVersion(ctx, h, u.To); err != nil {
		return err
	}
	return env.upgradeUncordon(ctx, h)
}

// upgradeControlPlane moves a control plane to the new version with one
// restart of its static pods. A new kubelet minor gives static pods new UIDs
// and replaces them, so new manifests written under the old kubelet would
// restart etcd and the API server twice (about 90 s without an API server on
// a single control plane). Instead: the files the static pods read go first
// (a running pod does not reread them), then the kubelet stops (its pods keep
// running), the new binaries, the kubelet's files and the new manifests go in
// place, and the new kubelet starts and replaces each static pod once.
// Everything is judged on the host: a re-run after a kill at any point finds
// the kubelet stopped or the files already there and goes on.
func upgradeControlPlane(ctx context.Context, env *Env, h *Host, files, kubelet []nodefile.File) error {
	podInputs, podManifests := splitStaticPods(files)
	if _, err := push(ctx, h, podInputs); err != nil {
		return err
	}
	// Read whatever the kubelet's state: a run killed after the stop below
	// left it stopped with the old pods running, and the wait must see them go.
	etcdBefore, apiBefore := runningProcess(ctx, h, "etcd"), runningProcess(ctx, h, "kube-apiserver")
	if _, err := h.Client.Run(ctx, "systemctl stop kubelet"); err != nil {
		return fmt.Errorf("stop the kubelet before its upgrade: %w", err)
	}
	if h.Facts != nil {
		h.Facts.KubeletActive = false
	}
	if err := installStaged(ctx, env, h); err != nil {
		return err
	}
	if _, err := push(ctx, h, kubelet); err != nil {
		return err
	}
	if _, err := push(ctx, h, podManifests); err != nil {
		return err
	}
	if err := startKubelet(ctx, env, h); err != nil {
		return err
	}
	return env.waitControlPlaneSettled(ctx, h, etcdBefore, apiBefore)
}

// settleWindow is how long a control plane's etcd and API server must run
// unchanged after its kubelet restarted before the upgrade goes on: a new
// kubelet minor defaults static pods differently, gives them new UIDs and
// restarts them within seconds of starting.
const settleWindow = 20 * time.Second

// waitControlPlaneSettled waits, after h's kubelet restarted, until its
// etcd and API server were replaced by the new kubelet (or ran unchanged for
// settleWindow), then until etcd answers and the API server is ready.
func (e *Env) waitControlPlaneSettled(ctx context.Context, h *Host, etcdBefore, apiBefore string) error {
	start := time.Now()
	err := wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		etcd, api := staticPodProcess(ctx, h, "etcd"), staticPodProcess(ctx, h, "kube-apiserver")
		if etcd == "" || api == "" {
			return false, nil // one is being replaced
		}
		return etcd != etcdBefore && api != apiBefore || time.Since(start) >= settleWindow, nil
	})
	if err != nil {
		return fmt.Errorf("%s's etcd and API server did not settle within 2m after its kubelet restarted: %w\n%s", h.Name, err, diagnoseControlPlane(ctx, h))
	}
	if err := e.waitEtcdVersion(ctx, h, manifests.PinsFor(e.Upgrade.To).Etcd); err != nil {
		return err
	}
	if err := waitAPIServer(ctx, e, h); err != nil {
		return err
	}
	return e.waitMirrorPods(ctx, h)
}

// waitMirrorPods waits until the API server shows each of h's static pods
// on its new image and Ready: the kubelet replaces the controller manager
// and the scheduler, and updates their mirror pods, on its own schedule (a
// verify 70 s after a resumed control plane still found the old
// controller manager's mirror pod).
func (e *Env) waitMirrorPods(ctx context.Context, h *Host) error {
	images := manifests.Images(e.Inv)
	var last string
	err := wait.PollUntilContextTimeout(ctx, 2*time.Second, e.waitTimeout(), true, func(ctx context.Context) (bool, error) {
		for _, c := range controlPlaneComponents {
			pod, err := e.Kube.CoreV1().Pods("kube-system").Get(ctx, c+"-"+h.Name, metav1.GetOptions{})
			switch {
			case err != nil:
				last = err.Error()
				return false, nil
			case len(pod.Spec.Containers) == 0:
				last = c + "'s pod has no container"
				return false, nil
			case pod.Spec.Containers[0].Image != images[c]:
				last = fmt.Sprintf("%s's pod shows %s, not %s", c, pod.Spec.Containers[0].Image, images[c])
				return false, nil
			case !podReady(pod.Status.Conditions):
				last = c + "'s pod is not Ready"
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("%s's static pods are not all on their new images and Ready after %s (last: %s)\n%s", h.Name, e.waitTimeout(), last, diagnoseControlPlane(ctx, h))
	}
	return nil
}

// waitEtcdVersion waits until h's etcd member answers on the minor of the
// image tag ("3.7.0-0": 3.7; an image's patch may differ from its tag's).
func (e *Env) waitEtcdVersion(ctx context.Context, h *Host, tag string) error {
	want := tag
	if v, err := k8sversion.ParseGeneric(tag); err == nil {
		want = fmt.Sprintf("%d.%d", v.Major(), v.Minor())
	}
	var last string
	err := wait.PollUntilContextTimeout(ctx, time.Second, e.waitTimeout(), true, func(ctx context.Context) (bool, error) {
		cli, err := etcdClient(ctx, e, h)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		defer cli.Close()
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		st, err := cli.Status(sctx, "https://"+h.NodeIP()+":"+fmt.Sprint(manifests.EtcdClientPort))
		if err != nil {
			last = err.Error()
			return false, nil
		}
		last = "version " + st.Version
		return st.Version == want || strings.HasPrefix(st.Version, want+"."), nil
	})
	if err != nil {
		return fmt.Errorf("etcd on %s does not answer on %s after %s (last: %s)\n%s", h.Name, want, e.waitTimeout(), last, diagnoseControlPlane(ctx, h))
	}
	h.Log.Info("etcd upgraded", "version", want)
	return nil
}

// waitNodeVersion waits until h's Node is Ready and its kubelet reports version.
func (e *Env) waitNodeVersion(ctx context.Context, h *Host, version string) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, time.Second, e.waitTimeout(), true, func(ctx context.Context) (bool, error) {
		n, err := e.Kube.CoreV1().Nodes().Get(ctx, h.Name, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		last = fmt.Sprintf("kubelet %s, Ready %v", n.Status.NodeInfo.KubeletVersion, NodeReady(n))
		return NodeReady(n) && n.Status.NodeInfo.KubeletVersion == version, nil
	})
	if err != nil {
		return fmt.Errorf("node %s is not Ready on %s after %s (%s); the node stays cordoned: look at `journalctl -u kubelet` on it, fix, and run upgrade again",
			h.Name, version, e.waitTimeout(), last)
	}
	return nil
}

// UpgradeAddons runs once every control plane runs the new version, as
// kubeadm does: the kubeadm-config and kubelet-config ConfigMaps, kube-proxy
// and CoreDNS at the new version (cluster/bootstrap's objects), then waits
// until kube-proxy's and CoreDNS's rollouts finished.
func UpgradeAddons(ctx context.Context, env *Env) error {
	if err := Bootstrap(ctx, env); err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, time.Second, env.waitTimeout(), true, func(ctx context.Context) (bool, error) {
		ds, err := env.Kube.AppsV1().DaemonSets("kube-system").Get(ctx, "kube-proxy", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		d, err := env.Kube.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			d = nil
		} else if err != nil {
			return false, nil
		}
		s := ds.Status
		done := ds.Generation == s.ObservedGeneration && s.UpdatedNumberScheduled == s.DesiredNumberScheduled && s.NumberAvailable == s.DesiredNumberScheduled
		if d != nil {
			ds := d.Status
			want := int32(1)
			if d.Spec.Replicas != nil {
				want = *d.Spec.Replicas
			}
			done = done && d.Generation == ds.ObservedGeneration && ds.UpdatedReplicas == want && ds.AvailableReplicas == want && ds.Replicas == want
		}
		return done, nil
	})
}

// VerifyUpgrade checks the result: every node Ready on the new kubelet, every
// control plane's static pods on the new images, etcd's members all voters.
// A hop checks the control planes it moved.
func VerifyUpgrade(ctx context.Context, env *Env) error {
	u := env.Upgrade
	images := manifests.Images(env.Inv)
	var problems []string
	for _, h := range env.Hosts(env.Inv.Hosts) {
		if env.Opts.UpgradeHop && !slices.Contains(u.ControlPlanes, h.Name) {
			continue // a hop verifies what it moved: the others were at the hop or past it
		}
		n, err := env.Kube.CoreV1().Nodes().Get(ctx, h.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("get node %s: %w", h.Name, err)
		}
		if v := n.Status.NodeInfo.KubeletVersion; v != u.To || !NodeReady(n) || n.Spec.Unschedulable && n.Annotations[UpgradeCordonAnnotation] != "" {
			problems = append(problems, fmt.Sprintf("%s: kubelet %s, Ready %v, cordoned %v", h.Name, v, NodeReady(n), n.Spec.Unschedulable))
		}
		if !h.IsControlPlane() {
			continue
		}
		for _, c := range controlPlaneComponents {
			pod, err := env.Kube.CoreV1().Pods("kube-system").Get(ctx, c+"-"+h.Name, metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("read the %s pod of %s: %w", c, h.Name, err)
			}
			if img := pod.Spec.Containers[0].Image; img != images[c] {
				problems = append(problems, fmt.Sprintf("%s: %s runs %s, not %s", h.Name, c, img, images[c]))
			}
		}
	}
	cli, _, err := env.liveEtcd(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	ml, err := cli.MemberList(ctx)
	if err != nil {
		return fmt.Errorf("etcd member list: %w", err)
	}
	problems = append(problems, voterProblems(toMembers(ml.Members), len(env.Inv.ControlPlanes()))...)
	if len(problems) > 0 {
		return fmt.Errorf("after the upgrade:\n  - %s\nnext: look at these nodes, then run upgrade again", strings.Join(problems, "\n  - "))
	}
	return nil
}

// refuseVersionChange stops up and scale when the cluster does not run the
// inventory's version: changing it is `kubeforge upgrade`'s work (drain,
// one node at a time), never a converge that would restart everything at once.
func refuseVersionChange(env *Env, kubelets map[string]string) error {
	want := env.Inv.Cluster.KubernetesVersion
	var other []string
	for _, h := range env.Inv.Hosts {
		if v := kubelets[h.Name]; v != "" && v != want {
			other = append(other, h.Name+" "+v)
		}
	}
	if len(other) == 0 {
		return nil
	}
	sort.Strings(other)
	return &ErrRefused{Reason: fmt.Sprintf("the inventory names Kubernetes %s but nodes run other versions (%s): "+
		"run `kubeforge upgrade` to move the cluster to %s one node at a time, or set kubernetesVersion (and artifacts) to what runs",
		want, strings.Join(other, ", "), want)}
}

// UpgradeBatches splits the workers to upgrade into the plan's batches.
func UpgradeBatches(env *Env, hosts []*Host) [][]*Host {
	byName := map[string]*Host{}
	for _, h := range hosts {
		byName[h.Name] = h
	}
	var out [][]*Host
	seen := map[string]bool{}
	for _, b := range env.Upgrade.Batches {
		var batch []*Host
		for _, n := range b {
			if h := byName[n]; h != nil {
				batch = append(batch, h)
				seen[n] = true
			}
		}
		if len(batch) > 0 {
			out = append(out, batch)
		}
	}
	var rest []*Host // already upgraded, only left cordoned: one last batch
	for _, h := range hosts {
		if !seen[h.Name] {
			rest = append(rest, h)
		}
	}
	if len(rest) > 0 {
		out = append(out, rest)
	}
	return out
}

// UpgradeSnapshot takes the pre-upgrade etcd snapshot, as `kubeforge backup`
// does, into <state dir>/backups, unless the plan changes nothing.
func UpgradeSnapshot(ctx context.Context, env *Env) error {
	if !env.Upgrade.Snapshot {
		return nil
	}
	name := fmt.Sprintf("pre-upgrade-%s-to-%s-%s.tar.gz", env.Upgrade.From, env.Upgrade.To, time.Now().UTC().Format("20060102T150405Z"))
	if err := TakeBackup(BackupOptions{To: filepath.Join(env.StateDir, "backups", name)})(ctx, env); err != nil {
		return fmt.Errorf("the pre-upgrade snapshot: %w (nothing was changed)", err)
	}
	env.Log.Info("pre-upgrade snapshot", "path", env.Backup.Path, "sha256", env.Backup.SHA256)
	return nil
}

// UpgradeAddonsIfNeeded runs UpgradeAddons when the plan upgraded anything
// (an interrupted run may have left the objects at the old version).
func UpgradeAddonsIfNeeded(ctx context.Context, env *Env) error {
	if env.Upgrade.Empty() || env.Opts.UpgradeHop {
		return nil
	}
	return UpgradeAddons(ctx, env)
}

// The kubelet's defaults that disk use meets during an upgrade: above
// imageGCHighThresholdPercent it deletes images no container uses (the
// upgrade's imported images, before their pods start); below the eviction
// threshold imagefs.available it evicts pods.
const (
	imageGCHighPercent = 85
	imagefsEvictPct    = 15
	diskMarginPercent  = 1
)

// diskLimit is the highest use (percent) of the runtime's filesystem the
// cluster's kubelet config tolerates: its image GC threshold, and 100 minus
// its imagefs eviction threshold (cluster.kubelet.config may set both).
func diskLimit(inv *inventory.Inventory) float64 {
	limit := float64(imageGCHighPercent)
	if v, ok := inv.Cluster.Kubelet.Config["imageGCHighThresholdPercent"]; ok {
		if f, err := strconv.ParseFloat(fmt.Sprint(v), 64); err == nil {
			limit = f
		}
	}
	evict := float64(imagefsEvictPct)
	if m, ok := inv.Cluster.Kubelet.Config["evictionHard"].(map[string]any); ok {
		if s, ok := m["imagefs.available"].(string); ok && strings.HasSuffix(s, "%") {
			if f, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64); err == nil {
				evict = f
			}
		}
	}
	return min(limit, 100-evict) - diskMarginPercent
}

// CheckUpgradeSpace refuses, before any change, a node whose container
// runtime's or kubelet's filesystem would be filled past the kubelet's image
// garbage collection threshold by the upgrade's binaries and images (the
// tarballs are kept and unpacked: counted twice).
func CheckUpgradeSpace(ctx context.Context, env *Env, h *Host) error {
	files, _, err := artifactFiles(env, h)
	if err != nil {
		return err
	}
	var incoming int64
	for _, f := range files {
		st, err := os.Stat(f.Source)
		if err != nil {
			return fmt.Errorf("artifact %s: %w", f.Source, err)
		}
		incoming += st.Size()
		if strings.HasSuffix(f.Source, ".tar") {
			incoming += st.Size()
		}
	}
	if h.Facts == nil {
		return fmt.Errorf("read free disk space: no facts gathered")
	}
	for _, dir := range []string{"/var/lib/containerd", manifests.KubeletDir, RemoteArtifactsDir} {
		_, fs, ok := h.Facts.diskOf(dir)
		if !ok || fs.SizeKB <= 0 {
			return fmt.Errorf("read free disk space: the facts have no filesystem for %s", dir)
		}
		sizeK, availK := fs.SizeKB, fs.AvailKB
		after := float64(sizeK*1024-availK*1024+incoming) / float64(sizeK*1024) * 100
		if limit := diskLimit(env.Inv); after > limit {
			return fmt.Errorf("%s's filesystem is %.0f%% used and the upgrade adds %d MB (binaries, image tarballs and their unpacked layers): "+
				"past %.0f%% the kubelet deletes images no container uses yet (the new ones) or evicts pods (imageGCHighThresholdPercent, evictionHard imagefs.available); "+
				"free space on %s (old images: `crictl rmi --prune`; logs) and run upgrade again; nothing was changed",
				dir, float64(sizeK-availK)/float64(sizeK)*100, incoming>>20, limit+diskMarginPercent, h.Name)
		}
	}
	return nil
}

// WaitForAPIServer waits (up to 3 min) until the API server of every
// control plane that runs static pods under an active kubelet answers, at
// the version its manifest on the host names: an upgrade stopped or killed
// inside a control plane leaves its etcd and API server restarting, and the
// old API server may still answer for a few seconds before the kubelet
// replaces it (a resumed upgrade then failed on its first request). Without
// such a control plane it returns at once; after 3 min it lets upgrade/plan
// report what does not answer.
func WaitForAPIServer(ctx context.Context, env *Env) error {
	want := map[*Host]string{}
	for _, h := range env.Hosts(env.Inv.ControlPlanes()) {
		if h.Facts != nil && h.Facts.StaticPods && h.Facts.KubeletActive {
			want[h] = manifestVersion(ctx, h, manifests.KubeAPIServer)
		}
	}
	if len(want) == 0 {
		return nil
	}
	start := time.Now()
	waiting := ""
	err := wait.PollUntilContextTimeout(ctx, 2*time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		for h, v := range want {
			if got, ok := apiVersion(ctx, env, h); !ok || v != "" && got != v {
				waiting = fmt.Sprintf("%s's API server: answers %t, version %q, its manifest %q", h.Name, ok, got, v)
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	if d := time.Since(start); d > 3*time.Second {
		env.Log.Info("waited for the API servers", "after", d.Round(time.Second), "settled", err == nil, "last", waiting)
	}
	return nil // not settled: upgrade/plan says what does not answer
}

// manifestVersion is the tag of the image of h's static pod manifest for
// component (its Kubernetes version), "" when it cannot be read.
func manifestVersion(ctx context.Context, h *Host, component string) string {
	out, err := h.Client.Run(ctx, "sed -n 's/^ *image: *//p' "+ssh.Quote(path.Join(manifests.ManifestsDir, component+".yaml"))+" | head -n1")
	if err != nil {
		return ""
	}
	img := strings.TrimSpace(out)
	if i := strings.LastIndex(img, ":"); i >= 0 && !strings.Contains(img[i:], "/") {
		return img[i+1:]
	}
	return ""
}

// apiVersion is the version h's API server reports when it is ready.
func apiVersion(ctx context.Context, env *Env, h *Host) (string, bool) {
	admin, err := env.PKI.AdminKubeconfig(env.Inv.Cluster.Name, env.serverURL())
	if err != nil {
		return "", false
	}
	cfg, err := apiConfig(admin, h)
	if err != nil || readyz(ctx, cfg) != nil { // readyz sets the config's timeout
		return "", false
	}
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return "", false
	}
	v, err := kc.Discovery().ServerVersion()
	if err != nil {
		return "", false
	}
	return v.GitVersion, true
}
