#!/usr/bin/env bash
# network.sh DIR [ARTIFACTS_DIR...]: build kubeforge's default pod network (cni.plugin flannel, docs/network.md) from
# the Go modules into DIR, and link its image tarball into each ARTIFACTS_DIR/images/ (kubeforge pushes and imports
# every images/*.tar of the artifacts directory):
#   DIR/bin/flanneld       flannel v0.28.11, static, with the vxlan backend only (see below)
#   DIR/bin/kube-router    kube-router v2.1.0, static; kubeforge runs only its NetworkPolicy firewall
#   DIR/images.tar         docker.io/flannel/flannel:v0.28.11 and docker.io/cloudnativelabs/kube-router:v2.1.0,
#                          two small layers on one shared base (the machine's iptables and Debian's ipset)
#   DIR/VERSIONS           "flannel v0.28.11" and "kube-router v2.1.0"
# Independent of the Kubernetes version: one build serves every artifacts directory.
#
# flannel: the module proxy serves github.com/flannel-io/flannel v0.28.11, but `go install` of it fails: its main
# package imports every backend, and the tencentvpc backend's module is refused (403); the udp backend needs cgo.
# So its module source, as released (checked against the Go checksum database by `go mod download`), is copied
# and main.go's blank imports of the backends are cut to vxlan alone (a sed of the import block, checked after),
# then built with the release's own go.mod and go.sum. No flannel code is kept in this repository.
# kube-router: `go install module@v2.1.0` (the only v2 release the proxy serves), with its own go.mod and go.sum.
# ipset: Debian's ipset and libipset13 (`apt-get download`, unpacked; nothing is installed on this machine).
# Cached: a stamp of this script and the Go version skips everything when the outputs are there (well under a
# second); cold ~2 min (flannel) + ~4 min (kube-router) on 2 cores, a rebuild from the Go build cache seconds.
set -euo pipefail

