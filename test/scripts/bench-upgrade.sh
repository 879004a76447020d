#!/usr/bin/env bash
# bench-upgrade.sh: `kubeforge upgrade` from v1.36.3 to v1.37.2 on real harness clusters of 1 control plane + 2
# workers and 3 control planes + 1 worker (`make bench-upgrade`; docs/benchmarks.md, "Upgrade"). Each: harness up,
# `kubeforge up` at v1.36.3, then `kubeforge upgrade` at v1.37.2, timed, with its steps. Prints a Markdown table.
# The requests failed during an upgrade come from the e2e test TestUpgradeOneControlPlaneTwoWorkers (its log).
#
# During each upgrade test/bench/apidown polls every control plane's /readyz every 200 ms: the table gives the
# longest time no API server answered and each control plane's own longest outage.
#
# Environment: BENCH_SHAPES="1+2 3+1"  BENCH_KEEP=1 (leave the last harness running)
#   BENCH_KUBEFORGE_BEFORE=PATH: also upgrade with that kubeforge binary (an older build), one row each, same shapes
set -euo pipefail

main() {
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
GO=${GO:-go}
SHAPES=${BENCH_SHAPES:-"1+2 3+1"}
OLD=${ARTIFACTS_OLD:-$ROOT/.cache/artifacts-v1.36.3}
NEW=${ARTIFACTS:-$ROOT/.cache/artifacts}
KF=$ROOT/bin/kubeforge
BINS=("$KF")
[[ -z ${BENCH_KUBEFORGE_BEFORE:-} ]] || BINS=("$BENCH_KUBEFORGE_BEFORE" "$KF")
APIDOWN=$ROOT/.cache/bench-bin/apidown
mkdir -p "$(dirname "$APIDOWN")"
$GO build -o "$APIDOWN" ./test/bench/apidown
PREFIX=kfbu
SUBNET=172.31.232.0/24
log() { printf '[bench-upgrade] %s\n' "$*" >&2; }
[[ -x $KF && -f $OLD/VERSION && -f $NEW/VERSION ]] || { log "run make build artifacts artifacts-old first"; exit 1; }
rows=()
for KF in "${BINS[@]}"; do
for shape in $SHAPES; do
	cps=${shape%+*}
	workers=${shape#*+}
	DIR=$ROOT/.cache/bench-upgrade-$shape
	$GO run ./test/harness down --dir "$DIR" --name-prefix $PREFIX >/dev/null 2>&1 || true
	rm -rf "$DIR"
	$GO run ./test/harness up $((cps + workers)) --control-planes "$cps" --artifacts "$OLD" --dir "$DIR" --name-prefix $PREFIX --subnet $SUBNET >&2
	INV=$DIR/inventory.yaml
	STATE=$DIR/state
	$KF up -i "$INV" --state-dir "$STATE" >"$DIR/up.log" 2>&1 || { tail -30 "$DIR/up.log" >&2; exit 1; }
	sed -e "s|artifacts: .*|artifacts: $NEW|" -e "s|kubernetesVersion: .*|kubernetesVersion: $(cat "$NEW/VERSION")|" "$INV" >"$DIR/inventory-new.yaml"
	log "$shape: upgrade $(cat "$OLD/VERSION") -> $(cat "$NEW/VERSION")"
	servers=()
	for a in $(awk '/^    address: /{print $2}' "$INV" | head -n "$cps"); do servers+=("https://$a:6443"); done
	"$APIDOWN" -kubeconfig "$STATE/admin.conf" "${servers[@]}" >"$DIR/apidown.json" &
	watch=$!
	t0=$(date +%s.%N)
	$KF upgrade -i "$DIR/inventory-new.yaml" --state-dir "$STATE" --output json >"$DIR/upgrade.json" 2>"$DIR/upgrade.err" || { kill $watch; tail -30 "$DIR/upgrade.err" >&2; exit 1; }
	t1=$(date +%s.%N)
	kill -TERM $watch && wait $watch
	down=$(python3 - "$DIR/apidown.json" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
every = [r for r in rows if r["server"] != "any"]
anyr = [r for r in rows if r["server"] == "any"][0]
print("%.1f s | %s" % (anyr["longestSeconds"], ", ".join("%.1f s" % r["longestSeconds"] for r in every)))
PY
)
	steps=$(python3 - "$DIR/upgrade.json" <<'PY' 2>/dev/null || true
import json, sys
out = []
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("type") == "step-end" and e.get("step", "").startswith("upgrade/") and not e.get("host") and e.get("durationMs", 0) > 500:
        out.append("%s %.1f s" % (e["step"].split("/", 1)[1], e["durationMs"] / 1000))
print(", ".join(out))
PY
)
	rows+=("| $shape | $(basename "$KF") | $(printf '%.1f' "$(echo "$t1 - $t0" | bc)") s | $down | $steps |")
	if [[ ${BENCH_KEEP:-0} != 1 || $shape != "${SHAPES##* }" ]]; then
		$GO run ./test/harness down --dir "$DIR" --name-prefix $PREFIX >/dev/null 2>&1
	fi
done
done
echo "| cluster | kubeforge | upgrade $(cat "$OLD/VERSION") → $(cat "$NEW/VERSION") | no API server answering (longest) | each control plane's longest outage | its steps over 0.5 s |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
}
main "$@"
