#!/usr/bin/env bash
# runtime.sh DIR: build the container runtime kubeforge installs on bare hosts, from the Go modules, into DIR:
#   DIR/bin/containerd DIR/bin/containerd-shim-runc-v2 DIR/bin/ctr   containerd (static, CGO_ENABLED=0)
#   DIR/bin/runc                                                    runc (static, with seccomp: libseccomp.a)
#   DIR/cni/*                                                       the standard CNI plugins
#   DIR/VERSIONS                                                    "containerd v2.4.2" ... one per line
#   DIR/SHA256SUMS                                                  sha256sum of every file above
# The versions: containerd v2.4.2 (the newest 2.x the module proxy serves; kubelet 1.37 wants containerd >= 2.0),
# and the runc and CNI plugins that containerd release tests with: runc v1.5.2 (its script/setup/runc-version) and
# plugins v1.9.1 (its go.mod). Each is built with `go install module@version`, so with its own go.mod and go.sum as
# released, checked against the Go checksum database. Independent of the Kubernetes version: artifacts.sh links
# one build into every artifacts directory. Cached by a stamp of this script and the Go version.
set -euo pipefail

[[ $# -eq 1 && -n "$1" ]] || { echo "usage: $0 DIR" >&2; exit 2; }
CONTAINERD_VERSION=v2.4.2
RUNC_VERSION=v1.5.2
CNI_VERSION=v1.9.1
CNI_PLUGINS=(main/bridge main/loopback main/ptp main/host-device main/macvlan main/ipvlan main/vlan
	ipam/host-local ipam/static meta/portmap meta/bandwidth meta/firewall meta/tuning)
log() { printf '[runtime] %s\n' "$*" >&2; }
die() { printf '[runtime] error: %s\n' "$*" >&2; exit 1; }
command -v go >/dev/null || die "go is not on PATH"
mkdir -p "$1"
DIR=$(cd "$1" && pwd)
STAMP=$({ go version; sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1; } | sha256sum | cut -d' ' -f1)
if [[ -f $DIR/.stamp && "$(cat "$DIR/.stamp")" == "$STAMP" ]] && (cd "$DIR" && sha256sum --quiet -c SHA256SUMS >/dev/null 2>&1); then
	log "up to date in $DIR (stamp ${STAMP:0:12})"
	exit 0
fi
rm -f "$DIR/.stamp"
t0=$(date +%s)
NEW=$DIR/.new
rm -rf "$NEW"
mkdir -p "$NEW/bin" "$NEW/cni"
export GOFLAGS=-trimpath

log "containerd $CONTAINERD_VERSION (cold: ~2 min)"
CD=github.com/containerd/containerd/v2
CGO_ENABLED=0 GOBIN=$NEW/bin go install -tags "no_btrfs no_devmapper no_zfs" \
	-ldflags "-s -w -X $CD/version.Version=$CONTAINERD_VERSION -X $CD/version.Revision=release" \
	"$CD/cmd/containerd@$CONTAINERD_VERSION" "$CD/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" "$CD/cmd/ctr@$CONTAINERD_VERSION" ||
	die "building containerd failed (output above)"

log "runc $RUNC_VERSION"
# runc needs cgo (its nsenter is C) and libseccomp (pods ask for the RuntimeDefault profile): link both statically.
pkg-config --exists libseccomp 2>/dev/null || die "libseccomp-dev and pkg-config are missing (run test/scripts/prereqs.sh)"
CGO_ENABLED=1 GOBIN=$NEW/bin go install -tags "seccomp netgo osusergo urfave_cli_no_docs" \
	-ldflags "-s -w -extldflags -static" "github.com/opencontainers/runc@$RUNC_VERSION" ||
	die "building runc failed (output above)"

log "CNI plugins $CNI_VERSION"
PL=github.com/containernetworking/plugins
pkgs=()
for p in "${CNI_PLUGINS[@]}"; do pkgs+=("$PL/plugins/$p@$CNI_VERSION"); done
CGO_ENABLED=0 GOBIN=$NEW/cni go install -ldflags "-s -w -X $PL/pkg/utils/buildversion.BuildVersion=$CNI_VERSION" "${pkgs[@]}" ||
	die "building the CNI plugins failed (output above)"

# Smoke checks: each binary runs and says the version built. Each output is read whole before it is matched: a
# `| grep -q` under pipefail fails at random when grep exits before the binary has written everything (SIGPIPE).
out=$("$NEW/bin/containerd" --version 2>&1 || true)
[[ "$out" == *" ${CONTAINERD_VERSION} "* ]] || die "containerd reports: $out"
out=$("$NEW/bin/runc" --version 2>&1 || true)
grep -qx "runc version ${RUNC_VERSION#v}" <<<"$out" || die "runc reports: $(head -1 <<<"$out")"
grep -q '^libseccomp: ' <<<"$out" || die "runc was built without seccomp"
out=$("$NEW/cni/bridge" 2>&1 || true)
[[ "$out" == *"plugin $CNI_VERSION"* ]] || die "bridge reports: $(head -1 <<<"$out")"
printf 'containerd %s\nrunc %s\ncni-plugins %s\n' "$CONTAINERD_VERSION" "$RUNC_VERSION" "$CNI_VERSION" >"$NEW/VERSIONS"
(cd "$NEW" && find bin cni VERSIONS -type f | sort | xargs sha256sum >SHA256SUMS)
rm -rf "$DIR/bin" "$DIR/cni"
mv "$NEW/bin" "$NEW/cni" "$DIR/"
mv "$NEW/VERSIONS" "$NEW/SHA256SUMS" "$DIR/"
rmdir "$NEW"
printf '%s\n' "$STAMP" >"$DIR/.stamp"
log "runtime ready in $DIR ($(($(date +%s) - t0))s, $(du -sm "$DIR" | cut -f1) MB)"
