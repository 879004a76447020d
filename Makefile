# kubeforge — build, test, demo. See README.md.
SHELL := /bin/bash
GO ?= go
BIN := bin/kubeforge
# The Kubernetes version `make artifacts` builds (v1.37.2; every version of SUPPORTED_VERSIONS has a recipe) and
# where: .cache/artifacts for the default, .cache/artifacts-VERSION for another. `make harness-up ARTIFACTS=...`
# takes the version from it.
K8S_VERSION ?= v1.37.2
# One release of each minor kubeforge supports (inventory.SupportedKubernetesVersions), oldest first.
SUPPORTED_VERSIONS := v1.35.4 v1.36.3 v1.37.2
artifacts-dir = $(if $(filter v1.37.2,$(1)),$(CURDIR)/.cache/artifacts,$(CURDIR)/.cache/artifacts-$(1))
ARTIFACTS ?= $(call artifacts-dir,$(K8S_VERSION))
# The previous minor, which the upgrade tests start from (`make artifacts-old`).
OLD_VERSION := v1.36.3
ARTIFACTS_OLD ?= $(CURDIR)/.cache/artifacts-$(OLD_VERSION)
# The oldest supported minor, which the chained upgrade starts from (`make artifacts-oldest`; not built by CI).
OLDEST_VERSION := v1.35.4
ARTIFACTS_OLDEST ?= $(CURDIR)/.cache/artifacts-$(OLDEST_VERSION)
HARNESS_DIR ?= $(CURDIR)/.harness

.PHONY: e2e-network all build test unit fuzz-inventory integration parity parity-all parity-v1.38 e2e e2e-version-smoke e2e-v138-smoke e2e-interrupt-matrix e2e-upgrade-matrix e2e-chained-upgrade e2e-kubeadm e2e-rotate-matrix e2e-registry registry conformance-bundle conformance e2e-conformance-subset demo prereqs artifacts artifacts-old artifacts-oldest artifacts-all artifacts-v1.38 node-image harness-up harness-down harness-status bench bench-restore bench-upgrade bench-runtime bench-fleet cis kube-bench clean

all: build

# kubeforge-peer (the artifact server of the hosts that feed their peers, docs/artifacts.md) for both
# architectures first: kubeforge embeds them.
build:
	for arch in amd64 arm64; do CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags "-s -w" \
		-o cmd/kubeforge/peerbin/kubeforge-peer-linux-$$arch ./cmd/kubeforge-peer || exit 1; done
	$(GO) build -trimpath -ldflags "-s -w -X main.version=$$(git describe --always --dirty 2>/dev/null || echo dev)" -o $(BIN) ./cmd/kubeforge

# Everything a fresh Debian machine needs, then every test: unit, integration (real OpenSSH), e2e (real clusters).
test: prereqs build artifacts artifacts-old node-image conformance-bundle unit integration parity e2e

# The unit tests, then 20 s of fuzzing the inventory loader (make fuzz-inventory runs it longer).
unit:
	$(GO) test -race -count=1 ./...
	$(GO) test -run '^$$' -fuzz '^FuzzLoad$$' -fuzztime 20s ./inventory/

# Fuzz the inventory loader (inventory.FuzzLoad) for FUZZTIME; what it finds lands in inventory/testdata/fuzz/FuzzLoad.
FUZZTIME ?= 10m
fuzz-inventory:
	$(GO) test -run '^$$' -fuzz '^FuzzLoad$$' -fuzztime $(FUZZTIME) ./inventory/

integration: prereqs
	$(GO) test -race -count=1 -tags integration ./ssh/... ./cmd/... ./playbooks/... ./tasks/...

# kubeadm as an oracle: kubeadm's own code (the kubeadm of the K8S_VERSION artifacts, `init --dry-run` in a
# harness container) and kubeforge render the same clusters at that version; every field must agree or be in the
# test's allow-list. `make parity K8S_VERSION=v1.35.4` checks another minor against its own kubeadm.
parity: prereqs artifacts node-image
	KUBEFORGE_PARITY_ARTIFACTS=$(ARTIFACTS) $(GO) test -count=1 -tags parity -v ./test/parity/...

# parity for every supported minor, each against its own kubeadm (builds the missing artifacts: ~10 min each
# cold); every version runs, and the target fails if any failed.
parity-all:
	@failed=""; $(foreach v,$(SUPPORTED_VERSIONS),$(MAKE) --no-print-directory parity K8S_VERSION=$(v) ARTIFACTS=$(call artifacts-dir,$(v)) || failed="$$failed $(v)";) \
	if [ -n "$$failed" ]; then echo "parity failed for:$$failed" >&2; exit 1; fi; echo "parity passed for $(SUPPORTED_VERSIONS)"

