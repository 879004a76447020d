package tasks

import (
	"context"
	"fmt"
	"strings"

	"github.com/kubeforge/kubeforge/manifests"
	"github.com/kubeforge/kubeforge/ssh"
)

// resetScript tears down what kubeforge and Kubernetes left on a host. It
// prints one line per thing it removes, so a second run prints nothing. It
// keeps going past errors: a half-reset host is worse than a noisy one.
// $1 = "artifacts" also removes the pushed binaries and images; $2 = "plan"
// only looks, and prints what it would do (the line's second form); $3 is the
// pod subnet; $4 = "runtime" also removes the runtime kubeforge installed;
// $5 is etcd's data dir (an absolute path without blanks: validated).
const resetScript = `set +e
plan=$2 etcd=${5:-/var/lib/etcd}
did() { if [ -n "$plan" ]; then echo "$2"; else echo "$1"; fi; }
act() { [ -n "$plan" ] || "$@"; }
if systemctl list-unit-files kubelet.service >/dev/null 2>&1 && systemctl is-enabled -q kubelet 2>/dev/null || systemctl is-active -q kubelet 2>/dev/null; then
  act systemctl disable --now -q kubelet 2>/dev/null; did "stopped and disabled kubelet" "stop and disable kubelet"
fi
if systemctl is-enabled -q kubeforge-apiproxy 2>/dev/null || systemctl is-active -q kubeforge-apiproxy 2>/dev/null; then
  act systemctl disable --now -q kubeforge-apiproxy 2>/dev/null; did "stopped and disabled kubeforge-apiproxy" "stop and disable kubeforge-apiproxy"
fi
# A pod container whose creation was cut short can be left in a FROZEN cgroup v1 freezer group: its tasks
# cannot be killed until thawed.
thaw() { grep -q FROZEN "$1" && echo THAWED > "$1"; }
for f in $(find /sys/fs/cgroup/freezer -path '*kubepods*' -name freezer.state 2>/dev/null); do act thaw "$f"; done
killall_containers() {
  for t in $1; do ctr -n k8s.io tasks kill -s SIGKILL "$t" >/dev/null 2>&1; done
  for t in $1; do ctr -n k8s.io tasks rm -f "$t" >/dev/null 2>&1; done
  for c in $2; do ctr -n k8s.io containers rm "$c" >/dev/null 2>&1; done
}
if command -v ctr >/dev/null 2>&1; then
  tasks=$(ctr -n k8s.io tasks ls -q 2>/dev/null)
  cs=$(ctr -n k8s.io containers ls -q 2>/dev/null)
  act killall_containers "$tasks" "$cs"
  n=$(echo $cs | wc -w)
  [ -n "$cs" ] && did "removed $n containers" "remove $n containers"
fi
for ns in /var/run/netns/cni-*; do [ -e "$ns" ] || continue; act ip netns del "${ns##*/}" 2>/dev/null; act umount "$ns" 2>/dev/null; act rm -f "$ns"; done
mnts=$(awk '$2 ~ "^/var/lib/kubelet" {print $2}' /proc/mounts | sort -r)
unmount() { for m in $1; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done; }
act unmount "$mnts"
n=$(echo $mnts | wc -w)
[ -n "$mnts" ] && did "unmounted $n kubelet mounts" "unmount $n kubelet mounts"
for p in /etc/kubernetes /var/lib/kubelet $etcd $etcd.before-restore-* /var/lib/kubeforge/kubelet.started /var/lib/kubeforge/restore.json /etc/kubeforge/pod-routes.sh /etc/cni/net.d/10-kubeforge.conflist /run/flannel \
         /usr/lib/systemd/system/kubelet.service /usr/lib/systemd/system/kubelet.service.d \
         /etc/systemd/system/kubeforge-routes.service /etc/systemd/system/kubeforge-apiproxy.service /etc/kubeforge/apiproxy-upstreams \
         /usr/local/bin/kubeforge-apiproxy /etc/sysctl.d/99-kubeforge.conf /etc/modules-load.d/kubeforge.conf \
         /var/lib/cni /var/log/pods /var/log/containers; do
  if [ -e "$p" ]; then act rm -rf "$p" && did "removed $p" "remove $p"; fi
done
# The API server's audit log ($6) and the files it rotated to (name-TIMESTAMP.ext), then its directory if empty.
if [ -n "$6" ]; then
  adir=${6%/*} abase=${6##*/}
  case $abase in *.*) astem=${abase%.*} aext=.${abase##*.} ;; *) astem=$abase aext= ;; esac
  for p in "$6" "$adir/$astem"-*"$aext"; do
    if [ -e "$p" ]; then act rm -f "$p" && did "removed $p" "remove $p"; fi
  done
  # The directory goes when nothing but the log and its rotations is in it (a plan, which removes nothing, says so too).
  other=$(ls -A "$adir" 2>/dev/null | while IFS= read -r e; do case $e in "$abase"|"$astem"-*"$aext") ;; *) echo x ;; esac; done)
  if [ -d "$adir" ] && [ -z "$other" ]; then
    act rmdir "$adir" && did "removed $adir" "remove $adir"
    # /var/log/kubernetes, when the API server's hostPath volume made it for the log's directory.
    if [ "${adir%/*}" = /var/log/kubernetes ]; then
      rest=$(ls -A /var/log/kubernetes 2>/dev/null)
      if [ "$rest" = "${adir##*/}" ] || [ -z "$rest" ]; then act rmdir /var/log/kubernetes && did "removed /var/log/kubernetes" "remove /var/log/kubernetes"; fi
    fi
  fi
fi
marker=` + runtimeMarkerPath + `
if [ -n "$1" ]; then
  rmimages() { for i in $1; do ctr -n k8s.io images rm "$i" >/dev/null 2>&1; done; }
  if command -v ctr >/dev/null 2>&1; then
    imgs=$(ctr -n k8s.io images ls -q 2>/dev/null | grep -E '^registry.k8s.io/|^sha256:')
    act rmimages "$imgs"
    n=$(echo $imgs | wc -w)
    [ -n "$imgs" ] && did "removed $n images" "remove $n images"
  fi
  # The runtime kubeforge installed (its marker names every file) goes only with $4; one it did not install
  # is never touched. What a file took the place of (its .before-kubeforge copy) is put back: the marker's line
  # goes first, so a purge cut short never takes a restored file for kubeforge's.
  if [ -n "$4" ] && [ -f "$marker" ]; then
    replaced=$(sed -n 's/^# replaced: //p' "$marker" | head -n1)
    if systemctl is-enabled -q containerd 2>/dev/null || systemctl is-active -q containerd 2>/dev/null; then
      act systemctl disable --now -q containerd 2>/dev/null; did "stopped and disabled containerd" "stop and disable containerd"
    fi
    restore() { sed -i "\\|^$1\$|d" "$marker" && mv -f "$1` + replacedSuffix + `" "$1"; }
    for p in $(grep '^/' "$marker"); do
      if [ -e "$p` + replacedSuffix + `" ]; then act restore "$p" && did "restored $p as it was before kubeforge" "restore $p as it was before kubeforge"
      elif [ -e "$p" ]; then act rm -f "$p" && did "removed $p" "remove $p"; fi
    done
    # containerd's data (images, snapshots) goes with a runtime kubeforge installed; a replaced runtime's stays
    # (its other namespaces). The directories may be mount points: only their content goes.
    if [ -z "$replaced" ]; then
      for d in /var/lib/containerd /run/containerd; do
        mnts=$(awk -v d="$d/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r)
        act unmount "$mnts"
        if [ -n "$(ls -A "$d" 2>/dev/null)" ]; then act find "$d" -mindepth 1 -maxdepth 1 -exec rm -rf {} + && did "emptied $d" "empty $d"; fi
      done
      # containerd makes /opt/containerd (its "opt" plugin's root) at its first start.
      if [ -e ` + containerdOptDir + ` ]; then act rm -rf ` + containerdOptDir + ` && did "removed ` + containerdOptDir + `" "remove ` + containerdOptDir + `"; fi
    fi
    act systemctl daemon-reload 2>/dev/null
    # The replaced runtime runs again, with its own unit and config.
    if [ -n "$replaced" ] && systemctl cat containerd >/dev/null 2>&1; then
      act systemctl enable --now -q containerd 2>/dev/null; did "started the replaced runtime ($replaced) again" "start the replaced runtime ($replaced) again"
    fi
    for d in /opt/cni/bin /opt/cni ` + manifests.RegistryHostsDir + ` /etc/containerd; do [ -d "$d" ] && act rmdir "$d" 2>/dev/null; done
    act rm -f "$marker" ` + runtimePendingPath + `
  fi
  # The files of cluster.registries, as their marker lists them, and the directories kubeforge made for them.
  rmarker=` + registriesMarkerPath + `
  if [ -f "$rmarker" ]; then
    for p in $(grep '^/' "$rmarker"); do
      if [ -e "$p" ]; then act rm -f "$p" && did "removed $p" "remove $p"; fi
    done
    for p in $(grep '^/' "$rmarker"); do
      d=${p%/*}; case $p in */hosts.toml) up= ;; *) up=${d%/*} ;; esac
      for x in $d $up; do [ -d "$x" ] && act rmdir "$x" 2>/dev/null; done
    done
  fi
  for p in /usr/bin/kubelet /usr/bin/kubectl /usr/bin/kubeadm /var/lib/kubeforge/*; do
    # Without $4 the runtime's marker (and its restart flag) stays: it tells a later reset --purge what
    # kubeforge installed.
    case "$p" in "$marker"|` + runtimePendingPath + `) [ -z "$4" ] && continue ;; esac
    if [ -e "$p" ]; then act rm -rf "$p" && did "removed $p" "remove $p"; fi
  done
  [ -n "$4" ] || [ ! -f "$marker" ] && [ -d /var/lib/kubeforge ] && act rmdir /var/lib/kubeforge 2>/dev/null
fi
act systemctl daemon-reload 2>/dev/null
# The pod networks' links; their routes go with them.
links="cni0 kube-ipvs0 flannel.1 cilium_host vxlan.calico tunl0"
for l in $links; do
  if ip link show "$l" >/dev/null 2>&1; then act ip link del "$l" 2>/dev/null && did "deleted interface $l" "delete interface $l"; fi
done
droprules() { $1-save | grep -vE 'KUBE-|CNI-|FLANNEL-' | $1-restore; }
for tool in iptables ip6tables; do
  command -v $tool-save >/dev/null 2>&1 || continue
  if $tool-save 2>/dev/null | grep -qE 'KUBE-|CNI-|FLANNEL-'; then
    act droprules $tool && did "removed kube-proxy and CNI $tool rules" "remove kube-proxy and CNI $tool rules"
  fi
done
# Pod routes to other nodes: those to the cluster's pod subnet ($3), but for those on a link deleted above
# (flannel's, say): they went with it, so the dry run does not plan what the run will not do.
if [ -n "$3" ]; then
  routes=$(ip route show root "$3" | awk -v links=" $links " '$2=="via" {
    d=""; for (i = 3; i < NF; i++) if ($i == "dev") d = $(i+1)
    if (index(links, " " d " ") == 0) print $1 }')
  for r in $routes; do act ip route del "$r" && did "removed pod route $r" "remove pod route $r"; done
fi
`

