#!/usr/bin/env bash
# artifacts.sh DIR [VERSION]: build Kubernetes VERSION (v1.37.2, the default, v1.36.3 or v1.35.4) from Go modules and the
# images that version's kubeadm uses, into the artifacts directory kubeforge takes for offline installs:
#   DIR/bin/kubelet DIR/bin/kubectl DIR/bin/kubeadm   hard links of one static multi-call binary
#   DIR/images/*.tar                                  docker-save tarballs (ctr -n k8s.io images import)
#   DIR/VERSION                                       "v1.37.2"
#   DIR/runtime/                                      containerd 2.x, runc and the CNI plugins for bare hosts
#                                                     (test/scripts/runtime.sh: its layout and versions)
# The sources are test/k8s/main.go and test/k8s/pause; each version has its own go.mod and go.sum (test/k8s for
# v1.37, test/k8s/vMAJOR.MINOR for the others). Versions share the Go module and build caches: what both use is built once.
# Cached: a stamp of the inputs (go.mod, go.sum, sources, this script, Go version) skips everything when unchanged;
# the Go build cache makes a rebuild after small changes quick.
set -euo pipefail

[[ ($# -eq 1 || $# -eq 2) && -n "$1" ]] || { echo "usage: $0 DIR [VERSION]" >&2; exit 2; }
VERSION=${2:-v1.37.2}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
K8S=$(cd "$HERE/../k8s" && pwd)
# Per version, kubeadm's own pins (cmd/kubeadm/app/constants: PauseVersion, DefaultEtcdVersion, CoreDNSVersion),
# and the Go toolchain when the version needs a newer one than the machine's (the go command fetches it through
# the module proxy; only for that version).
TOOLCHAIN=
case $VERSION in
v1.37.2) PAUSE_VERSION=3.10.2 ETCD_VERSION=3.7.0-0 COREDNS_VERSION=v1.14.6 MOD=$K8S ;;
v1.36.3) PAUSE_VERSION=3.10.2 ETCD_VERSION=3.6.8-0 COREDNS_VERSION=v1.14.2 MOD=$K8S/v1.36 ;;
v1.35.4) PAUSE_VERSION=3.10.1 ETCD_VERSION=3.6.6-0 COREDNS_VERSION=v1.13.1 MOD=$K8S/v1.35 ;;
# A preview (inventory allowPreRelease). Its kubelet and kube-proxy import sigs.k8s.io/iptables-wrappers, which the
# module proxy does not serve (403), so only KUBEADM_ONLY=1 builds today (for `make parity-v1.38`).
v1.38.0-beta.0) PAUSE_VERSION=3.10.2 ETCD_VERSION=3.7.1-0 COREDNS_VERSION=v1.15.0 MOD=$K8S/v1.38 TOOLCHAIN=go1.27.3 ;;
*) echo "artifacts.sh: no build recipe for Kubernetes $VERSION (known: v1.37.2, v1.36.3, v1.35.4, v1.38.0-beta.0)" >&2; exit 2 ;;
esac
if [[ -n $TOOLCHAIN ]]; then export GOTOOLCHAIN=$TOOLCHAIN; fi
MINOR=$(echo "$VERSION" | cut -d. -f2)
mkdir -p "$1"
DIR=$(cd "$1" && pwd)
# The version variables every binary carries (without them it reads v0.0.0-master and kubectl cannot parse it).
LDFLAGS="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	LDFLAGS="$LDFLAGS -X $p.gitVersion=$VERSION -X $p.gitMajor=1 -X $p.gitMinor=$MINOR -X $p.gitTreeState=clean -X $p.buildDate=2026-01-01T00:00:00Z"
done
export DOCKER_BUILDKIT=0
REPO=registry.k8s.io
BASE=kubeforge/k8s-base:$VERSION
IMAGES=(
	"$REPO/kube-apiserver:$VERSION"
	"$REPO/kube-controller-manager:$VERSION"
	"$REPO/kube-scheduler:$VERSION"
	"$REPO/kube-proxy:$VERSION"
	"$REPO/etcd:$ETCD_VERSION"
	"$REPO/coredns/coredns:$COREDNS_VERSION"
	"$REPO/pause:$PAUSE_VERSION"
)
TARBALL=$DIR/images/kubernetes-$VERSION.tar

log() { printf '[artifacts] %s\n' "$*" >&2; }
die() { printf '[artifacts] error: %s\n' "$*" >&2; exit 1; }
command -v go >/dev/null || die "go is not on PATH"
# shellcheck source=lib/iptables-rootfs.sh
. "$HERE/lib/iptables-rootfs.sh"