# With the conformance subset of e2e-conformance-subset (KUBEFORGE_CONFORMANCE=subset).
e2e: prereqs build artifacts artifacts-old node-image registry conformance-bundle
	KUBEFORGE_CONFORMANCE=subset KUBEFORGE_REGISTRY=$(REGISTRY_DIR) KUBEFORGE_ARTIFACTS_OLD=$(ARTIFACTS_OLD) $(GO) test -count=1 -tags e2e -timeout 75m -v ./test/e2e/

# cluster.registries end to end (TestRegistryMirror; instance kfreg on 172.31.215.0/24): a 1+1 cluster made by `up`
# pulls an image that only a real registry has (the distribution registry of `make registry`, TLS from a test CA,
# htpasswd auth) through the mirror kubeforge configured; then wrong credentials (refused, no containerd restart)
# and the registry dropped from the inventory. About 1.5 min with everything built (the first `up` ~45 s).
e2e-registry: prereqs build artifacts node-image registry
	KUBEFORGE_REGISTRY=$(REGISTRY_DIR) KUBEFORGE_ARTIFACTS=$(ARTIFACTS) $(GO) test -count=1 -tags e2e -timeout 40m -v -run '^TestRegistryMirror$$' ./test/e2e/

# Kubernetes' conformance suite for the artifacts' version (test/scripts/conformance.sh): e2e.test, ginkgo and the
# test images, built from the same k8s.io/kubernetes module, into ARTIFACTS/conformance (cold ~15 min, then a stamp
# skips it). `kubeforge conformance` runs it (docs/conformance.md).
conformance-bundle: prereqs artifacts registry
	KUBEFORGE_REGISTRY=$(REGISTRY_DIR) bash test/scripts/conformance.sh $(ARTIFACTS)

# Every [Conformance] spec, offline, on a 1+2 cluster and then on a 3+2 HA cluster made by `kubeforge up`, the images
# through a registry mirror (TestConformance): JUnit and summaries in .cache/conformance-reports/<shape>.
# CONFORMANCE_SHAPE=1cp-2w or 3cp-2w runs one shape. Not part of `make test` (about an hour a shape).
CONFORMANCE_SHAPE ?= full
conformance: prereqs build artifacts node-image registry conformance-bundle
	KUBEFORGE_CONFORMANCE=$(CONFORMANCE_SHAPE) KUBEFORGE_REGISTRY=$(REGISTRY_DIR) KUBEFORGE_ARTIFACTS=$(ARTIFACTS) \
		$(GO) test -count=1 -tags e2e -timeout 4h -v -run '^TestConformance$$' ./test/e2e/

# The subset CI runs: the network, DNS, Services, pods and apps [Conformance] specs on 1+2.
e2e-conformance-subset: prereqs build artifacts node-image registry conformance-bundle
	KUBEFORGE_CONFORMANCE=subset KUBEFORGE_REGISTRY=$(REGISTRY_DIR) KUBEFORGE_ARTIFACTS=$(ARTIFACTS) \
		$(GO) test -count=1 -tags e2e -timeout 60m -v -run '^TestConformance$$' ./test/e2e/

# The preview minor (inventory allowPreRelease; docs/parity.md, "v1.38"), not part of `make test`. Its kubelet and
# kube-proxy need sigs.k8s.io/iptables-wrappers, which the module proxy does not serve: `artifacts-v1.38` builds
# kubeadm alone (Go 1.27.3, fetched by the go command), enough for `parity-v1.38`; `e2e-v138-smoke` needs the
# whole build and fails at its download until the module is served.
PREVIEW_VERSION := v1.38.0-beta.0
artifacts-v1.38: prereqs
	KUBEADM_ONLY=1 bash test/scripts/artifacts.sh $(call artifacts-dir,$(PREVIEW_VERSION)) $(PREVIEW_VERSION)

parity-v1.38: prereqs artifacts-v1.38 node-image
	KUBEFORGE_PARITY_ARTIFACTS=$(call artifacts-dir,$(PREVIEW_VERSION)) $(GO) test -count=1 -tags parity -v ./test/parity/...

e2e-v138-smoke:
	$(MAKE) --no-print-directory e2e-version-smoke K8S_VERSION=$(PREVIEW_VERSION) ARTIFACTS=$(call artifacts-dir,$(PREVIEW_VERSION))

