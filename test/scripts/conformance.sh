#!/usr/bin/env bash
# conformance.sh ARTIFACTS: build Kubernetes' conformance suite for the artifacts' version, from the same
# k8s.io/kubernetes module, into ARTIFACTS/conformance (the bundle `kubeforge conformance` runs):
#   bin/e2e.test bin/ginkgo     the test binary of k8s.io/kubernetes/test/e2e and the ginkgo it pins
#   bin/kubectl                 a link to the artifacts' kubectl (the kubectl specs run it)
#   images.txt                  every image the [Conformance] specs pull, with the exact name and tag that
#                               version's test/utils/image/manifest.go expects
#   images.tar                  those images (docker save), built from Go sources and Debian packages:
#                                 agnhost (2.66.1, also as 2.55), kitten, nautilus: agnhost from the module on a
#                                   Debian base with the tools upstream's image has (dig, curl, nc, ip, iperf,
#                                   socat) and /coredns (CoreDNS of the artifacts' pin, built from its module)
#                                 busybox, nonroot, nonewprivs (nnp), sample-apiserver (k8s.io/sample-apiserver)
#                                 on BusyBox 1.37.0 (built from Debian's source tarball); nginx (both tags) and glibc-dns-testing on Debian
#   registry/                   the same images as a CNCF distribution registry's storage (repositories under
#                               e2e-test-images/, as registry.k8s.io names them): a registry started on it
#                               serves them read-only to the cluster as a registry.k8s.io mirror
#   VERSION                     the Kubernetes version
# Needs `make artifacts` (the version, kubectl, the pause and etcd images) and `make registry` (to fill
# registry/). Sources: test/k8s/conformance (go.mod with kubernetes' staging replaces, imports.go listing what
# is built). Cached: a stamp of the inputs skips everything; cold ~15 min on 2 cores, most of it e2e.test.
set -euo pipefail

