package tasks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/kubectl/pkg/drain"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/manifests"
	"github.com/kubeforge/kubeforge/ssh"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// TeardownPlan is what `reset` or a removal does to one host, observed
// before anything changes.
type TeardownPlan struct {
	Host        string   `json:"host"`
	Node        string   `json:"node,omitempty"`       // what happens to its Node object: "cordon, drain, delete" or ""
	Evict       []string `json:"evict,omitempty"`      // the pods the drain evicts, namespace/name
	EtcdMember  string   `json:"etcdMember,omitempty"` // the etcd member removed, hex ID
	Reset       []string `json:"reset,omitempty"`      // what the reset removes on the host
	Unreachable string   `json:"unreachable,omitempty"`

	memberID uint64
}

func (t *TeardownPlan) empty() bool {
	return t.Node == "" && t.EtcdMember == "" && len(t.Reset) == 0 && t.Unreachable == ""
}

// write prints t for people.
func (t *TeardownPlan) write(w io.Writer) {
	if t.empty() {
		fmt.Fprintf(w, "%s (tear down): nothing left to remove\n", t.Host)
		return
	}
	fmt.Fprintf(w, "%s (tear down):\n", t.Host)
	if t.Unreachable != "" {
		fmt.Fprintf(w, "  unreachable: %s; with --force it is removed through the API only\n", t.Unreachable)
	}
	if t.Node != "" {
		fmt.Fprintf(w, "  node    %s (the drain evicts %d pod(s))\n", t.Node, len(t.Evict))
		for _, p := range t.Evict {
			fmt.Fprintf(w, "  evict   %s\n", p)
		}
	}
	if t.EtcdMember != "" {
		fmt.Fprintf(w, "  etcd    remove member %s\n", t.EtcdMember)
	}
	for _, l := range t.Reset {
		fmt.Fprintf(w, "  reset   %s\n", l)
	}
}

// teardown returns the teardown plan of host name, creating the plan and the
// entry on first use.
func (e *Env) teardown(name string) *TeardownPlan {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.Plan == nil {
		e.Plan = &Plan{}
	}
	for _, t := range e.Plan.Teardown {
		if t.Host == name {
			return t
		}
	}
	t := &TeardownPlan{Host: name}
	e.Plan.Teardown = append(e.Plan.Teardown, t)
	sort.Slice(e.Plan.Teardown, func(i, j int) bool { return e.Plan.Teardown[i].Host < e.Plan.Teardown[j].Host })
	return t
}

