package tasks

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/kubectl/pkg/drain"
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
// time, as the removal plan found them: cordon; drain (evictions respect
// PodDisruptionBudgets); for a control plane, remove its etcd member (never
// the last one); delete the Node; reset the host. A failed drain stops unless
// --force. A host that cannot be reached is removed through the API only,
// with --force.
func RemoveNodes(ctx context.Context, env *Env) error {
	if env.Plan == nil || len(env.Plan.Teardown) == 0 {
		if err := PlanRemoval(ctx, env); err != nil {
			return err
		}
	}
	if env.Plan == nil || len(env.Plan.Teardown) == 0 {
		env.Log.Info("unchanged", "what", "no host to remove")
		return nil
	}
	for _, t := range env.Plan.Teardown {
		if err := env.removeNode(ctx, t); err != nil {
			return fmt.Errorf("remove %s: %w", t.Host, err)
		}
	}
	return nil
}

func (e *Env) removeNode(ctx context.Context, t *TeardownPlan) error {
	h := e.target(t.Host)
	if h == nil {
		return fmt.Errorf("%s is neither in the inventory nor marked for removal", t.Host)
	}
	if t.Unreachable != "" {
		if !e.Opts.Force {
			return fmt.Errorf("%s; pass --force to remove it through the API without resetting the host", t.Unreachable)
		}
		h.Log.Warn("host unreachable; removing it through the API only", "err", t.Unreachable)
	}
	nodes := e.Kube.CoreV1().Nodes()
	if t.Node != "" {
		node, err := nodes.Get(ctx, h.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			node = nil
		case err != nil:
			return fmt.Errorf("get node: %w", err)
		}
		if node != nil {
			if err := e.drainNode(ctx, h, node, t.Unreachable != "", "the node stays cordoned: fix what blocks the eviction (a PodDisruptionBudget?) and run again, or pass --force"); err != nil {
				return err
			}
		}
	}
	if t.memberID != 0 {
		if err := e.removeMember(ctx, t); err != nil {
			return err
		}
	}
	if t.Node != "" {
		if err := nodes.Delete(ctx, h.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete node: %w", err)
		}
		h.Changed(Change{Kind: ChangeNode, What: "deleted node"})
	}
	if t.Unreachable == "" {
		return ResetHost(ctx, e, h)
	}
	return nil
}

// drainNode cordons and drains node; a failed drain stops the removal unless
// --force. An unreachable host's pods are deleted, not evicted.
func (e *Env) drainNode(ctx context.Context, h *Host, node *corev1.Node, unreachable bool, next string) error {
	helper := e.drainer(ctx)
	helper.OnPodDeletionOrEvictionFinished = func(p *corev1.Pod, _ bool, err error) {
		if err == nil {
			h.Log.Info("evicted", "pod", p.Namespace+"/"+p.Name)
		}
	}
	if !node.Spec.Unschedulable {
		if err := drain.RunCordonOrUncordon(helper, node, true); err != nil {
			return fmt.Errorf("cordon: %w", err)
		}
		h.Changed(Change{Kind: ChangeNode, What: "cordoned node"})
	}
	if unreachable {
		helper.DisableEviction, helper.Force = true, true
	}
	if err := drain.RunNodeDrain(helper, h.Name); err != nil {
		if !e.Opts.Force {
			return fmt.Errorf("drain %s: %w; %s", h.Name, err, next)
		}
		h.Log.Warn("drain failed; going on because of --force", "err", err)
		return nil
	}
	h.Changed(Change{Kind: ChangeNode, What: "drained node"})
	return nil
}
