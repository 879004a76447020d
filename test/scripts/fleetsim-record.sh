#!/usr/bin/env bash
# fleetsim-record.sh: (re)makes test/fleetsim/testdata/recording.json, the transcript the simulated fleet answers
# from (test/fleetsim/README.md). It starts its own harness (1 control plane + 1 worker, bare node image), puts
# `fleetsim record` (one SSH proxy per host) in front of it, runs `kubeforge preflight` through the proxies as root
# and as the sudo user kube, then test/bench/fanout (connect, facts, an upload of a 2 MiB file and two small ones to
# /opt/bench, `uname -a`; direct, -fanout 0: the simulated fleet replays no peer transfer) as kube and as root,
# so that an upload step can be replayed too; writes the recording and takes the harness down.
#
# Needs `make prereqs artifacts node-image`. Environment: ARTIFACTS (default .cache/artifacts),
# FLEETSIM_HARNESS_DIR (/tmp/fleetsim-h), FLEETSIM_PREFIX (kffs), FLEETSIM_SUBNET (172.31.227.0/24),
# FLEETSIM_RECORDING (test/fleetsim/testdata/recording.json).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
GO=${GO:-go}
ARTIFACTS=${ARTIFACTS:-$ROOT/.cache/artifacts}
HDIR=${FLEETSIM_HARNESS_DIR:-/tmp/fleetsim-h}
PREFIX=${FLEETSIM_PREFIX:-kffs}
SUBNET=${FLEETSIM_SUBNET:-172.31.227.0/24}
OUT=${FLEETSIM_RECORDING:-$ROOT/test/fleetsim/testdata/recording.json}
BIN=$(mktemp -d /tmp/fleetsim-record.XXXXXX)

log() { printf '[fleetsim-record] %s\n' "$*" >&2; }
down() { "$BIN/harness" down --dir "$HDIR" --name-prefix "$PREFIX" >&2 || log "harness down failed: check docker ps --filter name=$PREFIX"; }

log "building kubeforge, fleetsim and the harness into $BIN"
"$GO" build -o "$BIN/kubeforge" ./cmd/kubeforge
"$GO" build -o "$BIN/fleetsim" ./test/fleetsim
"$GO" build -o "$BIN/harness" ./test/harness
"$GO" build -o "$BIN/fanout" ./test/bench/fanout
mkdir -p "$BIN/src"
head -c 2097152 /dev/urandom >"$BIN/src/payload.bin" # >= 1 MiB: its digest goes through the sums cache
echo "small one" >"$BIN/src/small1.conf"
echo "small two" >"$BIN/src/small2.conf"
trap down EXIT
"$BIN/harness" up 2 --control-planes 1 --artifacts "$ARTIFACTS" --dir "$HDIR" --name-prefix "$PREFIX" --subnet "$SUBNET"
IMAGE=$(docker inspect -f '{{.Config.Image}}' "$PREFIX-node1")
"$BIN/fleetsim" record -harness "$HDIR" -dir "$BIN/proxy" -out "$OUT" \
	-source "test/harness: $PREFIX-node1 (control plane) and $PREFIX-node2 (worker), image $IMAGE, $(uname -r); kubeforge $(git describe --always --dirty)" \
	-- sh -c '"$0" preflight -i "$FLEETSIM_DIR/inventory-root.yaml" && "$0" preflight -i "$FLEETSIM_DIR/inventory-kube.yaml" &&
		for u in kube root; do
			"$1/fanout" -i "$FLEETSIM_DIR/inventory-$u.yaml" -src "$1/src" -dest /opt/bench -fanout 0 >/dev/null || exit
			for h in node1 node2; do ssh -F "$2/ssh_config" "$h" rm -rf /opt/bench /var/lib/kubeforge/sums || exit; done # not through the proxy: both uploads cold
		done' \
	"$BIN/kubeforge" "$BIN" "$HDIR"
log "wrote $OUT"
