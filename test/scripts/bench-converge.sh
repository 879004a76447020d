#!/usr/bin/env bash
# bench-converge.sh: the cost of looking before acting, on a converged 3 control planes + 1 worker cluster.
# Starts its own harness (instance kfbconv, 172.31.240.0/24), runs `kubeforge up`, then RUNS (default 5) rounds of
# a no-change `up` and an `up --dry-run`, interleaved. From the --output json event stream of each run it prints the
# wall time and the time of connect + facts (the bare fact gathering, measured inside the same run), and the ratio.
# Usage: test/scripts/bench-converge.sh   (after `make build artifacts node-image`; removes its harness at the end)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
RUNS=${RUNS:-5}
DIR=$(mktemp -d /tmp/kubeforge-bench-converge.XXXX)
KF=$ROOT/bin/kubeforge
cleanup() { go run ./test/harness down --dir "$DIR" --name-prefix kfbconv >/dev/null 2>&1 || true; rm -rf "$DIR"; }
trap cleanup EXIT
go run ./test/harness up 4 --control-planes 3 --name-prefix kfbconv --subnet 172.31.240.0/24 \
	--artifacts "$ROOT/.cache/artifacts" --dir "$DIR" >/dev/null
"$KF" up -i "$DIR/inventory.yaml" >/dev/null
# measure ARGS...: prints "total_s connect+facts_s" of one run from its JSON events.
measure() {
	"$KF" up -i "$DIR/inventory.yaml" --output json "$@" | grep "^{" | jq -rs '
		(map(select(.type=="playbook-end"))[0].durationMs) as $t
		| (map(select(.type=="step-end" and (.step=="connect" or .step=="facts")) | .durationMs) | add) as $f
		| "\($t/1000) \($f/1000)"'
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
up_t=() up_f=() dry_t=() dry_f=()
for ((i = 1; i <= RUNS; i++)); do
	read -r t f < <(measure); up_t+=("$t"); up_f+=("$f")
	read -r t f < <(measure --dry-run); dry_t+=("$t"); dry_f+=("$f")
done
mu=$(printf '%s\n' "${up_t[@]}" | median); mf=$(printf '%s\n' "${up_f[@]}" | median)
md=$(printf '%s\n' "${dry_t[@]}" | median); mdf=$(printf '%s\n' "${dry_f[@]}" | median)
echo "converged 3+1, $RUNS runs each, medians (s):"
printf '  no-change up: %.2f   its connect+facts: %.2f   ratio %.2fx\n' "$mu" "$mf" "$(awk -v a="$mu" -v b="$mf" 'BEGIN{print a/b}')"
printf '  up --dry-run: %.2f   its connect+facts: %.2f   ratio %.2fx\n' "$md" "$mdf" "$(awk -v a="$md" -v b="$mdf" 'BEGIN{print a/b}')"
echo "  all no-change up runs: ${up_t[*]}"
echo "  all dry-run runs:      ${dry_t[*]}"
