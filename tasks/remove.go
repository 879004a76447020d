package tasks

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/kubectl/pkg/drain"

	"github.com/kubeforge/kubeforge/manifests"
)

// Removing reports whether h is being removed in this run (scale --remove,
// or remove: true in the inventory).
func (e *Env) Removing(h *Host) bool {
	if h.Remove {
		return true
	}
	for _, n := range e.Opts.Remove {
		if n == h.Name {
			return true
		}
	}
	return false
}

// NotRemoved matches hosts that stay in the cluster.
var NotRemoved = &Predicate{Name: "staying", Match: func(env *Env, h *Host) bool { return !env.Removing(h) }}

// RemoveNodes takes the hosts marked for removal out of the cluster, one at a
// time: cordon; drain (evictions respect PodDisruptionBudgets); for a control
// plane, remove its etcd member (never the last one); delete the Node; reset
// the host. A failed drain stops unless --force. A host that cannot be reached
// is removed through the API only, with --force.
func RemoveNodes(ctx context.Context, env *Env) error {
	targets := append([]*Host(nil), env.Leaving...)
	staying := 0
	for _, h := range env.Hosts(env.Inv.Hosts) {
		if env.Removing(h) {
			targets = append(targets, h)
		} else if h.IsControlPlane() {
			staying++
		}
	}
	if len(targets) == 0 {
		env.Log.Info("unchanged", "what", "no host to remove")
		return nil
	}
	if staying == 0 {
		return fmt.Errorf("refusing to remove every control plane: at least one must stay")
	}
	if err := ConnectAPI(ctx, env); err != nil {
		return err
	}
	for _, h := range targets {
		if err := env.removeNode(ctx, h); err != nil {
			return fmt.Errorf("remove %s: %w", h.Name, err)
		}
	}
	return nil
}

func (e *Env) removeNode(ctx context.Context, h *Host) error {
	reachable := true
	if err := Connect(ctx, e, h); err != nil {
		if !e.Opts.Force {
			return fmt.Errorf("%w; pass --force to remove it through the API without resetting the host", err)
		}
		h.Log.Warn("host unreachable; removing it through the API only", "err", err)
		reachable = false
	}
	nodes := e.Kube.CoreV1().Nodes()
	node, err := nodes.Get(ctx, h.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		node = nil
	case err != nil:
		return fmt.Errorf("get node: %w", err)
	}
	if node != nil {
		helper := &drain.Helper{
			Ctx: ctx, Client: e.Kube, GracePeriodSeconds: -1, IgnoreAllDaemonSets: true, DeleteEmptyDirData: true,
			Timeout: 2 * time.Minute, Out: io.Discard, ErrOut: io.Discard,
			OnPodDeletionOrEvictionFinished: func(p *corev1.Pod, _ bool, err error) {
				if err == nil {
					h.Log.Info("evicted", "pod", p.Namespace+"/"+p.Name)
				}
			},
		}
		if err := drain.RunCordonOrUncordon(helper, node, true); err != nil {
			return fmt.Errorf("cordon: %w", err)
		}
		h.Changed(Change{Kind: ChangeNode, What: "cordoned node"})
		if !reachable {
			helper.DisableEviction, helper.Force = true, true
		}
		if err := drain.RunNodeDrain(helper, h.Name); err != nil {
			if !e.Opts.Force {
				return fmt.Errorf("drain: %w; the node stays cordoned: fix what blocks the eviction (a PodDisruptionBudget?) and run again, or pass --force", err)
			}
			h.Log.Warn("drain failed; going on because of --force", "err", err)
		} else {
			h.Changed(Change{Kind: ChangeNode, What: "drained node"})
		}
	}
	if h.IsControlPlane() {
		if err := e.removeEtcdMember(ctx, h); err != nil {
			return err
		}
	}
	if node != nil {
		if err := nodes.Delete(ctx, h.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete node: %w", err)
		}
		h.Changed(Change{Kind: ChangeNode, What: "deleted node"})
	}
	if reachable {
		return ResetHost(ctx, e, h)
	}
	return nil
}

// removeEtcdMember removes h's etcd member through a control plane that stays.
func (e *Env) removeEtcdMember(ctx context.Context, h *Host) error {
	var via *Host
	for _, cp := range e.Hosts(e.Inv.ControlPlanes()) {
		if !e.Removing(cp) && cp.Client != nil {
			via = cp
			break
		}
	}
	if via == nil {
		return fmt.Errorf("no control plane that stays is connected to remove the etcd member through")
	}
	cli, err := etcdClient(ctx, e, via)
	if err != nil {
		return err
	}
	defer cli.Close()
	list, err := cli.MemberList(ctx)
	if err != nil {
		return fmt.Errorf("list etcd members: %w", err)
	}
	peer := manifests.EtcdPeerURL(h.Host)
	for _, m := range list.Members {
		if m.Name == h.Name || strings.Join(m.PeerURLs, ",") == peer {
			if len(list.Members) == 1 {
				return fmt.Errorf("refusing to remove the last etcd member")
			}
			if _, err := cli.MemberRemove(ctx, m.ID); err != nil {
				return fmt.Errorf("remove etcd member %s: %w", h.Name, err)
			}
			h.Changed(Change{Kind: ChangeEtcd, What: "removed member"})
			return nil
		}
	}
	return nil
}