# KUBEADM_ONLY=1: DIR/bin/kubeadm and DIR/VERSION only, what the parity test needs (kubeadm builds where the
# whole set cannot: v1.38.0-beta.0). No images, no runtime, no stamp: kubeadm alone is a short build.
if [[ ${KUBEADM_ONLY:-} == 1 ]]; then
	mkdir -p "$DIR/bin"
	t0=$(date +%s)
	log "building kubeadm $VERSION alone ($(cd "$MOD" && go version))"
	(cd "$MOD" && CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -p "${KUBEFORGE_BUILD_PROCS:-2}" -trimpath -ldflags "$LDFLAGS" \
		-o "$DIR/bin/kubeadm.tmp" k8s.io/kubernetes/cmd/kubeadm) || die "go build of kubeadm failed (output above)"
	got=$("$DIR/bin/kubeadm.tmp" version -o short)
	[[ "$got" == "$VERSION" ]] || die "kubeadm reports version '$got', want $VERSION"
	mv -f "$DIR/bin/kubeadm.tmp" "$DIR/bin/kubeadm"
	printf '%s\n' "$VERSION" >"$DIR/VERSION"
	log "kubeadm $VERSION ready in $DIR/bin ($(($(date +%s) - t0))s)"
	exit 0
fi
command -v docker >/dev/null || die "docker is not on PATH (run test/scripts/prereqs.sh)"

stamp() {
	{
		go version
		echo "$VERSION"
		(cd "$MOD" && sha256sum go.mod go.sum)
		(cd "$K8S" && sha256sum main.go pause/main.go)
		sha256sum "${BASH_SOURCE[0]}" "$HERE/lib/iptables-rootfs.sh" | cut -d' ' -f1
	} | sha256sum | cut -d' ' -f1
}
STAMP=$(stamp)
# The runtime has its own stamp: the same build for every Kubernetes version (the Go cache builds it once).
bash "$HERE/runtime.sh" "$DIR/runtime"
outputs_ok() {
	[[ -f $DIR/.stamp && "$(cat "$DIR/.stamp")" == "$STAMP" ]] || return 1
	for f in bin/kubelet bin/kubectl bin/kubeadm VERSION; do [[ -f $DIR/$f ]] || return 1; done
	[[ -s $TARBALL ]] || return 1
}
if outputs_ok; then
	log "up to date in $DIR (stamp ${STAMP:0:12})"
	exit 0
fi
rm -f "$DIR/.stamp"
mkdir -p "$DIR/bin" "$DIR/images" "$DIR/.build"
t0=$(date +%s)

# --- the multi-call binary ------------------------------------------------------------------------------------
export CGO_ENABLED=0 GOFLAGS=-mod=readonly
# The build tree: the shared sources with this version's go.mod and go.sum.
SRC=$DIR/.build/src
rm -rf "$SRC"
mkdir -p "$SRC/pause"
cp "$MOD/go.mod" "$MOD/go.sum" "$K8S/main.go" "$SRC/"
cp "$K8S/pause/main.go" "$SRC/pause/"
cd "$SRC"
log "downloading modules (first run: ~700 MB into the Go module cache)"
go mod download
total=$(go list -deps . | wc -l)
log "building kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl, kubeadm, etcd, coredns"
log "as one binary: $total packages; a cold build takes ~6-8 min on 2 cores, a warm one seconds"
n=0
last=$(date +%s)
# `go build -v` names each package as it is compiled (cached ones are not named): count them for progress.
if ! go build -p "${KUBEFORGE_BUILD_PROCS:-2}" -v -trimpath -ldflags "$LDFLAGS" -o "$DIR/.build/k8s.new" . 2>&1 |
	while IFS= read -r line; do
		if [[ "$line" == *" "* || "$line" == *:* ]]; then printf '%s\n' "$line" >&2; continue; fi
		n=$((n + 1))
		now=$(date +%s)
		if ((now - last >= 15)); then
			log "compiled $n packages (of at most $total), $((now - t0))s"
			last=$now
		fi
	done
then
	die "go build failed (output above)"