// resetCheckScript prints what is still left after a reset, one line each.
// $1 is etcd's data dir. After a purge of a runtime kubeforge installed, $2
// is "own" (it ran on a bare host: nothing of it may stay) or "replaced" (the
// files it took the place of are back), and the rest are the files its
// marker listed.
const resetCheckScript = `set +e
etcd=$1; mode=$2; shift; [ $# -gt 0 ] && shift
if [ -n "$mode" ]; then
  [ -e ` + runtimeMarkerPath + ` ] && echo "` + runtimeMarkerPath + ` left"
  for p in "$@"; do
    [ -e "$p` + replacedSuffix + `" ] && echo "$p` + replacedSuffix + ` left"
    [ "$mode" = own ] && [ -e "$p" ] && echo "$p left"
  done
  if [ "$mode" = own ]; then
    [ -e ` + containerdOptDir + ` ] && echo "` + containerdOptDir + ` left"
    [ -n "$(ls -A /var/lib/containerd /run/containerd 2>/dev/null | grep -v ':$' | grep .)" ] && echo "containerd data left"
    pgrep -x containerd >/dev/null && echo "containerd still running"
  fi
fi
for p in 6443 2379 2380 10250 10257 10259; do
  if cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v p=$(printf '%04X' $p) 'NR>1 && $4=="0A" {split($2,a,":"); if (a[2]==p) f=1} END {exit !f}'; then echo "port $p still listening"; fi
done
awk '$2 ~ "^/var/lib/kubelet" {print "mount " $2 " left"}' /proc/mounts
for p in /etc/kubernetes /var/lib/kubelet "$etcd"; do [ -e "$p" ] && echo "$p left"; done
true
`

