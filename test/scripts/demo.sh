#!/usr/bin/env bash
# demo.sh: from a fresh clone to a Kubernetes cluster on three local "machines":
#   prerequisites -> Kubernetes artifacts (built here, cached) -> node image (cached) -> harness up 3
#   -> kubeforge up -> kubectl get nodes -o wide -> how to use it and tear it down.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
ARTIFACTS=${ARTIFACTS:-$ROOT/.cache/artifacts}
HARNESS_DIR=${HARNESS_DIR:-$ROOT/.harness}
NODES=${NODES:-3}
GO=${GO:-go}
INVENTORY=$HARNESS_DIR/inventory.yaml
KUBECTL=$ARTIFACTS/bin/kubectl

bold() { if [[ -t 2 ]]; then printf '\033[1m%s\033[0m\n' "$*" >&2; else printf '%s\n' "$*" >&2; fi; }
TIMES=()
stage() { # stage NAME CMD...: run a stage, time it
	local name=$1 t0 rc=0
	shift
	bold "==> $name"
	t0=$(date +%s)
	"$@" || rc=$?
	TIMES+=("$(printf '%-16s %4ss%s' "$name" "$(($(date +%s) - t0))" "$([[ $rc -ne 0 ]] && echo '  FAILED')")")
	return $rc
}
summary() {
	bold "==> timings"
	printf '  %s\n' "${TIMES[@]}" >&2
}
trap summary EXIT

stage prereqs bash test/scripts/prereqs.sh
stage artifacts bash test/scripts/artifacts.sh "$ARTIFACTS"
stage network bash test/scripts/network.sh "$ROOT/.cache/network-flannel-v0.28.11" "$ARTIFACTS"
stage node-image bash test/scripts/node-image.sh
stage harness-up "$GO" run ./test/harness up "$NODES" --artifacts "$ARTIFACTS" --dir "$HARNESS_DIR"

KUBEFORGE=$ROOT/bin/kubeforge
built=0
if stage build-kubeforge "$GO" build -trimpath -o "$KUBEFORGE" ./cmd/kubeforge; then built=1; fi

ran_up=0
if ((built)) && "$KUBEFORGE" up --help >/dev/null 2>&1; then
	stage kubeforge-up "$KUBEFORGE" up -i "$INVENTORY"
	ran_up=1
elif ((built)) && "$KUBEFORGE" preflight --help >/dev/null 2>&1; then
	bold "kubeforge has no 'up' command yet: running its preflight checks on the nodes instead"
	stage kubeforge-preflight "$KUBEFORGE" preflight -i "$INVENTORY" || true
else
	bold "kubeforge cannot install the cluster yet: $( ((built)) && echo "bin/kubeforge has neither 'up' nor 'preflight'" || echo "./cmd/kubeforge does not build")."
fi

if ((ran_up)); then
	# kubeforge keeps its state in CLUSTERNAME.kubeforge/ beside the inventory (the harness cluster is "harness").
	ADMIN=${KUBECONFIG_DEMO:-}
	for f in "$HARNESS_DIR"/*.kubeforge/admin.conf; do [[ -z "$ADMIN" && -f $f ]] && ADMIN=$f; done
	[[ -n "$ADMIN" ]] || ADMIN=$(find "$HARNESS_DIR" -name admin.conf -type f 2>/dev/null | head -n1)
	if [[ -z "$ADMIN" ]]; then
		bold "kubeforge up finished but no admin.conf was found under $HARNESS_DIR"
		exit 1
	fi
	stage kubectl "$KUBECTL" --kubeconfig "$ADMIN" get nodes -o wide
fi

cat >&2 <<MSG

The harness is up.
  Nodes (bare systemd + OpenSSH hosts: kubeforge up installs containerd from the artifacts; network kubeforge-harness):
$(sed 's/^/    /' < <("$GO" run ./test/harness status --dir "$HARNESS_DIR" 2>&1))
  Log in:        ssh -F $HARNESS_DIR/ssh_config node1        (user kube has passwordless sudo)
  Inventory:     $INVENTORY
  Artifacts:     $ARTIFACTS  (bin/, images/*.tar, runtime/, VERSION: the offline install kubeforge uses)
MSG
if ((ran_up)); then
	cat >&2 <<MSG
  Use it:        export KUBECONFIG=$ADMIN; $KUBECTL get pods -A
MSG
else
	cat >&2 <<MSG
  Missing:       'kubeforge up' (./cmd/kubeforge). Once it exists: bin/kubeforge up -i $INVENTORY
MSG
fi
cat >&2 <<MSG
  Tear down:     make harness-down     (removes exactly the containers, volumes and network the harness made;
                 kubeforge's own state, $HARNESS_DIR/*.kubeforge/, stays: remove it for a fresh start)
MSG