fi
[[ -x $DIR/.build/k8s.new ]] || die "go build wrote no binary"
go build -trimpath -ldflags "-s -w" -o "$DIR/.build/pause" ./pause
mv "$DIR/.build/k8s.new" "$DIR/.build/k8s"
log "binary built in $(($(date +%s) - t0))s: $(du -m "$DIR/.build/k8s" | cut -f1) MB"
got=$("$DIR/.build/k8s" kubectl version --client -o json | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p')
[[ "$got" == "$VERSION" ]] || die "kubectl reports version '$got', want $VERSION"

for b in kubelet kubectl kubeadm; do
	rm -f "$DIR/bin/$b.tmp"
	ln "$DIR/.build/k8s" "$DIR/bin/$b.tmp" 2>/dev/null || cp "$DIR/.build/k8s" "$DIR/bin/$b.tmp"
	mv -f "$DIR/bin/$b.tmp" "$DIR/bin/$b"
done

# --- images ---------------------------------------------------------------------------------------------------
t1=$(date +%s)
CTX=$DIR/.build/images
rm -rf "$CTX"
mkdir -p "$CTX/base/rootfs/usr/local/bin" "$CTX/base/rootfs/tmp" "$CTX/pause" "$CTX/proxy/rootfs"
chmod 1777 "$CTX/base/rootfs/tmp"
ln "$DIR/.build/k8s" "$CTX/base/rootfs/usr/local/bin/k8s" 2>/dev/null || cp "$DIR/.build/k8s" "$CTX/base/rootfs/usr/local/bin/k8s"
# Every program name resolves on PATH (/usr/local/bin) and at / (CoreDNS's image runs /coredns).
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl kubeadm etcd coredns; do
	ln -s k8s "$CTX/base/rootfs/usr/local/bin/$b"
	ln -s usr/local/bin/k8s "$CTX/base/rootfs/$b"
done
cat >"$CTX/base/Dockerfile" <<DF
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL io.kubeforge.artifacts=$VERSION
DF

# kube-proxy (iptables mode) runs iptables-restore and friends: add the machine's iptables and its libraries.
iptables_rootfs "$CTX/proxy/rootfs" || die "the kube-proxy image's iptables layer failed"
cat >"$CTX/proxy/Dockerfile" <<DF
FROM $BASE
COPY rootfs/ /
ENTRYPOINT ["/usr/local/bin/kube-proxy"]
DF
cp "$DIR/.build/pause" "$CTX/pause/pause"
cat >"$CTX/pause/Dockerfile" <<DF
FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
DF

log "building images"
# The images these tags name now: once re-tagged they would stay as dangling layers (~200 MB a build, and a full
# disk makes the harness kubelets evict pods and delete images). Removed below when nothing else uses them.
old_ids=$(for i in "$BASE" "${IMAGES[@]}"; do docker images -q "$i"; done | sort -u)
build() { # build TAG CONTEXT
	local out
	out=$(docker build -q -t "$1" "$2" 2>&1) || die "docker build $1 failed: $out"
}
build "$BASE" "$CTX/base"
oneliner() { # oneliner IMAGE ENTRYPOINT-JSON [CMD-JSON]
	local d=$CTX/${1//[\/:]/_}
	mkdir -p "$d"
	{
		echo "FROM $BASE"
		echo "ENTRYPOINT $2"
		[[ -n "${3:-}" ]] && echo "CMD $3"
	} >"$d/Dockerfile"
	build "$1" "$d"
}
oneliner "$REPO/kube-apiserver:$VERSION" '["/usr/local/bin/kube-apiserver"]'
oneliner "$REPO/kube-controller-manager:$VERSION" '["/usr/local/bin/kube-controller-manager"]'
oneliner "$REPO/kube-scheduler:$VERSION" '["/usr/local/bin/kube-scheduler"]'
oneliner "$REPO/etcd:$ETCD_VERSION" '["/usr/local/bin/etcd"]'
oneliner "$REPO/coredns/coredns:$COREDNS_VERSION" '["/coredns"]'
build "$REPO/kube-proxy:$VERSION" "$CTX/proxy"
build "$REPO/pause:$PAUSE_VERSION" "$CTX/pause"

# Smoke checks: each image answers through the path kubeadm's manifests use.
check() { # check IMAGE ENTRYPOINT ARGS... : must succeed
	docker run --rm --network none --entrypoint "$2" "$1" "${@:3}" >/dev/null 2>&1 || die "$1: '$2 ${*:3}' failed"
}
check "$REPO/kube-apiserver:$VERSION" kube-apiserver --version
check "$REPO/kube-controller-manager:$VERSION" kube-controller-manager --version
check "$REPO/kube-scheduler:$VERSION" kube-scheduler --version
check "$REPO/etcd:$ETCD_VERSION" etcd --version
check "$REPO/coredns/coredns:$COREDNS_VERSION" /coredns -version
check "$REPO/kube-proxy:$VERSION" /usr/local/bin/kube-proxy --help
check "$REPO/kube-proxy:$VERSION" iptables --version
check "$REPO/kube-proxy:$VERSION" iptables-restore --version
check "$REPO/pause:$PAUSE_VERSION" /pause -v

new_ids=$(for i in "$BASE" "${IMAGES[@]}"; do docker images -q "$i"; done | sort -u)
for id in $old_ids; do
	grep -qx "$id" <<<"$new_ids" || docker rmi "$id" >/dev/null 2>&1 || true
done
log "saving ${#IMAGES[@]} images (one shared base layer) to $TARBALL"
docker save "${IMAGES[@]}" >"$TARBALL.tmp"
mv "$TARBALL.tmp" "$TARBALL"
log "images done in $(($(date +%s) - t1))s: $(du -m "$TARBALL" | cut -f1) MB"

printf '%s\n' "$VERSION" >"$DIR/VERSION.tmp"
mv "$DIR/VERSION.tmp" "$DIR/VERSION"
printf '%s\n' "$STAMP" >"$DIR/.stamp"
log "artifacts ready in $DIR ($(($(date +%s) - t0))s)"