// ResetHost tears down kubeforge's cluster on the host and verifies that
// nothing is left listening, mounted or on disk.
func ResetHost(ctx context.Context, env *Env, h *Host) error {
	check := "sh -s -- " + ssh.Quote(manifests.EtcdDataDirOf(env.Inv))
	if env.purgesRuntime() {
		// What the purge must remove, read before it removes the marker that lists it.
		mode, files, err := installedRuntime(ctx, h)
		if err != nil {
			return fmt.Errorf("reset: %w", err)
		}
		if mode != "" {
			check += " " + ssh.Quote(mode)
			for _, f := range files {
				check += " " + ssh.Quote(f)
			}
		}
	}
	lines, err := runReset(ctx, env, h, false)
	if err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	for _, l := range lines {
		h.Changed(Change{Kind: ChangeHost, What: l})
	}
	// The audit log is checked by name: the script's arguments are the runtime's files.
	audit := "[ -e " + ssh.Quote(env.Inv.Cluster.Audit.LogPath) + " ] && echo " + ssh.Quote(env.Inv.Cluster.Audit.LogPath+" left") + "\n"
	left, err := h.Client.Run(ctx, check+" <<'KUBEFORGE_RESET_CHECK'\n"+audit+resetCheckScript+"KUBEFORGE_RESET_CHECK")
	if err != nil {
		return fmt.Errorf("verify reset: %w", err)
	}
	if left = strings.TrimSpace(left); left != "" {
		return fmt.Errorf("reset incomplete: %s", strings.ReplaceAll(left, "\n", "; "))
	}
	return nil
}

// installedRuntime reads the runtime marker on h: "own" for a runtime
// kubeforge installed on a host that had none, "replaced" for one that took
// another's place, "" for none; and the files the marker lists.
func installedRuntime(ctx context.Context, h *Host) (mode string, files []string, err error) {
	out, err := h.Client.Run(ctx, "cat "+runtimeMarkerPath+" 2>/dev/null; true")
	if err != nil {
		return "", nil, fmt.Errorf("read the runtime marker: %w", err)
	}
	if strings.TrimSpace(out) == "" {
		return "", nil, nil
	}
	mode = "own"
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(l, "# replaced: "):
			mode = "replaced"
		case strings.HasPrefix(l, "/"):
			files = append(files, l)
		}
	}
	return mode, files, nil
}
