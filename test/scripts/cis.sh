#!/usr/bin/env bash
# cis.sh: measure a kubeforge cluster against the CIS Kubernetes Benchmark with kube-bench built from source
# (test/scripts/kube-bench.sh). `make cis` brings up a fresh 1 control plane + 1 worker harness cluster (instance
# kfcis, 172.31.222.0/24) with bin/kubeforge up and removes it afterwards; `make cis CIS_INVENTORY=path` measures
# that inventory's existing cluster instead (its first control plane and first worker, over the inventory's SSH
# settings; a non-root user needs passwordless sudo).
#
# On the control plane: kube-bench run --targets master,etcd,controlplane,policies; on the worker: --targets node.
# Both with --benchmark cis-1.12 (CIS_BENCHMARK overrides): the newest CIS Kubernetes Benchmark kube-bench ships
# (v1.12.0, written for Kubernetes 1.32-1.34). kube-bench's own version map stops at 1.34, so for v1.37 it cannot
# choose by itself. The policies checks run kubectl with /etc/kubernetes/admin.conf on the control plane.
#
# The raw JSON and the summary land in .cache/kube-bench/results/UTC-TIMESTAMP/ (latest -> the newest run).
# Environment: CIS_INVENTORY=path  CIS_BENCHMARK=cis-1.12  CIS_KEEP=1 (leave the harness cluster running)
#              ARTIFACTS=dir (default .cache/artifacts)  GO=go
set -euo pipefail

main() {
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
GO=${GO:-go}
BENCHMARK=${CIS_BENCHMARK:-cis-1.12}
KB=$ROOT/.cache/kube-bench
DIR=$ROOT/.cache/cis
PREFIX=kfcis
SUBNET=172.31.222.0/24
ARTIFACTS=${ARTIFACTS:-$ROOT/.cache/artifacts}
KF=$ROOT/bin/kubeforge
RUN=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$KB/results/$RUN
log() { printf '[cis] %s\n' "$*" >&2; }
die() { printf '[cis] error: %s\n' "$*" >&2; exit 1; }

bash "$ROOT/test/scripts/kube-bench.sh" "$KB"
mkdir -p "$OUT" "$DIR"
$GO build -o "$DIR/cis" ./test/cis

if [[ -n ${CIS_INVENTORY:-} ]]; then
	[[ -f $CIS_INVENTORY ]] || die "CIS_INVENTORY=$CIS_INVENTORY: no such file"
	INV=$CIS_INVENTORY
else
	[[ -x $KF ]] || die "no $KF: run make build"
	[[ -f $ARTIFACTS/VERSION ]] || die "no artifacts in $ARTIFACTS: run make artifacts (or set ARTIFACTS)"
	log "fresh 1+1 harness cluster $PREFIX ($SUBNET)"
	$GO run ./test/harness down --dir "$DIR/harness" --name-prefix $PREFIX >/dev/null 2>&1 || true
	rm -rf "$DIR/harness" "$DIR/state"
	[[ ${CIS_KEEP:-0} == 1 ]] || trap '$GO run ./test/harness down --dir "$DIR/harness" --name-prefix $PREFIX >/dev/null 2>&1' EXIT
	$GO run ./test/harness up 2 --control-planes 1 --artifacts "$ARTIFACTS" --dir "$DIR/harness" \
		--name-prefix $PREFIX --subnet $SUBNET >"$DIR/harness-up.log" 2>&1 || { tail -20 "$DIR/harness-up.log" >&2; exit 1; }
	INV=$DIR/harness/inventory.yaml
	t0=$(date +%s)
	"$KF" up -i "$INV" --state-dir "$DIR/state" >"$DIR/up.log" 2>&1 || { tail -30 "$DIR/up.log" >&2; die "kubeforge up failed (log $DIR/up.log)"; }
	log "kubeforge up: $(($(date +%s) - t0)) s"
fi

# The two hosts, as ssh config aliases built from the inventory's SSH settings (user, key, known_hosts, bastion).
SSHCONF=$OUT/ssh_config
mapfile -t TARGETS < <("$DIR/cis" ssh-config -i "$INV" -o "$SSHCONF")
((${#TARGETS[@]} == 2)) || die "test/cis ssh-config named ${#TARGETS[@]} hosts, want 2"
read -r _ CP_HOST <<<"${TARGETS[0]}"
read -r _ WORKER_HOST <<<"${TARGETS[1]}"

# bench ALIAS HOST NAME TARGETS: copy kube-bench and cfg/ to a fresh directory on the host, run it as root,
# bring the JSON back to OUT/NAME-HOST.json, remove the directory.
bench() {
	local alias=$1 host=$2 name=$3 targets=$4 sudo="" tmp t0=$(date +%s)
	[[ $(ssh -F "$SSHCONF" "$alias" id -u) == 0 ]] || sudo="sudo -n"
	tmp=$(ssh -F "$SSHCONF" "$alias" mktemp -d /tmp/kube-bench.XXXXXX)
	scp -q -F "$SSHCONF" -r "$KB/kube-bench" "$KB/cfg" "$alias:$tmp/"
	log "$host: kube-bench run --benchmark $BENCHMARK --targets $targets"
	ssh -F "$SSHCONF" "$alias" "cd $tmp && $sudo env KUBECONFIG=/etc/kubernetes/admin.conf ./kube-bench run \
		--config-dir $tmp/cfg --benchmark $BENCHMARK --targets $targets --json 2>$tmp/stderr" >"$OUT/$name-$host.json" ||
		{ ssh -F "$SSHCONF" "$alias" "tail -20 $tmp/stderr" >&2 || true; die "kube-bench failed on $host"; }
	ssh -F "$SSHCONF" "$alias" "rm -rf $tmp"
	log "$host: done in $(($(date +%s) - t0)) s"
}
bench cis-control-plane "$CP_HOST" control-plane master,etcd,controlplane,policies
bench cis-worker "$WORKER_HOST" worker node
ln -sfn "$RUN" "$KB/results/latest"
"$DIR/cis" summary "$CP_HOST=$OUT/control-plane-$CP_HOST.json" "$WORKER_HOST=$OUT/worker-$WORKER_HOST.json" | tee "$OUT/summary.txt"
log "raw JSON and summary: $OUT"
}

main "$@"
