package tasks

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/manifests"
	"github.com/kubeforge/kubeforge/pki"
)

// resetScript tears down what kubeforge and Kubernetes left on a host. It
// prints one line per thing it removed, so a second run prints nothing. It
// keeps going past errors: a half-reset host is worse than a noisy one.
const resetScript = `set +e
did() { echo "$1"; }
if systemctl list-unit-files kubelet.service >/dev/null 2>&1 && systemctl is-enabled -q kubelet 2>/dev/null || systemctl is-active -q kubelet 2>/dev/null; then
  systemctl disable --now -q kubelet 2>/dev/null; did "stopped and disabled kubelet"
fi
# A pod container whose creation was cut short can be left in a FROZEN cgroup v1 freezer group: its tasks
# cannot be killed until thawed.
for f in $(find /sys/fs/cgroup/freezer -path '*kubepods*' -name freezer.state 2>/dev/null); do
  grep -q FROZEN "$f" && echo THAWED > "$f"
done
if command -v ctr >/dev/null 2>&1; then
  tasks=$(ctr -n k8s.io tasks ls -q 2>/dev/null)
  for t in $tasks; do ctr -n k8s.io tasks kill -s SIGKILL "$t" >/dev/null 2>&1; done
  for t in $tasks; do ctr -n k8s.io tasks rm -f "$t" >/dev/null 2>&1; done
  cs=$(ctr -n k8s.io containers ls -q 2>/dev/null)
  for c in $cs; do ctr -n k8s.io containers rm "$c" >/dev/null 2>&1; done
  [ -n "$cs" ] && did "removed $(echo $cs | wc -w) containers"
fi
for ns in /var/run/netns/cni-*; do [ -e "$ns" ] || continue; ip netns del "${ns##*/}" 2>/dev/null; umount "$ns" 2>/dev/null; rm -f "$ns"; done
mnts=$(awk '$2 ~ "^/var/lib/kubelet" {print $2}' /proc/mounts | sort -r)
for m in $mnts; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
[ -n "$mnts" ] && did "unmounted $(echo $mnts | wc -w) kubelet mounts"
for p in /etc/kubernetes /var/lib/kubelet /var/lib/etcd /var/lib/kubeforge/kubelet.started /etc/kubeforge/pod-routes.sh /etc/cni/net.d/10-kubeforge.conflist \
         /usr/lib/systemd/system/kubelet.service /usr/lib/systemd/system/kubelet.service.d \
         /etc/systemd/system/kubeforge-routes.service /etc/sysctl.d/99-kubeforge.conf /etc/modules-load.d/kubeforge.conf \
         /var/lib/cni /var/log/pods /var/log/containers; do
  if [ -e "$p" ]; then rm -rf "$p" && did "removed $p"; fi
done
if [ -n "$1" ]; then
  for p in /usr/bin/kubelet /usr/bin/kubectl /usr/bin/kubeadm /var/lib/kubeforge; do
    if [ -e "$p" ]; then rm -rf "$p" && did "removed $p"; fi
  done
  if command -v ctr >/dev/null 2>&1; then
    imgs=$(ctr -n k8s.io images ls -q 2>/dev/null | grep -E '^registry.k8s.io/|^sha256:')
    for i in $imgs; do ctr -n k8s.io images rm "$i" >/dev/null 2>&1; done
    [ -n "$imgs" ] && did "removed $(echo $imgs | wc -w) images"
  fi
fi
systemctl daemon-reload 2>/dev/null
for l in cni0 kube-ipvs0 flannel.1 cilium_host vxlan.calico tunl0; do
  if ip link show "$l" >/dev/null 2>&1; then ip link del "$l" 2>/dev/null && did "deleted interface $l"; fi
done
for tool in iptables ip6tables; do
  command -v $tool-save >/dev/null 2>&1 || continue
  if $tool-save 2>/dev/null | grep -qE 'KUBE-|CNI-'; then
    $tool-save | grep -vE 'KUBE-|CNI-' | $tool-restore && did "removed kube-proxy and CNI $tool rules"
  fi
done
`