# One 1+1 cluster of K8S_VERSION from its artifacts, nodes Ready (TestVersionSmoke; instance kfvMINOR on
# 172.30.MINOR.0/24): `make e2e-version-smoke K8S_VERSION=v1.35.4`. Not part of `make test`.
e2e-version-smoke: prereqs build artifacts node-image
	KUBEFORGE_SMOKE_ARTIFACTS=$(ARTIFACTS) $(GO) test -count=1 -tags e2e -timeout 25m -v -run '^TestVersionSmoke$$' ./test/e2e/

# Every step boundary of the first `up` (SIGINT and SIGKILL) and the middle of the joins, on 1+2 and 3+1:
# too long for CI (about 1.5 h), which runs a subset. KUBEFORGE_INTERRUPT_SHAPE=1+2 or 3+1 runs one shape.
e2e-interrupt-matrix: prereqs build artifacts node-image
	KUBEFORGE_INTERRUPT_MATRIX=1 $(GO) test -count=1 -tags e2e -timeout 6h -v -run 'TestInterruptedUpConverges' ./test/e2e/

# SIGKILL after every changing step of `upgrade` and inside a control plane's and a worker's upgrade, each on a
# fresh v1.36 1+2 cluster, then a second upgrade: about 35 min, so not in CI (which runs a SIGINT and a SIGKILL case).
# v1.35 -> v1.37 in one `upgrade --via <v1.36 build>` on 1 control plane + 2 workers, killed once (about 15 min).
e2e-chained-upgrade: prereqs build artifacts artifacts-old artifacts-oldest node-image
	KUBEFORGE_ARTIFACTS_OLDEST=$(ARTIFACTS_OLDEST) KUBEFORGE_ARTIFACTS_OLD=$(ARTIFACTS_OLD) $(GO) test -count=1 -tags e2e -timeout 50m -v -run 'TestChainedUpgrade' ./test/e2e/

# kubeadm's own day-2 commands on a kubeforge cluster (docs/parity.md): v1.36 1+1 made by up, upgraded to v1.37 with
# kubeadm upgrade plan/apply/node, then up and kubeadm reset against kubeforge reset (about 15 min; not in CI).
e2e-kubeadm: prereqs build artifacts artifacts-old node-image
	KUBEFORGE_KUBEADM_DAY2=1 KUBEFORGE_ARTIFACTS_OLD=$(ARTIFACTS_OLD) $(GO) test -count=1 -tags e2e -timeout 45m -v -run 'TestKubeadmDayTwo' ./test/e2e/

e2e-upgrade-matrix: prereqs build artifacts artifacts-old node-image
	KUBEFORGE_UPGRADE_MATRIX=1 KUBEFORGE_ARTIFACTS_OLD=$(ARTIFACTS_OLD) $(GO) test -count=1 -tags e2e -timeout 4h -v -run 'TestInterruptedUpgradeConverges' ./test/e2e/

# `secrets rotate-key` killed with SIGKILL after each of its steps and in the middle of a control plane's roll,
# on a 2+1 cluster, each run again to completion, then a backup from before a rotation restored; and encryption
# turned on for a running 1+1 cluster by an up killed after the promotion: about 60 min, so not in CI (which runs
# the kill after the promotion).
e2e-rotate-matrix: prereqs build artifacts node-image
	KUBEFORGE_ROTATE_MATRIX=1 $(GO) test -count=1 -tags e2e -timeout 3h -v -run 'TestKeyRotationConverges|TestEncryptionTurnedOnForARunningCluster' ./test/e2e/

prereqs:
	bash test/scripts/prereqs.sh

# The default pod network's images (flannel and kube-router, test/scripts/network.sh) are built once into
# NETWORK_DIR and linked into every artifacts directory's images/.
NETWORK_DIR ?= $(CURDIR)/.cache/network-flannel-v0.28.11
artifacts: prereqs
	bash test/scripts/artifacts.sh $(ARTIFACTS) $(K8S_VERSION)
	bash test/scripts/network.sh $(NETWORK_DIR) $(ARTIFACTS)

# The v1.36 build the upgrade tests start from (its own directory, the same layout; shares the Go caches).
artifacts-old: prereqs
	bash test/scripts/artifacts.sh $(ARTIFACTS_OLD) $(OLD_VERSION)
	bash test/scripts/network.sh $(NETWORK_DIR) $(ARTIFACTS_OLD)

# The v1.35 build the chained upgrade starts from.
artifacts-oldest: prereqs
	bash test/scripts/artifacts.sh $(ARTIFACTS_OLDEST) $(OLDEST_VERSION)
	bash test/scripts/network.sh $(NETWORK_DIR) $(ARTIFACTS_OLDEST)