// runReset runs the reset script on h; with plan it only looks and returns
// what it would remove. Either way one line per thing.
func runReset(ctx context.Context, env *Env, h *Host, plan bool) ([]string, error) {
	artifacts, mode := "artifacts", ""
	if env.Opts.KeepArtifacts {
		artifacts = ""
	}
	if plan {
		mode = "plan"
	}
	runtime := ""
	if env.purgesRuntime() {
		runtime = "runtime"
	}
	out, err := h.Client.Run(ctx, "sh -s -- "+ssh.Quote(artifacts)+" "+ssh.Quote(mode)+" "+ssh.Quote(env.Inv.Cluster.PodSubnet)+" "+ssh.Quote(runtime)+
		" "+ssh.Quote(manifests.EtcdDataDirOf(env.Inv))+" "+ssh.Quote(env.Inv.Cluster.Audit.LogPath)+" <<'KUBEFORGE_RESET'\n"+resetScript+"KUBEFORGE_RESET")
	if err != nil {
		return nil, err
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return lines, nil
}

// purgesRuntime: this reset also removes the runtime kubeforge installed
// (--purge, which keeps no artifacts).
func (e *Env) purgesRuntime() bool { return e.Opts.PurgeRuntime && !e.Opts.KeepArtifacts }

// PlanReset records, reading only, what the reset will remove on h.
func PlanReset(ctx context.Context, env *Env, h *Host) error {
	lines, err := runReset(ctx, env, h, true)
	if err != nil {
		return fmt.Errorf("plan the reset: %w", err)
	}
	t := env.teardown(h.Name)
	env.mu.Lock()
	t.Reset = lines
	env.mu.Unlock()
	return nil
}

// PlanLeaveEtcd returns the step that finds, through a control plane that
// stays, the etcd members of the control planes chosen for reset (as
// `kubeadm reset` removes its own member first, so resetting control planes
// one after another never costs etcd its quorum). When no staying member
// answers it warns here, and the etcd/check step that follows refuses to wipe
// a control plane's etcd data unless --force (tasks/resetcheck.go).
func PlanLeaveEtcd(chosen inventory.Selector) LocalFunc {
	return func(ctx context.Context, env *Env) error {
		var leaving, staying []*Host
		for _, h := range env.Hosts(env.Inv.ControlPlanes()) {
			if chosen.Match == nil || chosen.Match(env.Inv, h.Host) {
				leaving = append(leaving, h)
			} else {
				staying = append(staying, h)
			}
		}
		if len(leaving) == 0 || len(staying) == 0 {
			return nil
		}
		if err := env.loadPKI(); err != nil {
			env.planWarn(fmt.Sprintf("no PKI in the state dir (%v): the etcd members of the reset control planes are left for `up` to remove", err))
			return nil
		}
		return env.planEtcdRemoval(ctx, leaving, staying)
	}
}

// planEtcdRemoval records the etcd member of each leaving control plane, read
// through the first staying one whose etcd answers.
func (e *Env) planEtcdRemoval(ctx context.Context, leaving, staying []*Host) error {
	for _, via := range staying {
		if via.Client == nil {
			if err := Connect(ctx, e, via); err != nil {
				continue
			}
		}
		cli, err := etcdClient(ctx, e, via)
		if err != nil {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		list, err := cli.MemberList(cctx)
		cancel()
		cli.Close()
		if err != nil {
			continue
		}
		for _, h := range leaving {
			peer := manifests.EtcdPeerURL(h.Host)
			for _, m := range list.Members {
				if m.Name == h.Name || slices.Contains(m.PeerURLs, peer) {
					t := e.teardown(h.Name)
					e.mu.Lock()
					t.EtcdMember, t.memberID = hexID(m.ID), m.ID
					e.mu.Unlock()
				}
			}
		}
		e.mu.Lock()
		e.etcdVia = via
		if e.Plan.ClusterID == "" {
			e.Plan.ClusterID = hexID(list.Header.ClusterId)
		}
		e.mu.Unlock()
		return nil
	}
	e.planWarn("no staying etcd member answered: the etcd members of the leaving control planes are left for `up` to remove")
	return nil
}

// LeaveEtcd removes the etcd members the plan found for the control planes
// being reset, before their data is wiped.
func LeaveEtcd(ctx context.Context, env *Env) error {
	if env.Plan == nil || env.etcdVia == nil {
		return nil
	}
	for _, t := range env.Plan.Teardown {
		if t.memberID == 0 {
			continue
		}
		if err := env.removeMember(ctx, t); err != nil {
			return err
		}
	}
	return nil
}

// removeMember removes t's planned etcd member through the staying control
// plane the plan read the membership from.
func (e *Env) removeMember(ctx context.Context, t *TeardownPlan) error {
	cli, err := etcdClient(ctx, e, e.etcdVia)
	if err != nil {
		return err
	}
	defer cli.Close()
	if _, err := cli.MemberRemove(ctx, t.memberID); err != nil {
		if errors.Is(rpctypes.Error(err), rpctypes.ErrMemberNotFound) {
			return nil // already gone: a re-run after a crash
		}
		return fmt.Errorf("remove the etcd member %s of %s: %w", t.EtcdMember, t.Host, err)
	}
	if h := e.target(t.Host); h != nil {
		h.Changed(Change{Kind: ChangeEtcd, What: "removed member " + t.EtcdMember})
	}
	return nil
}

// target is the run-time host a teardown names: one of the inventory's, or
// one marked `remove: true`, which the run's inventory leaves out (nil for
// neither).
func (e *Env) target(name string) *Host {
	if ih := e.Inv.Host(name); ih != nil {
		return e.Host(ih)
	}
	for _, h := range e.Leaving {
		if h.Name == name {
			return h
		}
	}
	return nil
}

// removalTargets are the hosts a removal takes out: --remove and `remove: true`.
func (e *Env) removalTargets() []*Host {
	targets := append([]*Host(nil), e.Leaving...)
	for _, h := range e.Hosts(e.Inv.Hosts) {
		if e.Removing(h) && !slices.Contains(targets, h) {
			targets = append(targets, h)
		}
	}
	return targets
}

// PlanRemoval records, reading only, what removing each leaving host does:
// the pods its drain evicts, its Node, its etcd member, what its reset
// removes; or that it cannot be reached.
func PlanRemoval(ctx context.Context, env *Env) error {
	targets := env.removalTargets()
	if len(targets) == 0 {
		return nil
	}
	var stayingCPs, leavingCPs []*Host
	for _, cp := range env.Hosts(env.Inv.ControlPlanes()) {
		if env.Removing(cp) {
			leavingCPs = append(leavingCPs, cp)
		} else {
			stayingCPs = append(stayingCPs, cp)
		}
	}
	for _, h := range env.Leaving {
		if h.IsControlPlane() && !slices.Contains(leavingCPs, h) {
			leavingCPs = append(leavingCPs, h)
		}
	}
	if len(stayingCPs) == 0 {
		return fmt.Errorf("refusing to remove every control plane: at least one must stay")
	}
	if err := ConnectAPI(ctx, env); err != nil {
		return err
	}
	for _, h := range targets {
		t := env.teardown(h.Name)
		if err := env.planNode(ctx, h, t); err != nil {
			return err
		}
		if h.Client == nil {
			if err := Connect(ctx, env, h); err != nil {
				env.mu.Lock()
				t.Unreachable = err.Error()
				env.mu.Unlock()
				continue
			}
		}
		if err := PlanReset(ctx, env, h); err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
	}
	if len(leavingCPs) > 0 {
		return env.planEtcdRemoval(ctx, leavingCPs, stayingCPs)
	}
	return nil
}

// drainer is the drain helper kubeforge uses: DaemonSet pods stay, emptyDir
// data goes, evictions respect PodDisruptionBudgets.
func (e *Env) drainer(ctx context.Context) *drain.Helper {
	return &drain.Helper{
		Ctx: ctx, Client: e.Kube, GracePeriodSeconds: -1, IgnoreAllDaemonSets: true, DeleteEmptyDirData: true,
		Timeout: e.drainTimeout(), Out: io.Discard, ErrOut: io.Discard,
	}
}

// drainTimeout is how long one node's drain may take.
func (e *Env) drainTimeout() time.Duration {
	if e.Opts.DrainTimeout > 0 {
		return e.Opts.DrainTimeout
	}
	return 2 * time.Minute
}

// planNode records what happens to h's Node and which pods its drain evicts.
func (e *Env) planNode(ctx context.Context, h *Host, t *TeardownPlan) error {
	_, err := e.Kube.CoreV1().Nodes().Get(ctx, h.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("get node %s: %w", h.Name, err)
	}
	var evict []string
	list, errs := e.drainer(ctx).GetPodsForDeletion(h.Name)
	if list != nil {
		for _, p := range list.Pods() {
			evict = append(evict, p.Namespace+"/"+p.Name)
		}
	}
	sort.Strings(evict)
	e.mu.Lock()
	defer e.mu.Unlock()
	t.Node, t.Evict = "cordon, drain, delete", evict
	if len(errs) > 0 {
		e.Plan.Warnings = append(e.Plan.Warnings, fmt.Sprintf("%s: the drain will not evict every pod: %v", h.Name, errs))
	}
	return nil
}

// planWarn records a warning in the plan (creating it) and the log.
func (e *Env) planWarn(msg string) {
	e.mu.Lock()
	if e.Plan == nil {
		e.Plan = &Plan{}
	}
	e.Plan.Warnings = append(e.Plan.Warnings, msg)
	e.mu.Unlock()
	e.Log.Warn(msg)
}