[[ $# -eq 1 && -n "$1" ]] || { echo "usage: $0 ARTIFACTS" >&2; exit 2; }
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
K8S=$(cd "$HERE/../k8s" && pwd)
MOD=$K8S/conformance
ART=$(cd "$1" && pwd)
DIR=$ART/conformance
REGISTRY_BIN=${KUBEFORGE_REGISTRY:-$HERE/../../.cache/registry-v3.1.2}/registry
log() { printf '[conformance] %s\n' "$*" >&2; }
die() { printf '[conformance] error: %s\n' "$*" >&2; exit 1; }
command -v docker >/dev/null || die "docker is not on PATH (run test/scripts/prereqs.sh)"
[[ -f $ART/VERSION && -x $ART/bin/kubectl ]] || die "$ART holds no artifacts (run make artifacts)"
[[ -x $REGISTRY_BIN ]] || die "no registry at $REGISTRY_BIN (run make registry)"
VERSION=$(cat "$ART/VERSION")
[[ $VERSION == v1.37.2 ]] || die "no conformance recipe for $VERSION (known: v1.37.2; test/k8s/conformance pins the module)"
MINOR=$(echo "$VERSION" | cut -d. -f2)

# The images, as that version's test/utils/image/manifest.go names them (registry.k8s.io/e2e-test-images is its
# PromoterE2eRegistry). pause and etcd are the artifacts' own (kubeadm's pins, the same tags here).
E2E=registry.k8s.io/e2e-test-images
AGNHOST=$E2E/agnhost:2.66.1
AGNHOST_PREV=$E2E/agnhost:2.55
BUSYBOX=$E2E/busybox:1.37.0-2
NGINX=$E2E/nginx:1.27.0-2
NGINX_NEW=$E2E/nginx:1.28.0-2
DNS=$E2E/glibc-dns-testing:2.1.1
KITTEN=$E2E/kitten:1.8
NAUTILUS=$E2E/nautilus:1.8
NONEWPRIVS=$E2E/nonewprivs:1.4
NONROOT=$E2E/nonroot:1.5
APISERVER=$E2E/sample-apiserver:1.29.2
PAUSE=registry.k8s.io/pause:3.10.2
ETCD=registry.k8s.io/etcd:3.7.0-0
IMAGES=("$AGNHOST" "$AGNHOST_PREV" "$BUSYBOX" "$NGINX" "$NGINX_NEW" "$DNS" "$KITTEN" "$NAUTILUS" "$NONEWPRIVS" "$NONROOT" "$APISERVER" "$PAUSE" "$ETCD")
DEBIAN_PACKAGES=bash,ca-certificates,curl,bind9-dnsutils,netcat-openbsd,iproute2,iperf,socat,util-linux,procps,iputils-ping,nginx-light

stamp() {
	{
		go version
		echo "$VERSION"
		(cd "$MOD" && sha256sum go.mod go.sum imports.go)
		sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1
		cat "$ART/.stamp" 2>/dev/null || true
	} | sha256sum | cut -d' ' -f1
}
STAMP=$(stamp)
if [[ -f $DIR/.stamp && "$(cat "$DIR/.stamp")" == "$STAMP" && -x $DIR/bin/e2e.test && -s $DIR/images.tar && -d $DIR/registry ]]; then
	log "up to date in $DIR (stamp ${STAMP:0:12})"
	exit 0
fi
rm -f "$DIR/.stamp"
mkdir -p "$DIR/bin" "$DIR/.build"
BUILD=$DIR/.build
t0=$(date +%s)

# --- binaries -------------------------------------------------------------------------------------------------
LDFLAGS="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	LDFLAGS="$LDFLAGS -X $p.gitVersion=$VERSION -X $p.gitMajor=1 -X $p.gitMinor=$MINOR -X $p.gitTreeState=clean -X $p.buildDate=2026-01-01T00:00:00Z"
done
export CGO_ENABLED=0 GOFLAGS=-mod=readonly
P=${KUBEFORGE_BUILD_PROCS:-2}
log "building e2e.test (k8s.io/kubernetes/test/e2e $VERSION; cold ~10 min on 2 cores)"
(cd "$MOD" && go test -c -p "$P" -trimpath -ldflags "$LDFLAGS" -o "$BUILD/e2e.test" k8s.io/kubernetes/test/e2e) ||
	die "building e2e.test failed (output above)"
log "building ginkgo, agnhost, nnp, sample-apiserver"
(cd "$MOD" && go build -p "$P" -trimpath -ldflags "-s -w" -o "$BUILD/ginkgo" github.com/onsi/ginkgo/v2/ginkgo &&
	go build -p "$P" -trimpath -ldflags "$LDFLAGS" -o "$BUILD/agnhost" k8s.io/kubernetes/test/images/agnhost &&
	go build -p "$P" -trimpath -ldflags "-s -w" -o "$BUILD/nnp" k8s.io/kubernetes/test/images/nonewprivs &&
	go build -p "$P" -trimpath -ldflags "$LDFLAGS" -o "$BUILD/sample-apiserver" k8s.io/sample-apiserver) ||
	die "building the test programs failed (output above)"
# CoreDNS as the artifacts pin it: the module graph of the artifacts' build (test/k8s) already holds it.
(cd "$K8S" && go build -p "$P" -trimpath -ldflags "-s -w" -o "$BUILD/coredns" github.com/coredns/coredns) ||
	die "building coredns failed (output above)"
"$BUILD/e2e.test" --help >/dev/null 2>&1 || die "e2e.test does not run"
log "binaries built in $(($(date +%s) - t0))s"

# --- images ---------------------------------------------------------------------------------------------------
t1=$(date +%s)
export DOCKER_BUILDKIT=0
CTX=$BUILD/images
rm -rf "$CTX"
mkdir -p "$CTX"
build() { # build TAG CONTEXT
	local out
	out=$(docker build -q -t "$1" "$2" 2>&1) || die "docker build $1 failed: $out"
}
# The Debian base: debootstrap with the packages the images need (the mirror node-image.sh uses). Cached on its
# package list: ~1 min cold.
DEBIAN=kubeforge/e2e-debian:$(echo "$DEBIAN_PACKAGES" | sha256sum | cut -c1-12)
if ! docker image inspect "$DEBIAN" >/dev/null 2>&1; then
	MIRROR=${KUBEFORGE_DEBIAN_MIRROR:-$(awk '$1=="deb" && $3=="bookworm" {print $2; exit}' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)}
	if [[ -z $MIRROR ]]; then
		MIRROR=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 | awk '{print $2}')
	fi
	[[ -n $MIRROR ]] || MIRROR=http://deb.debian.org/debian
	log "debootstrap of the Debian base from $MIRROR"
	ROOT=$CTX/debian-root
	debootstrap --variant=minbase --include="$DEBIAN_PACKAGES" bookworm "$ROOT" "$MIRROR" >"$CTX/debootstrap.log" 2>&1 || {
		tail -n 30 "$CTX/debootstrap.log" >&2
		die "debootstrap failed (log above)"
	}
	rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*
	tar -C "$ROOT" -c . | docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$DEBIAN" >/dev/null ||
		die "docker import of the Debian base failed"
	rm -rf "$ROOT"
fi

# busybox: upstream BusyBox 1.37.0 (the version of the image upstream mirrors), from the source tarball Debian's
# archive holds (checked against its sha256 in Debian's Sources), defconfig, static; an applet link each, nothing
# else. Not Debian's busybox-static: its ash drops environment variables whose names are not shell names, and the
# EnvFrom specs need "data-1=value-1" to reach `env` through `sh -c` as upstream's ash passes it. Cached (~1 min).
BB_VERSION=1.37.0
BB_SHA256=3311dff32e746499f4df0d5df04d7eb396382d7e108bb9250e7b519b837043a4
BB=$DIR/.cache/busybox-$BB_VERSION
if [[ ! -x $BB/busybox ]]; then
	MIRROR_SRC=${KUBEFORGE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
	rm -rf "$BB.new"
	mkdir -p "$BB.new"
	log "building BusyBox $BB_VERSION from $MIRROR_SRC's source tarball"
	curl -fsS -o "$BB.new/src.tar.bz2" "$MIRROR_SRC/pool/main/b/busybox/busybox_$BB_VERSION.orig.tar.bz2" ||
		die "download of busybox_$BB_VERSION.orig.tar.bz2 from $MIRROR_SRC failed"
	echo "$BB_SHA256  $BB.new/src.tar.bz2" | sha256sum -c --quiet - || die "busybox_$BB_VERSION.orig.tar.bz2: sha256 mismatch"
	tar -C "$BB.new" -xjf "$BB.new/src.tar.bz2"
	(cd "$BB.new/busybox-$BB_VERSION" && make defconfig >/dev/null &&
		sed -i 's/^# CONFIG_STATIC is not set/CONFIG_STATIC=y/; s/^CONFIG_TC=y/# CONFIG_TC is not set/' .config &&
		make oldconfig </dev/null >/dev/null && make -j"$P" busybox >"$BB.new/build.log" 2>&1) || {
		tail -n 20 "$BB.new/build.log" >&2
		die "building BusyBox failed"
	}
	cp "$BB.new/busybox-$BB_VERSION/busybox" "$BB.new/busybox.bin"
	rm -rf "$BB"
	mkdir -p "$BB"
	mv "$BB.new/busybox.bin" "$BB/busybox"
	rm -rf "$BB.new"
fi
mkdir -p "$CTX/busybox/rootfs/bin" "$CTX/busybox/rootfs/tmp" "$CTX/busybox/rootfs/etc"
cp "$BB/busybox" "$CTX/busybox/rootfs/bin/busybox"
for a in $("$CTX/busybox/rootfs/bin/busybox" --list); do
	[[ $a == busybox ]] || ln -s busybox "$CTX/busybox/rootfs/bin/$a"
done
chmod 1777 "$CTX/busybox/rootfs/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' >"$CTX/busybox/rootfs/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' >"$CTX/busybox/rootfs/etc/group"
cat >"$CTX/busybox/Dockerfile" <<DF
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["sh"]
LABEL io.kubeforge.conformance=$VERSION
DF
build "$BUSYBOX" "$CTX/busybox"

# agnhost: upstream's layout (/agnhost, the porter's test certificate, /coredns, /uploads, the user and group
# the image defines) on the Debian base.
A=$CTX/agnhost
SRC=$(cd "$MOD" && go list -f '{{.Dir}}' k8s.io/kubernetes/test/images/agnhost)
mkdir -p "$A/rootfs/uploads" "$A/rootfs/etc"
cp "$BUILD/agnhost" "$A/rootfs/agnhost"
ln -s agnhost "$A/rootfs/agnhost-2"
cp "$BUILD/coredns" "$A/rootfs/coredns"
cp "$SRC/porter/localhost.crt" "$SRC/porter/localhost.key" "$A/rootfs/"
chmod 0644 "$A/rootfs/localhost.crt" "$A/rootfs/localhost.key"
docker run --rm --network none --entrypoint cat "$DEBIAN" /etc/passwd >"$A/rootfs/etc/passwd"
docker run --rm --network none --entrypoint cat "$DEBIAN" /etc/group >"$A/rootfs/etc/group"
echo 'user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh' >>"$A/rootfs/etc/passwd"
printf 'user-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n' >>"$A/rootfs/etc/group"
cat >"$A/Dockerfile" <<DF
FROM $DEBIAN
COPY rootfs/ /
EXPOSE 80 8080 8081 9376 5000
ENTRYPOINT ["/agnhost"]
CMD ["pause"]
LABEL io.kubeforge.conformance=$VERSION
DF
build "$AGNHOST" "$A"
docker tag "$AGNHOST" "$AGNHOST_PREV"

# kitten and nautilus: agnhost's test-webserver with their pages.
KSRC=$(cd "$MOD" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/test/images
for pair in "kitten:$KITTEN" "nautilus:$NAUTILUS"; do
	name=${pair%%:*} tag=${pair#*:}
	mkdir -p "$CTX/$name"
	cp "$KSRC/$name/html/$name.jpg" "$KSRC/$name/html/data.json" "$CTX/$name/"
	printf 'FROM %s\nCOPY %s.jpg %s.jpg\nCOPY data.json data.json\nCMD ["test-webserver"]\n' "$AGNHOST" "$name" "$name" >"$CTX/$name/Dockerfile"
	build "$tag" "$CTX/$name"
done

# nginx (both tags): Debian's nginx-light, serving /usr/share/nginx/html on port 80 as upstream's image does.
for pair in "1.27:$NGINX" "1.28:$NGINX_NEW"; do
	v=${pair%%:*} tag=${pair#*:}
	d=$CTX/nginx-$v
	mkdir -p "$d/rootfs/usr/share/nginx/html" "$d/rootfs/etc/nginx/sites-enabled"
	printf '<!DOCTYPE html>\n<html><head><title>Welcome to nginx!</title></head>\n<body><h1>Welcome to nginx!</h1></body></html>\n' \
		>"$d/rootfs/usr/share/nginx/html/index.html"
	printf 'server {\n\tlisten 80 default_server;\n\tlisten [::]:80 default_server;\n\troot /usr/share/nginx/html;\n\tindex index.html;\n\tserver_name _;\n}\n' \
		>"$d/rootfs/etc/nginx/sites-enabled/default"
	printf 'FROM %s\nCOPY rootfs/ /\nEXPOSE 80\nSTOPSIGNAL SIGQUIT\nCMD ["nginx", "-g", "daemon off;"]\nLABEL io.kubeforge.conformance.nginx=%s\n' \
		"$DEBIAN" "$v" >"$d/Dockerfile"
	build "$tag" "$d"
done

# glibc-dns-testing: Debian with dnsutils (its upstream is debian:bookworm-slim plus dnsutils).
mkdir -p "$CTX/dns"
printf 'FROM %s\nLABEL io.kubeforge.conformance.dns=%s\n' "$DEBIAN" "$VERSION" >"$CTX/dns/Dockerfile"
build "$DNS" "$CTX/dns"

# nonroot: the base with USER 1234. nonewprivs: nnp, setuid root. sample-apiserver: the program alone.
mkdir -p "$CTX/nonroot" "$CTX/nonewprivs" "$CTX/sample-apiserver"
printf 'FROM %s\nUSER 1234\n' "$BUSYBOX" >"$CTX/nonroot/Dockerfile"
build "$NONROOT" "$CTX/nonroot"
cp "$BUILD/nnp" "$CTX/nonewprivs/nnp"
chmod 4755 "$CTX/nonewprivs/nnp"
# (docker's classic builder drops the setuid bit of a COPY: set it in a RUN, as upstream's Dockerfile does)
printf 'FROM %s\nCOPY nnp /usr/local/bin/nnp\nRUN ["/bin/chmod", "4755", "/usr/local/bin/nnp"]\nCMD ["nnp"]\n' "$BUSYBOX" >"$CTX/nonewprivs/Dockerfile"
build "$NONEWPRIVS" "$CTX/nonewprivs"
cp "$BUILD/sample-apiserver" "$CTX/sample-apiserver/sample-apiserver"
printf 'FROM %s\nCOPY sample-apiserver /sample-apiserver\nENTRYPOINT ["/sample-apiserver"]\n' "$BUSYBOX" >"$CTX/sample-apiserver/Dockerfile"
build "$APISERVER" "$CTX/sample-apiserver"

# pause and etcd: the artifacts' images.
for i in "$PAUSE" "$ETCD"; do
	docker image inspect "$i" >/dev/null 2>&1 || docker load -i "$ART/images/kubernetes-$VERSION.tar" >/dev/null
	docker image inspect "$i" >/dev/null 2>&1 || die "$i is not in the artifacts' images"
done

# Smoke checks: each program runs in its image, as the specs start it.
check() { # check IMAGE ENTRYPOINT ARGS...
	local out
	out=$(docker run --rm --network none --entrypoint "$2" "$1" "${@:3}" 2>&1) || die "$1: '$2 ${*:3}' failed: $out"
}
check "$AGNHOST" /agnhost --help
check "$AGNHOST" /coredns -version
check "$AGNHOST" sh -c 'command -v dig && command -v nslookup && command -v curl && command -v nc && command -v ip'
[[ $(docker run --rm --network none -e data-1=value-1 --entrypoint sh "$BUSYBOX" -c env) == *data-1=value-1* ]] ||
	die "$BUSYBOX: sh drops environment variables named data-1 (the EnvFrom specs need them)"
check "$DNS" dig -v
check "$NGINX" nginx -t
check "$NONEWPRIVS" sh -c 'test -u /usr/local/bin/nnp'
check "$APISERVER" /sample-apiserver --help
[[ $(docker run --rm --network none --entrypoint id "$NONROOT" -u) == 1234 ]] || die "$NONROOT does not run as 1234"
log "images built in $(($(date +%s) - t1))s"

# --- the bundle -----------------------------------------------------------------------------------------------
printf '%s\n' "${IMAGES[@]}" >"$BUILD/images.txt"
docker save "${IMAGES[@]}" >"$BUILD/images.tar"
# The registry's storage: a registry on loopback, filled by docker push (127.0.0.0/8 needs no TLS for docker),
# then stopped. A port from the kernel (the first free one after a random start).
rm -rf "$BUILD/registry"
mkdir -p "$BUILD/registry"
port=$((20000 + RANDOM % 20000))
while (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
cat >"$BUILD/registry.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $BUILD/registry
http:
  addr: 127.0.0.1:$port
YML
"$REGISTRY_BIN" serve "$BUILD/registry.yml" >"$BUILD/registry.log" 2>&1 &
regpid=$!
trap 'kill $regpid 2>/dev/null || true' EXIT
for _ in $(seq 50); do
	curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
	sleep 0.2
done
curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null || { cat "$BUILD/registry.log" >&2; die "the local registry did not start"; }
for i in "${IMAGES[@]}"; do
	local_name=127.0.0.1:$port/${i#registry.k8s.io/}
	docker tag "$i" "$local_name"
	out=$(docker push "$local_name" 2>&1) || die "docker push $local_name failed: $out"
	docker rmi "$local_name" >/dev/null
done
kill $regpid
wait $regpid 2>/dev/null || true
trap - EXIT

for f in e2e.test ginkgo; do mv -f "$BUILD/$f" "$DIR/bin/$f"; done
ln -sf ../../bin/kubectl "$DIR/bin/kubectl"
rm -rf "$DIR/registry"
mv "$BUILD/registry" "$DIR/registry"
mv -f "$BUILD/images.tar" "$DIR/images.tar"
mv -f "$BUILD/images.txt" "$DIR/images.txt"
printf '%s\n' "$VERSION" >"$DIR/VERSION"
rm -rf "$CTX"
printf '%s\n' "$STAMP" >"$DIR/.stamp"
log "conformance bundle $VERSION ready in $DIR ($(($(date +%s) - t0))s; e2e.test $(du -m "$DIR/bin/e2e.test" | cut -f1) MB, images $(du -m "$DIR/images.tar" | cut -f1) MB)"