# The artifacts of every supported minor (each its own directory; they share the Go caches).
artifacts-all: prereqs
	$(foreach v,$(SUPPORTED_VERSIONS),bash test/scripts/artifacts.sh $(call artifacts-dir,$(v)) $(v) &&) true
	bash test/scripts/network.sh $(NETWORK_DIR) $(foreach v,$(SUPPORTED_VERSIONS),$(call artifacts-dir,$(v)))

# The CNCF distribution registry (cmd/registry v3.1.2, static) from its Go module, the mirror of the e2e tests
# (test/scripts/registry.sh; cold ~2-4 min, then a stamp skips it).
REGISTRY_DIR ?= $(CURDIR)/.cache/registry-v3.1.2
registry:
	bash test/scripts/registry.sh $(REGISTRY_DIR)

node-image: prereqs
	bash test/scripts/node-image.sh

harness-up: node-image
	$(GO) run ./test/harness up 3 --artifacts $(ARTIFACTS) --dir $(HARNESS_DIR)

harness-down:
	$(GO) run ./test/harness down --dir $(HARNESS_DIR)

harness-status:
	$(GO) run ./test/harness status --dir $(HARNESS_DIR)

# demo.sh runs every stage itself (each is cached) and still shows the harness when ./cmd/kubeforge is unfinished.
demo:
	ARTIFACTS=$(ARTIFACTS) HARNESS_DIR=$(HARNESS_DIR) GO=$(GO) bash test/scripts/demo.sh

bench: build artifacts node-image
	bash test/scripts/bench.sh

# upgrade v1.36.3 -> v1.37.2 times on real 1+2 and 3+1 harness clusters (docs/benchmarks.md, "Upgrade")
bench-upgrade: build artifacts artifacts-old node-image
	ARTIFACTS=$(ARTIFACTS) ARTIFACTS_OLD=$(ARTIFACTS_OLD) bash test/scripts/bench-upgrade.sh

# What installing containerd, runc and the CNI plugins adds to `up` 1+2: bare hosts against hosts with a runtime.
bench-runtime: build artifacts node-image
	ARTIFACTS=$(ARTIFACTS) bash test/scripts/bench-runtime.sh

# backup and restore times against etcd's database size, on a real 1+1 harness cluster (docs/benchmarks.md, P4)
bench-restore: build artifacts node-image
	bash test/scripts/bench-restore.sh

# kubeforge's preflight (connect + facts + preflight) against a SIMULATED fleet of 100, 300 and 1000 hosts
# (test/fleetsim, one process on loopback): wall time and peak RSS of the orchestrator, not of Kubernetes.
bench-fleet: build
	GO=$(GO) KUBEFORGE=$(CURDIR)/$(BIN) bash test/scripts/bench-fleet.sh

# kube-bench (the CIS Kubernetes Benchmark runner) built from source into .cache/kube-bench (test/scripts/kube-bench.sh).
kube-bench:
	bash test/scripts/kube-bench.sh

# The CIS Kubernetes Benchmark (cis-1.12) on a fresh 1+1 harness cluster (instance kfcis, 172.31.222.0/24, removed
# afterwards), or on an existing cluster: `make cis CIS_INVENTORY=path`. A table per section and every automated
# FAIL and WARN; raw JSON in .cache/kube-bench/results/ (test/README.md, "make cis").
CIS_INVENTORY ?=
cis: $(if $(CIS_INVENTORY),,build artifacts node-image)
	CIS_INVENTORY=$(CIS_INVENTORY) ARTIFACTS=$(ARTIFACTS) GO=$(GO) bash test/scripts/cis.sh

clean:
	rm -rf bin

# The default pod network on two routed subnets (TestDefaultNetworkCrossesSubnets, issue 28; instance kfnet on
# 172.31.200.0/24 and 172.31.201.0/24): pod to pod both ways, Service, DNS and NodePort from every node,
# NetworkPolicy deny and allow, a node restart; then the bridge's limit and the refusal to move a bridge cluster;
# then docs/network.md's procedure that moves a bridge cluster (kfnmv, 172.31.204.0/24) to flannel.
e2e-network: prereqs build artifacts node-image
	KUBEFORGE_ARTIFACTS=$(ARTIFACTS) $(GO) test -count=1 -tags e2e -timeout 45m -v -run '^(TestDefaultNetworkCrossesSubnets|TestBuiltinBridgeNetworkCannotCrossSubnets|TestBridgeClusterMovesToFlannelByTheProcedure)$$' ./test/e2e/
