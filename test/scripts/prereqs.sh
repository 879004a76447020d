#!/usr/bin/env bash
# prereqs.sh: make this machine able to run kubeforge's test harness. Idempotent.
#   - installs Debian's docker.io, debootstrap, jq, openssh-client, openssh-server and sudo (the integration tests), iptables, ... when missing (gcc, libc6-dev,
#     libseccomp-dev and pkg-config build a static runc for the bundle)
#   - installs a runc wrapper that drops CAP_SYS_RESOURCE (some VMs remove it from the bounding set, which
#     breaks every `docker run --privileged`) and makes it dockerd's default runtime
#   - starts dockerd when it is not answering (no systemd needed)
#   - raises fs.inotify.max_user_instances (each systemd node needs several)
#   - fences the harness networks: nothing they route may leave this machine (iptables DOCKER-USER)
set -euo pipefail

log() { printf '[prereqs] %s\n' "$*" >&2; }
die() { printf '[prereqs] error: %s\n' "$*" >&2; exit 1; }

PKGS=(docker.io containerd runc debootstrap jq openssh-client openssh-server sudo iptables ca-certificates gcc libc6-dev libseccomp-dev pkg-config curl make bzip2)
WRAPPER=/usr/local/sbin/kubeforge-runc
DAEMON_JSON=/etc/docker/daemon.json
DOCKERD_LOG=/var/log/dockerd.log

# --- the system ------------------------------------------------------------------------------------------
if [[ ! -r /etc/os-release ]] || ! . /etc/os-release || [[ "${ID:-}" != debian && " ${ID_LIKE:-} " != *" debian "* ]]; then
	die "this script supports Debian (and derivatives) only. On this system install by hand:
  a Docker engine (dockerd + docker CLI) that runs privileged containers, debootstrap, jq, OpenSSH client
  (ssh, ssh-keygen, ssh-keyscan), iptables; then start dockerd and re-run 'make demo'."
fi
if [[ $(id -u) -ne 0 ]]; then
	die "run as root (it installs packages and starts dockerd): sudo $0"
fi

# --- packages ---------------------------------------------------------------------------------------------
missing=()
for p in "${PKGS[@]}"; do
	if [[ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" != installed ]]; then
		missing+=("$p")
	fi
done
if ((${#missing[@]})); then
	log "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
	log "packages present: ${PKGS[*]}"
fi

# --- runc wrapper -----------------------------------------------------------------------------------------
REAL_RUNC=$(command -v runc || true)
[[ -x /usr/sbin/runc ]] && REAL_RUNC=/usr/sbin/runc
[[ -n "$REAL_RUNC" ]] || die "runc not found after installing packages"
want_wrapper=$(cat <<WRAP
#!/bin/sh
# kubeforge-runc: written by kubeforge's test/scripts/prereqs.sh. Removes CAP_SYS_RESOURCE from the OCI
# bundle (create/run) or process file (exec), because this machine's init dropped it from the bounding set,
# then runs the real runc.
REAL=$REAL_RUNC
cmd=""; bundle=""; process=""; prev=""
for a in "\$@"; do
	case "\$prev" in
	--bundle|-b) bundle=\$a ;;
	--process|-p) [ "\$cmd" = exec ] && process=\$a ;;
	esac
	case "\$a" in
	--bundle=*) bundle=\${a#--bundle=} ;;
	--process=*) process=\${a#--process=} ;;
	create|run|exec) [ -z "\$cmd" ] && cmd=\$a ;;
	esac
	prev=\$a
done
strip() { # strip FILE JQPATH
	[ -f "\$1" ] || return 0
	grep -q CAP_SYS_RESOURCE "\$1" || return 0
	t="\$1.kf\$\$"
	jq "\$2 |= (if . == null then . else with_entries(.value |= (if type == \"array\" then map(select(. != \"CAP_SYS_RESOURCE\")) else . end)) end)" "\$1" >"\$t" && mv "\$t" "\$1"
}
case "\$cmd" in
create|run) strip "\${bundle:-.}/config.json" .process.capabilities ;;
exec) [ -n "\$process" ] && strip "\$process" .capabilities ;;
esac
exec "\$REAL" "\$@"
WRAP
)
if [[ ! -f $WRAPPER ]] || [[ "$(cat "$WRAPPER")" != "$want_wrapper" ]]; then
	log "writing $WRAPPER (drops CAP_SYS_RESOURCE, then runs $REAL_RUNC)"
	printf '%s\n' "$want_wrapper" >"$WRAPPER.tmp"
	chmod 0755 "$WRAPPER.tmp"
	mv "$WRAPPER.tmp" "$WRAPPER"
