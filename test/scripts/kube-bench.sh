#!/usr/bin/env bash
# kube-bench.sh [DIR]: build Aqua Security's kube-bench (the CIS Kubernetes Benchmark runner) from source into
# DIR (default .cache/kube-bench):
#   DIR/kube-bench     static linux/amd64 binary (CGO_ENABLED=0, as kube-bench's own makefile builds it)
#   DIR/cfg/           its benchmark definitions (cfg/config.yaml, cfg/cis-1.12/, ...), which it reads at run time
#   DIR/src.tar.gz     the source at COMMIT below, kept so that later builds need no git mirror
#
# Source: github.com/aquasecurity/kube-bench, commit COMMIT (2026-06-09, two commits after the v0.15.6 release:
# "ci: pin GitHub Actions to immutable commit hashes (#2106)"). It came into this machine as a git snapshot
# (a git dir with no work tree) made by the agents' `fetch github:aquasecurity/kube-bench`, at
# /work/.mirror/aquasecurity+kube-bench/repo; KUBE_BENCH_MIRROR names another git dir holding COMMIT. The first
# build runs `git archive COMMIT` into DIR/src.tar.gz; from then on the tarball is the source, so the mirror is
# needed once. Its Go dependencies come from the Go module proxy (go.sum pins them).
#
# Cached: a stamp of the tarball, the Go version and this script skips the build when nothing changed.
set -euo pipefail

COMMIT=a73ce378418c71c5861e6963753f50dec3badadf
VERSION=v0.15.6-2-ga73ce378 # `git describe --tags COMMIT`: what `kube-bench version` prints
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
mkdir -p "${1:-$ROOT/.cache/kube-bench}"
DIR=$(cd "${1:-$ROOT/.cache/kube-bench}" && pwd)
DEFAULT_MIRROR=/work/.mirror/aquasecurity+kube-bench/repo
MIRROR=${KUBE_BENCH_MIRROR:-$DEFAULT_MIRROR}
TARBALL=$DIR/src.tar.gz

log() { printf '[kube-bench] %s\n' "$*" >&2; }
die() { printf '[kube-bench] error: %s\n' "$*" >&2; exit 1; }
command -v go >/dev/null || die "go is not on PATH"

if [[ ! -s $TARBALL ]]; then
	if [[ ! -d $MIRROR ]]; then
		die "no kube-bench source: neither $TARBALL nor the git dir $MIRROR exists.
  Get github.com/aquasecurity/kube-bench at commit $COMMIT one of these ways:
  - an agent: the fetch tool, source github:aquasecurity/kube-bench (it lands in $DEFAULT_MIRROR);
  - a git clone anywhere: KUBE_BENCH_MIRROR=/path/to/clone/.git $0;
  - a tarball of that commit's tree (no leading directory) at $TARBALL."
	fi
	git --git-dir="$MIRROR" cat-file -e "$COMMIT^{commit}" 2>/dev/null ||
		die "the git dir $MIRROR has no commit $COMMIT (fetch a newer snapshot, or change COMMIT here after checking it)"
	log "source: git archive $COMMIT from $MIRROR -> $TARBALL"
	git --git-dir="$MIRROR" archive --format=tar.gz -o "$TARBALL.tmp" "$COMMIT"
	mv "$TARBALL.tmp" "$TARBALL"
fi

STAMP=$({
	go version
	echo "$COMMIT"
	sha256sum <"$TARBALL"
	sha256sum <"${BASH_SOURCE[0]}"
} | sha256sum | cut -d' ' -f1)
if [[ -f $DIR/.stamp && "$(cat "$DIR/.stamp")" == "$STAMP" && -x $DIR/kube-bench && -f $DIR/cfg/config.yaml ]]; then
	log "up to date in $DIR (stamp ${STAMP:0:12})"
	exit 0
fi
rm -f "$DIR/.stamp"
t0=$(date +%s)
SRC=$DIR/src
rm -rf "$SRC"
mkdir -p "$SRC"
tar -xzf "$TARBALL" -C "$SRC"
[[ -f $SRC/go.mod && -d $SRC/cfg ]] || die "$TARBALL holds no kube-bench tree (go.mod and cfg/ at its top)"
log "go build ($VERSION)"
# -mod=mod: the tree has no vendor/ directory, and go.sum checks what the proxy serves.
(cd "$SRC" && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 GOFLAGS=-mod=mod go build -trimpath \
	-ldflags "-s -w -X github.com/aquasecurity/kube-bench/cmd.KubeBenchVersion=$VERSION" -o "$DIR/kube-bench.tmp" .)
mv "$DIR/kube-bench.tmp" "$DIR/kube-bench"
rm -rf "$DIR/cfg"
cp -r "$SRC/cfg" "$DIR/cfg"
rm -rf "$SRC"
echo "$STAMP" >"$DIR/.stamp"
log "built $DIR/kube-bench and $DIR/cfg in $(($(date +%s) - t0)) s"
