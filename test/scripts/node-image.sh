#!/usr/bin/env bash
# node-image.sh: build the harness node images (Debian bookworm via debootstrap, systemd as PID 1, OpenSSH), in three
# variants from one debootstrap:
#   kubeforge-node:bookworm             bare: no container runtime, runc or CNI plugins (kubeforge installs them)
#   kubeforge-node:bookworm-containerd  Debian's containerd 1.6, runc and CNI plugins, configured for Kubernetes on
#                                       this machine: a host whose runtime someone else installed
#   kubeforge-node:bookworm-resolved    bare, with systemd-resolved active (/etc/resolv.conf is its 127.0.0.53 stub,
#                                       as on Ubuntu and Fedora)
# Each carries the label kubeforge.variant (bare, containerd, resolved). No kubelet and no Kubernetes files:
# installing those is kubeforge's job. Cached: skipped when the images carry this recipe's hash.
set -euo pipefail

IMAGE=${KUBEFORGE_NODE_IMAGE:-kubeforge-node:bookworm}
VARIANTS=(bare containerd resolved)
tag() { [[ $1 == bare ]] && echo "$IMAGE" || echo "$IMAGE-$1"; }
SUITE=bookworm
log() { printf '[node-image] %s\n' "$*" >&2; }
die() { printf '[node-image] error: %s\n' "$*" >&2; exit 1; }
export DOCKER_BUILDKIT=0

PACKAGES=systemd,systemd-sysv,dbus,openssh-server,sudo,containerd,runc,containernetworking-plugins,systemd-resolved,conntrack,iptables,iproute2,ca-certificates,procps,kmod,ethtool,socat,ebtables,less
RUNTIME_PACKAGES="containerd runc containernetworking-plugins"

# The recipe is this script: any change to it rebuilds the image.
RECIPE=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)
current=1
for v in "${VARIANTS[@]}"; do
	have=$(docker image inspect "$(tag "$v")" --format '{{index .Config.Labels "kubeforge.recipe"}}' 2>/dev/null || true)
	[[ "$have" == "$RECIPE" ]] || current=0
done
if ((current)); then
	log "$IMAGE and its variants are up to date (recipe $RECIPE)"
	exit 0
fi

# The Debian mirror: the first bookworm (not security) source this machine's apt uses.
mirror() {
	local f uri suites
	for f in /etc/apt/sources.list.d/*.sources; do
		[[ -f $f ]] || continue
		# deb822 stanzas: print "URI SUITES" per stanza
		awk 'BEGIN{RS=""} {u="";s=""; n=split($0,L,"\n"); for(i=1;i<=n;i++){ if(L[i] ~ /^URIs:/){sub(/^URIs:[ \t]*/,"",L[i]); u=L[i]} if(L[i] ~ /^Suites:/){sub(/^Suites:[ \t]*/,"",L[i]); s=L[i]} } if(u!="") print u" "s}' "$f"
	done | while read -r uri suites; do
		[[ " $suites " == *" $SUITE "* ]] && { echo "${uri%% *}"; return; }
	done
	cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
		awk -v s="$SUITE" '$1=="deb" && $3==s {print $2; exit}'
}
MIRROR=${KUBEFORGE_DEBIAN_MIRROR:-$(mirror 2>/dev/null | head -n1 || true)}
[[ -n "$MIRROR" ]] || MIRROR=http://deb.debian.org/debian
log "building $IMAGE (recipe $RECIPE) from $MIRROR; this takes about a minute"

WORK=$(mktemp -d /var/tmp/kubeforge-node.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/rootfs
start=$(date +%s)
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
	tail -n 30 "$WORK/debootstrap.log" >&2
	die "debootstrap failed (log above)"
}
log "debootstrap done in $(($(date +%s) - start))s"

# --- make every container a unique, quiet machine --------------------------------------------------------------
: >"$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"
rm -f "$ROOT"/etc/ssh/ssh_host_*
mkdir -p "$ROOT/etc/systemd/system/ssh.service.d"
cat >"$ROOT/etc/systemd/system/ssh.service.d/kubeforge.conf" <<'UNIT'
# Host keys are made at first boot, so every node has its own (ed25519 and ECDSA: RSA takes seconds).
[Service]
ExecStartPre=
ExecStartPre=/bin/sh -c 'for t in ed25519 ecdsa; do f=/etc/ssh/ssh_host_$${t}_key; [ -s $$f ] || ssh-keygen -q -N "" -t $$t -f $$f; done'
ExecStartPre=/usr/sbin/sshd -t
UNIT
cat >"$ROOT/etc/ssh/sshd_config.d/kubeforge.conf" <<'CONF'
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_ecdsa_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
CONF
for u in getty.target getty@tty1.service console-getty.service serial-getty@.service \
	apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
	systemd-remount-fs.service sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount \
	systemd-journald-audit.socket systemd-firstboot.service systemd-modules-load.service; do
	ln -sf /dev/null "$ROOT/etc/systemd/system/$u"
done
ln -sf /lib/systemd/system/multi-user.target "$ROOT/etc/systemd/system/default.target"
printf 'LANG=C.UTF-8\n' >"$ROOT/etc/default/locale"
: >"$ROOT/etc/fstab"

# apt inside nodes uses the same mirror (handy for debugging; the harness itself never needs it).
printf 'deb %s %s main\n' "$MIRROR" "$SUITE" >"$ROOT/etc/apt/sources.list"
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*

