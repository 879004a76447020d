package tasks

import (
	"context"
	"fmt"
)

// JoinControlPlane adds an extra control plane: it pushes the CA material and
// its own leaves, adds its etcd member (learner first, then promoted), pushes
// the static pods and kubelet files, starts kubelet and waits for its API server.
func JoinControlPlane(ctx context.Context, env *Env, h *Host) error {
	if env.isNode(h) && h.Facts != nil && h.Facts.StaticPods {
		// Already a member: converge its files like the first control plane.
		return InitControlPlane(ctx, env, h)
	}
	if err := addEtcdMember(ctx, env, h); err != nil {
		return err
	}
	return InitControlPlane(ctx, env, h)
}

// addEtcdMember registers h with the existing etcd cluster before its etcd starts.
func addEtcdMember(ctx context.Context, env *Env, h *Host) error {
	return fmt.Errorf("adding etcd member %s: not implemented yet", h.Name)
}