fi

# --- daemon.json ------------------------------------------------------------------------------------------
mkdir -p /etc/docker
cur='{}'
[[ -s $DAEMON_JSON ]] && cur=$(cat "$DAEMON_JSON")
new=$(jq --arg w "$WRAPPER" '.runtimes["kubeforge-runc"] = {"path": $w} | ."default-runtime" = "kubeforge-runc"' <<<"$cur") ||
	die "$DAEMON_JSON is not valid JSON; fix or remove it"
if [[ "$(jq -S . <<<"$cur")" != "$(jq -S . <<<"$new")" ]]; then
	log "configuring $DAEMON_JSON: default-runtime kubeforge-runc"
	printf '%s\n' "$new" >"$DAEMON_JSON.tmp"
	mv "$DAEMON_JSON.tmp" "$DAEMON_JSON"
fi

# --- sysctls ----------------------------------------------------------------------------------------------
if (($(sysctl -n fs.inotify.max_user_instances) < 1024)); then
	log "raising fs.inotify.max_user_instances to 1024"
	sysctl -qw fs.inotify.max_user_instances=1024
fi
if (($(sysctl -n fs.inotify.max_user_watches) < 524288)); then
	sysctl -qw fs.inotify.max_user_watches=524288
fi

# --- egress fence -----------------------------------------------------------------------------------------
# The test hosts talk to each other and to this machine only: nothing routed from a harness network (a docker
# bridge br-*) may leave through another interface. Without this, a pod's request to a Service IP that its
# node's kube-proxy has not programmed yet goes out of this machine's default route.
fence() {
	iptables -C DOCKER-USER -i br-+ ! -o br-+ -j DROP 2>/dev/null && return 0
	iptables -I DOCKER-USER -i br-+ ! -o br-+ -j DROP || die "could not add the harness egress rule to DOCKER-USER"
	log "harness networks may not send outside this machine (iptables DOCKER-USER -i br-+ ! -o br-+ -j DROP)"
}

# --- dockerd ----------------------------------------------------------------------------------------------
docker_ok() { timeout 10 docker info >/dev/null 2>&1; }
runtime_ok() { [[ "$(timeout 10 docker info --format '{{.DefaultRuntime}}' 2>/dev/null)" == kubeforge-runc ]]; }
if docker_ok && runtime_ok; then
	log "dockerd is running with default runtime kubeforge-runc"
	fence
	exit 0
fi
if docker_ok; then
	# Running, but without our runtime: SIGHUP reloads runtimes and default-runtime from daemon.json.
	log "reloading dockerd configuration"
	pkill -HUP -x dockerd || true
	for _ in $(seq 1 20); do runtime_ok && break; sleep 0.5; done
	runtime_ok || die "dockerd does not use kubeforge-runc after reload; restart dockerd (see $DAEMON_JSON)"
	log "dockerd is running with default runtime kubeforge-runc"
	fence
	exit 0
fi
if [[ "$(ps -p 1 -o comm= 2>/dev/null)" == systemd ]] && command -v systemctl >/dev/null; then
	log "starting docker.service"
	systemctl start docker.service
else
	log "starting dockerd in the background (log: $DOCKERD_LOG)"
	nohup /usr/sbin/dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
	disown || true
fi
for _ in $(seq 1 60); do docker_ok && break; sleep 0.5; done
docker_ok || die "dockerd did not answer within 30s; see $DOCKERD_LOG"
runtime_ok || die "dockerd's default runtime is not kubeforge-runc; see $DAEMON_JSON"
log "dockerd is running with default runtime kubeforge-runc"
fence