[[ $# -ge 1 && -n "$1" ]] || { echo "usage: $0 DIR [ARTIFACTS_DIR...]" >&2; exit 2; }
FLANNEL_VERSION=v0.28.11
KUBE_ROUTER_VERSION=v2.1.0
FLANNEL_MOD=github.com/flannel-io/flannel
KUBE_ROUTER_MOD=github.com/cloudnativelabs/kube-router/v2
FLANNEL_IMAGE=docker.io/flannel/flannel:$FLANNEL_VERSION
KUBE_ROUTER_IMAGE=docker.io/cloudnativelabs/kube-router:$KUBE_ROUTER_VERSION
BASE=kubeforge/net-base:$FLANNEL_VERSION-$KUBE_ROUTER_VERSION
TARBALL_NAME=network-flannel-$FLANNEL_VERSION-kube-router-$KUBE_ROUTER_VERSION.tar
log() { printf '[network] %s\n' "$*" >&2; }
die() { printf '[network] error: %s\n' "$*" >&2; exit 1; }
LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib/iptables-rootfs.sh
# shellcheck source=lib/iptables-rootfs.sh
. "$LIB"
command -v go >/dev/null || die "go is not on PATH"
command -v docker >/dev/null || die "docker is not on PATH (run test/scripts/prereqs.sh)"
mkdir -p "$1"
DIR=$(cd "$1" && pwd)
shift

# link_into ARTIFACTS_DIR...: the tarball into each artifacts directory's images/ (a hard link where it can).
link_into() {
	local a
	for a in "$@"; do
		mkdir -p "$a/images"
		# Already this very file (a re-run): nothing to do (mv refuses to move a file onto another link of itself).
		if [[ "$a/images/$TARBALL_NAME" -ef "$DIR/images.tar" ]]; then
			log "up to date in $a/images/$TARBALL_NAME"
			continue
		fi
		rm -f "$a/images/$TARBALL_NAME.tmp"
		ln "$DIR/images.tar" "$a/images/$TARBALL_NAME.tmp" 2>/dev/null || cp "$DIR/images.tar" "$a/images/$TARBALL_NAME.tmp"
		mv -f "$a/images/$TARBALL_NAME.tmp" "$a/images/$TARBALL_NAME"
		log "linked into $a/images/$TARBALL_NAME"
	done
}

STAMP=$({ go version; sha256sum "${BASH_SOURCE[0]}" "$LIB" | cut -d' ' -f1; } | sha256sum | cut -d' ' -f1)
if [[ -f $DIR/.stamp && "$(cat "$DIR/.stamp")" == "$STAMP" && -x $DIR/bin/flanneld && -x $DIR/bin/kube-router && -s $DIR/images.tar ]]; then
	log "up to date in $DIR (stamp ${STAMP:0:12})"
	link_into "$@"
	exit 0
fi
rm -f "$DIR/.stamp"
t0=$(date +%s)
B=$DIR/.build
rm -rf "$B"
mkdir -p "$B/bin" "$DIR/bin"
export CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"

# --- flanneld -------------------------------------------------------------------------------------------------
log "flannel $FLANNEL_VERSION, vxlan backend only (cold: ~2 min)"
src=$(go mod download -json "$FLANNEL_MOD@$FLANNEL_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[[ -n $src && -f $src/main.go ]] || die "go mod download $FLANNEL_MOD@$FLANNEL_VERSION gave no source"
cp -r "$src" "$B/flannel"
chmod -R u+w "$B/flannel"
# Keep `_ ".../pkg/backend/vxlan"`; drop every other blank backend import.
sed -i -E '/^[[:space:]]*_ "github\.com\/flannel-io\/flannel\/pkg\/backend\/[a-z0-9]+"$/{/\/vxlan"$/!d}' "$B/flannel/main.go"
kept=$(grep -cE '^[[:space:]]*_ "github\.com/flannel-io/flannel/pkg/backend/' "$B/flannel/main.go" || true)
grep -qE '^[[:space:]]*_ "github\.com/flannel-io/flannel/pkg/backend/vxlan"$' "$B/flannel/main.go" && [[ $kept == 1 ]] ||
	die "flannel's main.go: expected one backend import (vxlan) after the edit, found $kept: its import block changed"
(cd "$B/flannel" && go build -ldflags "-s -w -X $FLANNEL_MOD/pkg/version.Version=$FLANNEL_VERSION" -o "$B/bin/flanneld" .) ||
	die "building flanneld failed (output above)"
out=$("$B/bin/flanneld" --version 2>&1 || true)
[[ "$out" == *"$FLANNEL_VERSION"* ]] || die "flanneld --version reports: $out"

# --- kube-router ----------------------------------------------------------------------------------------------
log "kube-router $KUBE_ROUTER_VERSION (cold: ~4 min)"
GOBIN=$B/bin go install -ldflags "-s -w -X $KUBE_ROUTER_MOD/pkg/version.Version=$KUBE_ROUTER_VERSION -X $KUBE_ROUTER_MOD/pkg/version.BuildDate=2026-01-01T00:00:00Z" \
	"$KUBE_ROUTER_MOD/cmd/kube-router@$KUBE_ROUTER_VERSION" || die "building kube-router failed (output above)"
out=$("$B/bin/kube-router" --version 2>&1 || true)
[[ "$out" == *"$KUBE_ROUTER_VERSION"* ]] || die "kube-router --version reports: $out"
for b in flanneld kube-router; do
	f=$(file -b "$B/bin/$b" 2>/dev/null || true)
	[[ -z $f || "$f" == *"statically linked"* ]] || die "$b is not static: $f"
done
log "binaries built in $(($(date +%s) - t0))s"

# --- images ---------------------------------------------------------------------------------------------------
t1=$(date +%s)
CTX=$B/images
root=$CTX/base/rootfs
mkdir -p "$root/usr/sbin" "$root/usr/lib/x86_64-linux-gnu" "$root/usr/lib64" "$root/etc" "$root/run" "$root/tmp" "$B/debs"
chmod 1777 "$root/tmp"
ln -s usr/lib "$root/lib"
ln -s usr/lib64 "$root/lib64"
ln -s usr/sbin "$root/sbin"
# ipset from Debian (the machine's own release), unpacked.
(cd "$B/debs" && apt-get download ipset libipset13 >/dev/null 2>&1) || die "apt-get download ipset libipset13 failed"
for d in "$B"/debs/*.deb; do dpkg-deb -x "$d" "$B/debs/root"; done
cp "$B/debs/root/usr/sbin/ipset" "$root/usr/sbin/"
cp -a "$B"/debs/root/usr/lib/x86_64-linux-gnu/libipset.so.* "$root/usr/lib/x86_64-linux-gnu/"
# iptables (nft and legacy, as the artifacts' kube-proxy image has them) and every library it and ipset load
# (libipset from the unpacked package, copied above).
LD_LIBRARY_PATH=$B/debs/root/usr/lib/x86_64-linux-gnu IPTABLES_ROOTFS_SKIP=$B iptables_rootfs "$root" "$B/debs/root/usr/sbin/ipset" ||
	die "the images' iptables layer failed"
cat >"$CTX/base/Dockerfile" <<DF
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL io.kubeforge.network=$FLANNEL_VERSION-$KUBE_ROUTER_VERSION
DF
mkdir -p "$CTX/flannel/opt/bin" "$CTX/kube-router/usr/local/bin"
cp "$B/bin/flanneld" "$CTX/flannel/opt/bin/flanneld"
cp "$B/bin/kube-router" "$CTX/kube-router/usr/local/bin/kube-router"
printf 'FROM %s\nCOPY opt/ /opt/\nENTRYPOINT ["/opt/bin/flanneld"]\n' "$BASE" >"$CTX/flannel/Dockerfile"
printf 'FROM %s\nCOPY usr/ /usr/\nENTRYPOINT ["/usr/local/bin/kube-router"]\n' "$BASE" >"$CTX/kube-router/Dockerfile"
export DOCKER_BUILDKIT=0
old_ids=$(for i in "$BASE" "$FLANNEL_IMAGE" "$KUBE_ROUTER_IMAGE"; do docker images -q "$i"; done | sort -u)
build() { # build TAG CONTEXT
	local out
	out=$(docker build -q -t "$1" "$2" 2>&1) || die "docker build $1 failed: $out"
}
build "$BASE" "$CTX/base"
build "$FLANNEL_IMAGE" "$CTX/flannel"
build "$KUBE_ROUTER_IMAGE" "$CTX/kube-router"
check() { # check IMAGE ENTRYPOINT ARGS... : must succeed
	docker run --rm --network none --entrypoint "$2" "$1" "${@:3}" >/dev/null 2>&1 || die "$1: '$2 ${*:3}' failed"
}
check "$FLANNEL_IMAGE" /opt/bin/flanneld --version
check "$FLANNEL_IMAGE" iptables --version
check "$KUBE_ROUTER_IMAGE" /usr/local/bin/kube-router --version
check "$KUBE_ROUTER_IMAGE" ipset --help
check "$KUBE_ROUTER_IMAGE" iptables-save --version
new_ids=$(for i in "$BASE" "$FLANNEL_IMAGE" "$KUBE_ROUTER_IMAGE"; do docker images -q "$i"; done | sort -u)
for id in $old_ids; do
	grep -qx "$id" <<<"$new_ids" || docker rmi "$id" >/dev/null 2>&1 || true
done
docker save "$FLANNEL_IMAGE" "$KUBE_ROUTER_IMAGE" >"$DIR/images.tar.tmp"
mv "$DIR/images.tar.tmp" "$DIR/images.tar"
mv -f "$B/bin/flanneld" "$B/bin/kube-router" "$DIR/bin/"
printf 'flannel %s\nkube-router %s\n' "$FLANNEL_VERSION" "$KUBE_ROUTER_VERSION" >"$DIR/VERSIONS"
rm -rf "$B"
printf '%s\n' "$STAMP" >"$DIR/.stamp"
log "images done in $(($(date +%s) - t1))s: $(du -m "$DIR/images.tar" | cut -f1) MB"
log "network ready in $DIR ($(($(date +%s) - t0))s)"
link_into "$@"
