package tasks

import (
	"context"
	"fmt"
	"strings"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/manifests"
	"github.com/kubeforge/kubeforge/ssh"
)

// CheckLeaveEtcd returns the step that refuses to reset the chosen control
// planes when some of them hold etcd data and no control plane that stays
// answered with etcd's member list (PlanLeaveEtcd): their members cannot be
// removed first, so wiping them may cost etcd its quorum, and their data may
// be the cluster's last copy. With Force it only warns. A reset of every
// control plane (nothing stays) is the end of the cluster and is not refused.
func CheckLeaveEtcd(chosen inventory.Selector) LocalFunc {
	return func(ctx context.Context, env *Env) error {
		var leaving, staying, names []string
		var holders []*Host
		for _, ih := range env.Inv.Hosts {
			if chosen.Match == nil || chosen.Match(env.Inv, ih) {
				names = append(names, ih.Name)
			}
		}
		for _, h := range env.Hosts(env.Inv.ControlPlanes()) {
			if chosen.Match != nil && !chosen.Match(env.Inv, h.Host) {
				staying = append(staying, h.Name)
				continue
			}
			leaving = append(leaving, h.Name)
			if h.Client != nil { // one that cannot be reached is not reset either
				holders = append(holders, h)
			}
		}
		env.mu.Lock()
		answered := env.etcdVia != nil
		env.mu.Unlock()
		if len(leaving) == 0 || len(staying) == 0 || answered {
			return nil
		}
		dir := manifests.EtcdDataDirOf(env.Inv)
		var withData []string
		for _, h := range holders {
			out, err := h.Client.Run(ctx, "test -d "+ssh.Quote(dir+"/member")+" && echo yes || true")
			if err != nil {
				return fmt.Errorf("check %s for etcd data: %w", h.Name, err)
			}
			if strings.TrimSpace(out) == "yes" {
				withData = append(withData, h.Name)
			}
		}
		if len(withData) == 0 {
			return nil
		}
		why := fmt.Sprintf("no control plane that stays (%s) answered with etcd's member list", strings.Join(staying, ", "))
		if env.PKI == nil {
			why += " (the state dir has no PKI to ask with)"
		}
		what := fmt.Sprintf("%s, so the etcd members of %s cannot be removed before their data (%s) is wiped", why, strings.Join(withData, ", "), dir)
		if env.Opts.Force {
			env.warn("--force: " + what + "; a later `kubeforge up` removes the stale members")
			return nil
		}
		cmd := "kubeforge reset -i " + env.Inv.Path + " --hosts " + strings.Join(names, ",")
		return &ErrRefused{Reason: what + ": etcd may lose its quorum, and that data may be the cluster's last copy. " +
			"Start the staying control planes' etcd again (`kubeforge up -i " + env.Inv.Path + "` reports what is down) and run `" + cmd + "` again; " +
			"or take a backup while a member answers (`kubeforge backup -i " + env.Inv.Path + "`) and wipe anyway with `" + cmd + " --force`"}
	}
}