# --- the non-root user: passwordless sudo; its key is added by `harness up` --------------------------------------
chroot "$ROOT" /usr/sbin/useradd --create-home --shell /bin/bash --uid 1000 kube
printf 'kube ALL=(ALL) NOPASSWD:ALL\n' >"$ROOT/etc/sudoers.d/kube"
chmod 0440 "$ROOT/etc/sudoers.d/kube"
install -d -m 0700 "$ROOT/root/.ssh"
install -d -m 0700 -o 1000 -g 1000 "$ROOT/home/kube/.ssh"

# A resolv.conf pods can use (the node's own points at Docker's 127.0.0.11, unreachable from pods). `harness up`
# rewrites it with the harness network's gateway; the inventory sets cluster.kubelet.resolvConf to it.
mkdir -p "$ROOT/etc/kubeforge"
printf '# kubeforge harness: DNS for pods (no upstream DNS in the harness)\nnameserver 172.31.250.1\n' \
	>"$ROOT/etc/kubeforge/resolv.conf"

# --- the variants --------------------------------------------------------------------------------------------
# Every variant starts from the common root; dpkg removes what a variant lacks (offline: no mirror needed).
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 0755 "$ROOT/usr/sbin/policy-rc.d"
purge() { # purge ROOT PACKAGES...
	local r=$1
	shift
	chroot "$r" dpkg --purge "$@" >"$WORK/dpkg.log" 2>&1 || { cat "$WORK/dpkg.log" >&2; die "dpkg --purge $* failed"; }
}
variant_root() { # variant_root VARIANT: prints the root of that variant, made from $ROOT
	local r=$WORK/root-$1
	rm -rf "$r"
	cp -a "$ROOT" "$r"
	case $1 in
	bare) purge "$r" $RUNTIME_PACKAGES systemd-resolved ;;
	containerd)
		purge "$r" systemd-resolved
		containerd_config "$r"
		;;
	resolved)
		purge "$r" $RUNTIME_PACKAGES
		ln -sf /lib/systemd/system/systemd-resolved.service "$r/etc/systemd/system/multi-user.target.wants/systemd-resolved.service"
		ln -sf /lib/systemd/system/systemd-resolved.service "$r/etc/systemd/system/dbus-org.freedesktop.resolve1.service"
		# `harness up` writes the upstream (the harness network's gateway) to resolved.conf.d and points the
		# node's /etc/resolv.conf (a file Docker mounts) at the stub, 127.0.0.53.
		mkdir -p "$r/etc/systemd/resolved.conf.d"
		;;
	esac
	# Nothing of the runtime may be left on a bare host.
	if [[ $1 != containerd ]]; then
		for f in usr/bin/containerd usr/sbin/runc usr/lib/cni etc/containerd; do
			[[ ! -e $r/$f ]] || die "variant $1 still has /$f"
		done
	fi
	rm -f "$r/usr/sbin/policy-rc.d"
	# Docker mounts the node's /etc/resolv.conf: it must be a plain file (systemd-resolved made it a symlink).
	rm -f "$r/etc/resolv.conf"
	: >"$r/etc/resolv.conf"
	echo "$r"
}

# --- containerd for Kubernetes on this machine -----------------------------------------------------------------
containerd_config() { # containerd_config ROOT
	local ROOT=$1
	mkdir -p "$ROOT/etc/containerd" "$ROOT/etc/cni/net.d"
	cat >"$ROOT/etc/containerd/config.toml" <<'TOML'
# Written by kubeforge's test/scripts/node-image.sh for the harness nodes.
version = 2

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10.2"
  # The harness VM lacks CAP_SYS_RESOURCE: without this every pod sandbox fails on oom_score_adj.
  restrict_oom_score_adj = true

  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = true

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
TOML
	ln -sf /lib/systemd/system/containerd.service "$ROOT/etc/systemd/system/multi-user.target.wants/containerd.service"
}

# --- import ----------------------------------------------------------------------------------------------------
for v in "${VARIANTS[@]}"; do
	r=$(variant_root "$v")
	img=$(tag "$v")
	tar -C "$r" --numeric-owner -c . | docker import - "$img-rootfs" >/dev/null
	rm -rf "$r"
	mkdir -p "$WORK/ctx-$v"
	cat >"$WORK/ctx-$v/Dockerfile" <<DF
FROM $img-rootfs
ENV container=docker
LABEL kubeforge.recipe=$RECIPE kubeforge.variant=$v
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/sbin/init"]
DF
	old_id=$(docker image inspect --format '{{.Id}}' "$img" 2>/dev/null || true)
	out=$(docker build -q -t "$img" "$WORK/ctx-$v" 2>&1) || die "docker build $img failed: $out"
	docker rmi "$img-rootfs" >/dev/null 2>&1 || true
	# The previous build of this image, now untagged, unless a container still uses it.
	new_id=$(docker image inspect --format '{{.Id}}' "$img")
	[[ -n "$old_id" && "$old_id" != "$new_id" ]] && docker rmi "$old_id" >/dev/null 2>&1 || true
	log "built $img in $(($(date +%s) - start))s ($(docker image inspect "$img" --format '{{.Size}}' | awk '{printf "%d MB", $1/1e6}'))"
done
