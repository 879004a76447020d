#!/usr/bin/env bash
# bench-runtime.sh: what installing the container runtime costs `kubeforge up` (`make bench-runtime`;
# docs/benchmarks.md, "Runtime install"). For each round: a fresh 1+2 harness of bare hosts (kubeforge installs
# containerd, runc and the CNI plugins from the artifacts), then a fresh 1+2 harness whose hosts have Debian's
# containerd preinstalled; `kubeforge up` on each, timed, with its runtime/install and artifacts steps. Prints a
# Markdown table and the ratio the issue asks for: the runtime/install step against the whole `up` on bare hosts.
#
# Environment: BENCH_ROUNDS=2
set -euo pipefail

main() {
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
GO=${GO:-go}
ROUNDS=${BENCH_ROUNDS:-2}
ART=${ARTIFACTS:-$ROOT/.cache/artifacts}
KF=$ROOT/bin/kubeforge
PREFIX=kfbrt
SUBNET=172.31.229.0/24
DIR=$ROOT/.cache/bench-runtime
log() { printf '[bench-runtime] %s\n' "$*" >&2; }
[[ -x $KF && -d $ART/runtime ]] || { log "run make build artifacts first"; exit 1; }
down() { $GO run ./test/harness down --dir "$DIR" --name-prefix $PREFIX >/dev/null 2>&1 || true; rm -rf "$DIR"; }
trap down EXIT
rows=()
sum_ratio=0
for round in $(seq "$ROUNDS"); do
	for image in kubeforge-node:bookworm kubeforge-node:bookworm-containerd; do
		down
		$GO run ./test/harness up 3 --control-planes 1 --artifacts "$ART" --dir "$DIR" --name-prefix $PREFIX --subnet $SUBNET --image "$image" >/dev/null 2>&1
		t0=$(date +%s.%N)
		$KF up -i "$DIR/inventory.yaml" --state-dir "$DIR/state" --output json >"$DIR/up.json" 2>"$DIR/up.err" || { tail -30 "$DIR/up.err" >&2; exit 1; }
		t1=$(date +%s.%N)
		read -r rt art < <(python3 - "$DIR/up.json" <<'PY'
import json, sys
d = {}
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("type") == "step-end" and not e.get("host"):
        d[e.get("step")] = e.get("durationMs", 0) / 1000
print("%.2f %.2f" % (d.get("runtime/install", 0), d.get("artifacts", 0)))
PY
)
		total=$(echo "$t1 - $t0" | bc)
		what="bare (kubeforge installs containerd 2.4.2)"
		[[ $image == *containerd ]] && what="Debian's containerd 1.6 preinstalled"
		rows+=("| $round | $what | $(printf '%.1f' "$total") s | $rt s | $art s | $(echo "scale=1; 100 * $rt / $total" | bc)% |")
		log "round $round, $what: up $(printf '%.1f' "$total") s, runtime/install $rt s"
	done
done
echo "| round | hosts | \`up\` 1+2 | runtime/install | artifacts | runtime/install of \`up\` |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
}
main "$@"
