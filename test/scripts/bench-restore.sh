#!/usr/bin/env bash
# bench-restore.sh: `kubeforge backup` and `kubeforge restore` times against the size of etcd's database, on a
# real 1 + 1 harness cluster (`make bench-restore`; docs/benchmarks.md, "P4"). For each target size the cluster's
# etcd is filled with 1 MB ConfigMaps to that size, then: backup (wall), restore --no-converge (wall; the control
# plane back and every kubelet reconnected), and the restore's steps. Prints a Markdown table.
#
# Environment: BENCH_SIZES_MB="0 64 256"  BENCH_KEEP=1 (leave the harness running)
set -euo pipefail

main() {
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
GO=${GO:-go}
SIZES=${BENCH_SIZES_MB:-"0 64 256"}
DIR=$ROOT/.cache/bench-restore
PREFIX=kfbr
SUBNET=172.31.243.0/24
KF=$ROOT/bin/kubeforge
KUBECTL=$ROOT/.cache/artifacts/bin/kubectl
log() { printf '[bench-restore] %s\n' "$*" >&2; }

[[ -x $KF && -x $KUBECTL ]] || { log "run make build artifacts first"; exit 1; }
$GO run ./test/harness down --dir "$DIR" --name-prefix $PREFIX >/dev/null 2>&1 || true
rm -rf "$DIR"
$GO run ./test/harness up 2 --control-planes 1 --artifacts "$ROOT/.cache/artifacts" --dir "$DIR" --name-prefix $PREFIX --subnet $SUBNET >&2
[[ ${BENCH_KEEP:-0} == 1 ]] || trap '$GO run ./test/harness down --dir "$DIR" --name-prefix $PREFIX >/dev/null 2>&1' EXIT
INV=$DIR/inventory.yaml
STATE=$DIR/state
$KF up -i "$INV" --state-dir "$STATE" >"$DIR/up.log" 2>&1 || { tail -30 "$DIR/up.log" >&2; exit 1; }
export KUBECONFIG=$STATE/admin.conf
head -c 786432 /dev/urandom | base64 -w0 >"$DIR/blob" # 1 MiB of text
filled=0
rows=()
for mb in $SIZES; do
	log "filling etcd with $((mb - filled)) more 1 MiB ConfigMaps (to $mb)"
	for ((i = filled; i < mb; i++)); do
		"$KUBECTL" create configmap "fill-$i" --from-file=blob="$DIR/blob" >/dev/null
	done
	filled=$mb
	t0=$(date +%s.%N)
	$KF backup -i "$INV" --state-dir "$STATE" -o "$DIR/backup-$mb.tar.gz" >"$DIR/backup-$mb.log" 2>&1 || { tail -20 "$DIR/backup-$mb.log" >&2; exit 1; }
	t1=$(date +%s.%N)
	snap=$(sed -n 's/.*snapshot \([0-9]*\) bytes.*/\1/p' "$DIR/backup-$mb.log")
	archive=$(stat -c %s "$DIR/backup-$mb.tar.gz")
	$KF restore -i "$INV" --state-dir "$STATE" --from "$DIR/backup-$mb.tar.gz" --yes --no-converge >"$DIR/restore-$mb.log" 2>&1 || { tail -30 "$DIR/restore-$mb.log" >&2; exit 1; }
	t2=$(date +%s.%N)
	step() { awk -v s="==> $1" '$0==s {getline; print $3}' "$DIR/restore-$mb.log"; }
	rows+=("$(printf '| %s | %.1f | %.1f | %.1f | %.1f | %s | %s | %s | %s |' "$mb" "$(echo "$snap/1048576" | bc -l)" "$(echo "$archive/1048576" | bc -l)" \
		"$(echo "$t1-$t0" | bc)" "$(echo "$t2-$t1" | bc)" "$(step restore/stop)" "$(step restore/etcd)" "$(step restore/start)" "$(step restore/check)")")
	log "${rows[-1]}"
done
echo "| filled (MiB) | snapshot (MiB) | archive (MiB) | backup (s) | restore (s) | stop | etcd data | start | check |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
}

main "$@"
