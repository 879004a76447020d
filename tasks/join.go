package tasks

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubeforge/kubeforge/internal/nodefile"
	"github.com/kubeforge/kubeforge/pki"
)

// joining reports whether h's kubelet joins in this run (the plan found no
// kubelet of h with its own credential and a fresh Lease).
func (e *Env) joining(h *Host) bool {
	return e.Plan == nil || slices.Contains(e.Plan.JoinNodes, h.Name)
}

// JoinWorker pushes a worker's files (CA certificate, kubelet config and unit)
// and, when its kubelet has not joined, a bootstrap kubeconfig with the fresh
// token; then starts kubelet, which gets its client certificate through the CSR API.
func JoinWorker(ctx context.Context, env *Env, h *Host) error {
	var extra []nodefile.File
	if env.joining(h) {
		if env.Token == nil {
			return fmt.Errorf("no bootstrap token minted for %s (the join-token step was skipped?)", h.Name)
		}
		boot, err := env.PKI.BootstrapKubeletFile(env.Inv, *env.Token)
		if err != nil {
			return fmt.Errorf("make bootstrap kubeconfig: %w", err)
		}
		extra = append(extra, boot)
	}
	files, err := env.NodeFiles(h)
	if err != nil {
		return err
	}
	if _, err := push(ctx, h, append(files, extra...)); err != nil {
		return err
	}
	// The proxy runs before the kubelet that reaches the API through it.
	if env.Inv.UsesAPIProxy() {
		if err := startAPIProxy(ctx, env, h); err != nil {
			return err
		}
	}
	if err := startKubelet(ctx, env, h); err != nil {
		return err
	}
	return moveKubelet(ctx, env, h)
}

// ForgetBootstrapKubeconfig deletes bootstrap-kubelet.conf from a worker
// whose kubelet now holds its own credential (kubelet.conf), as kubeadm join
// does: the token in it is of no more use, and deleted at the end of the run.
func ForgetBootstrapKubeconfig(ctx context.Context, _ *Env, h *Host) error {
	out, err := h.Client.Run(ctx, "if [ -s /etc/kubernetes/kubelet.conf ] && [ -e "+pki.BootstrapKubeletPath+" ]; then rm -f "+pki.BootstrapKubeletPath+" && echo removed; fi")
	if err != nil {
		return fmt.Errorf("remove %s: %w", pki.BootstrapKubeletPath, err)
	}
	if strings.TrimSpace(out) == "removed" {
		h.Changed(Change{Kind: ChangeHost, What: "removed " + pki.BootstrapKubeletPath})
	}
	return nil
}

// WaitNodesRegistered waits until every host is a Node with a pod CIDR.
func WaitNodesRegistered(ctx context.Context, env *Env) error {
	return env.waitNodes(ctx, "registered with a pod CIDR", func(n *corev1.Node) bool { return n.Spec.PodCIDR != "" })
}

// WaitNodesReady waits until every host's Node is Ready.
func WaitNodesReady(ctx context.Context, env *Env) error {
	started := map[string]time.Time{}
	for _, h := range env.Hosts(env.Inv.Hosts) {
		if t := h.kubeletStartedAt(); !t.IsZero() {
			started[h.Name] = t
		}
	}
	return env.waitNodes(ctx, "Ready", func(n *corev1.Node) bool {
		return NodeReady(n) && readySince(n, started[n.Name])
	})
}

// readySince: n's Ready condition was last reported at or after t (the
// restart of its kubelet, by the same host's clock), so it is the new
// kubelet's word and not the old one's; the condition carries whole seconds.
func readySince(n *corev1.Node, t time.Time) bool {
	if t.IsZero() {
		return true
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return !c.LastHeartbeatTime.Time.Before(t)
		}
	}
	return false
}

// NodeReady reports whether n is Ready as kubeforge judges it: the Ready
// condition is true and the node lifecycle controller has lifted its
// not-ready and unreachable taints, so the kubelet admits pods (it refuses
// those that do not tolerate a NoExecute taint).
func NodeReady(n *corev1.Node) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == corev1.TaintNodeNotReady || t.Key == corev1.TaintNodeUnreachable {
			return false
		}
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (e *Env) waitNodes(ctx context.Context, what string, ok func(*corev1.Node) bool) error {
	timeout := e.Opts.WaitTimeout
	if timeout == 0 {
		timeout = 5 * time.Minute
	}
	var missing []string
	err := wait.PollUntilContextTimeout(ctx, 300*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		nodes, err := e.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		byName := map[string]*corev1.Node{}
		for i := range nodes.Items {
			byName[nodes.Items[i].Name] = &nodes.Items[i]
		}
		missing = missing[:0]
		for _, h := range e.Inv.Hosts {
			if e.Unreachable(h.Name) {
				continue
			}
			if n := byName[h.Name]; n == nil || !ok(n) {
				missing = append(missing, h.Name)
			}
		}
		return len(missing) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("nodes not %s after %s: %v; next: `journalctl -u kubelet` on them, then run again", what, timeout, missing)
	}
	return nil
}
