package tasks

import (
	"context"
	"fmt"
	"time"
)

// JoinControlPlane adds an extra control plane, as `kubeadm join
// --control-plane` does: its etcd member is added as a learner before its etcd
// starts, then its CA material, own leaves, static pods and kubelet files are
// pushed and kubelet started; the learner is promoted once in sync, and the
// step waits for the new API server. A host that is already a member only
// has its files converged.
func JoinControlPlane(ctx context.Context, env *Env, h *Host) error {
	if h.Facts != nil && h.Facts.StaticPods {
		return InitControlPlane(ctx, env, h)
	}
	via, err := env.apiHost()
	if err != nil {
		return err
	}
	cli, err := etcdClient(ctx, env, via)
	if err != nil {
		return err
	}
	defer cli.Close()
	id, err := addEtcdLearner(ctx, cli, h)
	if err != nil {
		return err
	}
	if err := installNode(ctx, env, h); err != nil {
		return err
	}
	timeout := env.Opts.WaitTimeout
	if timeout == 0 {
		timeout = 5 * time.Minute
	}
	if err := promoteEtcdMember(ctx, cli, h, id, timeout); err != nil {
		return fmt.Errorf("%w\n%s", err, diagnoseControlPlane(ctx, h))
	}
	return waitAPIServer(ctx, env, h)
}
