#!/usr/bin/env bash
# registry.sh DIR: build the CNCF distribution registry (the reference OCI registry, "registry:3") from its Go
# module into DIR, for the end-to-end test of cluster.registries (test/e2e/registry_test.go):
#   DIR/registry   its cmd/registry, static (CGO_ENABLED=0), stripped, with its version stamped
#   DIR/VERSION    "v3.1.2"
# Built with `go install module@version`, so with the release's own go.mod and go.sum, checked against the Go
# checksum database, in the go command's throwaway main module: nothing of it enters kubeforge's go.mod.
# Cached as runtime.sh is: a stamp of this script and the Go version skips everything when the binary is there
# (a warm run takes well under a second; a rebuild after a change, seconds, from the Go build cache; cold ~2 min).
set -euo pipefail

[[ $# -eq 1 && -n "$1" ]] || { echo "usage: $0 DIR" >&2; exit 2; }
VERSION=v3.1.2
MOD=github.com/distribution/distribution/v3
log() { printf '[registry] %s\n' "$*" >&2; }
die() { printf '[registry] error: %s\n' "$*" >&2; exit 1; }
command -v go >/dev/null || die "go is not on PATH"
mkdir -p "$1"
DIR=$(cd "$1" && pwd)
STAMP=$({ go version; echo "$VERSION"; sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1; } | sha256sum | cut -d' ' -f1)
if [[ -f $DIR/.stamp && "$(cat "$DIR/.stamp")" == "$STAMP" && -x $DIR/registry ]]; then
	log "up to date in $DIR (stamp ${STAMP:0:12})"
	exit 0
fi
rm -f "$DIR/.stamp"
t0=$(date +%s)
NEW=$DIR/.new
rm -rf "$NEW"
mkdir -p "$NEW"
log "distribution $VERSION cmd/registry (cold: ~2 min on 2 cores)"
CGO_ENABLED=0 GOBIN=$NEW GOFLAGS=-trimpath go install \
	-ldflags "-s -w -X $MOD/version.version=$VERSION -X $MOD/version.revision=release -X $MOD/version.mainpkg=$MOD" \
	"$MOD/cmd/registry@$VERSION" || die "building the registry failed (output above)"
# Smoke check: it runs and says the version built (read whole, then matched: no SIGPIPE under pipefail).
out=$("$NEW/registry" --version 2>&1 || true)
[[ "$out" == *" $VERSION"* ]] || die "registry --version reports: $out"
file_out=$(file -b "$NEW/registry" 2>/dev/null || true)
[[ -z $file_out || "$file_out" == *"statically linked"* ]] || die "registry is not static: $file_out"
mv -f "$NEW/registry" "$DIR/registry"
printf '%s\n' "$VERSION" >"$DIR/VERSION"
rmdir "$NEW"
printf '%s\n' "$STAMP" >"$DIR/.stamp"
log "registry $VERSION ready in $DIR ($(($(date +%s) - t0))s, $(du -m "$DIR/registry" | cut -f1) MB)"