// resetCheckScript prints what is still left after a reset, one line each.
const resetCheckScript = `set +e
for p in 6443 2379 2380 10250 10257 10259; do
  if cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v p=$(printf '%04X' $p) 'NR>1 && $4=="0A" {split($2,a,":"); if (a[2]==p) f=1} END {exit !f}'; then echo "port $p still listening"; fi
done
awk '$2 ~ "^/var/lib/kubelet" {print "mount " $2 " left"}' /proc/mounts
for p in /etc/kubernetes /var/lib/kubelet /var/lib/etcd; do [ -e "$p" ] && echo "$p left"; done
true
`

// ResetHost tears down kubeforge's cluster on the host and verifies that
// nothing is left listening, mounted or on disk.
func ResetHost(ctx context.Context, env *Env, h *Host) error {
	removeArtifacts := "artifacts"
	if env.Opts.KeepArtifacts {
		removeArtifacts = ""
	}
	out, err := h.Client.Run(ctx, "sh -s -- "+shellQuote(removeArtifacts)+" <<'KUBEFORGE_RESET'\n"+resetScript+"KUBEFORGE_RESET")
	if err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "" {
			h.Changed(Change{Kind: ChangeHost, What: l})
		}
	}
	// Pod routes to other nodes: delete those to the cluster's pod subnet.
	routes, err := h.Client.Run(ctx, "ip route show root "+shellQuote(env.Inv.Cluster.PodSubnet)+
		" | awk '$2==\"via\" {print $1}' | while read r; do ip route del \"$r\" && echo \"$r\"; done")
	if err != nil {
		return fmt.Errorf("remove pod routes: %w", err)
	}
	if routes = strings.TrimSpace(routes); routes != "" {
		h.Changed(Change{Kind: ChangeHost, What: "removed pod routes " + strings.ReplaceAll(routes, "\n", ", ")})
	}
	left, err := h.Client.Run(ctx, resetCheckScript)
	if err != nil {
		return fmt.Errorf("verify reset: %w", err)
	}
	if left = strings.TrimSpace(left); left != "" {
		return fmt.Errorf("reset incomplete: %s", strings.ReplaceAll(left, "\n", "; "))
	}
	return nil
}

// LeaveEtcd returns the step that removes, before their data is wiped, the
// etcd members of the control planes chosen for reset while others stay (as
// `kubeadm reset` does): resetting control planes one after another then
// never costs etcd its quorum. When no staying member answers it only warns;
// the next `up` removes the stale members it finds.
func LeaveEtcd(chosen inventory.Selector) LocalFunc {
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
		if env.PKI == nil {
			b, err := pki.Load(env.PKIDir())
			if err != nil || b.CACert() == nil {
				env.Log.Warn("no PKI in the state dir: etcd members of the reset control planes are left for `up` to remove", "err", err)
				return nil
			}
			env.PKI = b
		}
		for _, via := range staying {
			if err := Connect(ctx, env, via); err != nil {
				continue
			}
			cli, err := etcdClient(ctx, env, via)
			if err != nil {
				continue
			}
			defer cli.Close()
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			list, err := cli.MemberList(cctx)
			cancel()
			if err != nil {
				continue
			}
			for _, h := range leaving {
				peer := manifests.EtcdPeerURL(h.Host)
				for _, m := range list.Members {
					if len(m.PeerURLs) == 0 || m.PeerURLs[0] != peer {
						continue
					}
					if _, err := cli.MemberRemove(ctx, m.ID); err != nil {
						return fmt.Errorf("remove the etcd member of %s before its reset: %w", h.Name, err)
					}
					h.Changed(Change{Kind: ChangeEtcd, What: "removed member " + hexID(m.ID)})
				}
			}
			return nil
		}
		env.Log.Warn("no staying etcd member answered: the reset control planes' members are left for `up` to remove")
		return nil
	}
}
