package tasks

import (
	"context"
	"fmt"
	"time"

	"github.com/kubeforge/kubeforge/manifests"
)

// JoinControlPlane adds or converges a control plane that does not
// initialise, as `kubeadm join --control-plane` does. For a host the plan has
// join, its etcd member is added as a learner through a live member (or the
// learner an interrupted run added is reused), its etcd manifest is rendered
// from the member list etcd returned, its files are pushed and kubelet
// started; the learner is promoted once in sync, and the step waits for the
// new API server. A member with data only has its files converged.
func JoinControlPlane(ctx context.Context, env *Env, h *Host) error {
	if env.Plan != nil && !env.Plan.joinsCP(h.Name) {
		if err := installNode(ctx, env, h); err != nil {
			return err
		}
		return waitAPIServer(ctx, env, h)
	}
	cli, _, err := env.liveEtcd(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	id, params, err := addEtcdLearner(ctx, cli, h)
	if err != nil {
		return err
	}
	env.mu.Lock()
	if env.etcdParams == nil {
		env.etcdParams = map[string]manifests.EtcdParams{}
	}
	env.etcdParams[h.Name] = params
	env.mu.Unlock()
	if err := installNode(ctx, env, h); err != nil {
		return err
	}
	if err := promoteEtcdMember(ctx, cli, h, id, env.waitTimeout()); err != nil {
		return fmt.Errorf("%w\n%s", err, diagnoseControlPlane(ctx, h))
	}
	return waitAPIServer(ctx, env, h)
}

// waitTimeout is how long to wait for control planes and nodes.
func (e *Env) waitTimeout() time.Duration {
	if e.Opts.WaitTimeout > 0 {
		return e.Opts.WaitTimeout
	}
	return 5 * time.Minute
}
