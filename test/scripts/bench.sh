#!/usr/bin/env bash
# bench.sh: kubeforge's benchmarks (issue 7). `make bench` runs it; docs/benchmarks.md says what it measures.
#
# P1 fan-out: N light sshd hosts (containers of the node image family, docker network kubeforge-bench,
#   172.31.240.0/24, label kubeforge.bench=1). For each N the same work by kubeforge (test/bench/fanout, through
#   kubeforge's runner and ssh package) and by Ansible (test/bench/ansible): connect, facts, upload a 100 MB
#   binary + two small files, one command; cold push (files absent) and warm re-run (all skipped by checksum).
#   Runs are interleaved (kubeforge, Ansible, then Ansible, kubeforge, ...), every figure is the median of
#   BENCH_REPS runs with min and max. Each run is measured by test/bench/measure (wall, CPU of the whole process
#   tree including ssh ControlPersist masters, peak RSS). Also: raw scp throughput vs kubeforge's SFTP upload to
#   one host, and a CPU profile of kubeforge at the largest N.
# P2 cost of `up` (BENCH_UP=1): see the end of this file.
#
# Environment:
#   BENCH_QUICK=1          N in {1,5}, 1 repetition, 20 MB payload (a smoke run, minutes)
#   BENCH_NS="1 5 10 20 30" host counts        BENCH_REPS=3 repetitions
#   BENCH_SIZE_MB=100      payload size         BENCH_DIR=.cache/bench work dir
#   BENCH_DOC=docs/benchmarks.md                 BENCH_KEEP=1: leave the containers running
#   BENCH_UP=1             also run P2 (needs `kubeforge up`, the harness and the artifacts)
#   BENCH_P1=0             skip P1 and reuse the last run's fan-out results (with BENCH_UP=1: P2 alone)
set -euo pipefail

# Everything is in functions, read whole before anything runs (editing this file during a run is safe).
main() {

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
GO=${GO:-go}
if [[ "${BENCH_QUICK:-0}" == 1 ]]; then
	NS=${BENCH_NS:-"1 5"}
	REPS=${BENCH_REPS:-1}
	SIZE_MB=${BENCH_SIZE_MB:-20}
else
	NS=${BENCH_NS:-"1 5 10 20 30"}
	REPS=${BENCH_REPS:-3}
	SIZE_MB=${BENCH_SIZE_MB:-100}
fi
WORK=${BENCH_DIR:-$ROOT/.cache/bench}
DOC=${BENCH_DOC:-$ROOT/docs/benchmarks.md}
PLOT=${DOC%.md}-fanout.png
NET=kubeforge-bench
SUBNET_PREFIX=172.31.240
LABEL=kubeforge.bench=1
IMAGE=kubeforge-bench-sshd:bookworm
BASE_IMAGE=${KUBEFORGE_NODE_IMAGE:-kubeforge-node:bookworm}
DEST=/opt/bench

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

MAXN=0
for n in $NS; do
	[[ "$n" =~ ^[0-9]+$ && "$n" -ge 1 && "$n" -le 200 ]] || die "BENCH_NS: $n is not a host count in 1..200"
	((n > MAXN)) && MAXN=$n
done
[[ "$REPS" =~ ^[0-9]+$ && "$REPS" -ge 1 ]] || die "BENCH_REPS: $REPS is not a positive number"
[[ "$SIZE_MB" =~ ^[0-9]+$ && "$SIZE_MB" -ge 1 ]] || die "BENCH_SIZE_MB: $SIZE_MB is not a positive number"

docker info >/dev/null 2>&1 || bash test/scripts/prereqs.sh
command -v jq >/dev/null || die "jq is missing (make prereqs)"
if ! command -v ansible-playbook >/dev/null; then
	log "installing Debian's ansible-core"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ansible-core >/dev/null ||
		die "apt-get install ansible-core failed"
fi
docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 || bash test/scripts/node-image.sh

# --- what we make, and its removal -------------------------------------------------------------------------------
cleanup() {
	local ids
	ids=$(docker ps -aq --filter "label=$LABEL" 2>/dev/null || true)
	[[ -n "$ids" ]] && docker rm -f $ids >/dev/null 2>&1 || true
	docker network ls -q --filter "label=$LABEL" | xargs -r docker network rm >/dev/null 2>&1 || true
}
if [[ "${BENCH_KEEP:-0}" != 1 ]]; then trap cleanup EXIT; fi
cleanup

mkdir -p "$WORK"
RUN=$WORK/run
RESULTS=$RUN/results.jsonl
if [[ "${BENCH_P1:-1}" == 0 ]]; then
	# BENCH_P1=0: keep the last fan-out results, run only what follows (P2 with BENCH_UP=1) and the report.
	[[ -s "$RESULTS" ]] || die "BENCH_P1=0 needs the results of an earlier run in $RESULTS"
	"$GO" build -o "$WORK/report" ./test/bench/report
else
rm -rf "$RUN"
mkdir -p "$RUN/src" "$RUN/out"
: >"$RESULTS"

log "building the bench programs"
"$GO" build -o "$WORK/fanout" ./test/bench/fanout
# The hosts that serve their peers run kubeforge-peer, as kubeforge (make build) embeds it.
CGO_ENABLED=0 "$GO" build -trimpath -ldflags "-s -w" -o "$WORK/kubeforge-peer" ./cmd/kubeforge-peer
"$GO" build -o "$WORK/measure" ./test/bench/measure
"$GO" build -o "$WORK/report" ./test/bench/report

# --- the host image: node image + python3, only sshd -------------------------------------------------------------
RECIPE=$( (cat test/bench/image/Dockerfile test/bench/image/entrypoint.sh; docker image inspect -f '{{.Id}}' "$BASE_IMAGE") | sha256sum | cut -c1-16)
if [[ "$(docker image inspect -f '{{index .Config.Labels "kubeforge.bench.recipe"}}' "$IMAGE" 2>/dev/null || true)" != "$RECIPE" ]]; then
	log "building $IMAGE"
	DOCKER_BUILDKIT=0 docker build -q --build-arg BASE="$BASE_IMAGE" --label "kubeforge.bench.recipe=$RECIPE" \
		-t "$IMAGE" test/bench/image >/dev/null || die "docker build $IMAGE failed"
fi

# --- payload and key ---------------------------------------------------------------------------------------------
if [[ ! -f "$WORK/payload-$SIZE_MB.bin" ]]; then
	head -c "${SIZE_MB}M" /dev/urandom >"$WORK/payload-$SIZE_MB.bin.tmp"
	mv "$WORK/payload-$SIZE_MB.bin.tmp" "$WORK/payload-$SIZE_MB.bin"
fi
ln -f "$WORK/payload-$SIZE_MB.bin" "$RUN/src/payload.bin"
printf 'kind: bench\nsmall: 1\n' >"$RUN/src/small1.conf"
head -c 3000 /dev/urandom | base64 >"$RUN/src/small2.conf"
ssh-keygen -q -t ed25519 -N '' -C kubeforge-bench -f "$RUN/id_ed25519"
KNOWN=$RUN/known_hosts

# --- hosts -------------------------------------------------------------------------------------------------------
log "starting $MAXN hosts on $NET ($SUBNET_PREFIX.0/24)"
docker network create --subnet "$SUBNET_PREFIX.0/24" --label "$LABEL" "$NET" >/dev/null
BRIDGE=br-$(docker network inspect -f '{{.Id}}' "$NET" | cut -c1-12)
[[ -r /sys/class/net/$BRIDGE/statistics/tx_bytes ]] || die "no bridge $BRIDGE for $NET"
addr() { echo "$SUBNET_PREFIX.$((10 + $1))"; }
for i in $(seq 1 "$MAXN"); do
	docker run -d --name "kfbench-node$i" --hostname "bench$i" --network "$NET" --ip "$(addr "$i")" \
		--label "$LABEL" --tmpfs "$DEST:size=$((SIZE_MB * 2 + 16))m" \
		-e BENCH_AUTHORIZED_KEY="$(cat "$RUN/id_ed25519.pub")" "$IMAGE" >/dev/null
done
: >"$KNOWN"
for i in $(seq 1 "$MAXN"); do
	for t in $(seq 1 100); do
		docker exec "kfbench-node$i" sh -c 'test -s /etc/ssh/ssh_host_ecdsa_key.pub && test -e /run/sshd.pid' 2>/dev/null && break
		sleep 0.1
	done
	# The host keys read from the container itself (not scanned over the network): checks stay strict.
	docker exec "kfbench-node$i" sh -c 'cat /etc/ssh/ssh_host_ed25519_key.pub /etc/ssh/ssh_host_ecdsa_key.pub' |
		awk -v a="$(addr "$i")" '{print a, $1, $2}' >>"$KNOWN"
done
SSHOPTS=(-o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$KNOWN" -i "$RUN/id_ed25519")
for i in $(seq 1 "$MAXN"); do
	for t in $(seq 1 50); do
		ssh "${SSHOPTS[@]}" "root@$(addr "$i")" true 2>/dev/null && break
		((t == 50)) && die "cannot log in to $(addr "$i")"
		sleep 0.2
	done
done

# --- inventories -------------------------------------------------------------------------------------------------
for n in $NS; do
	{
		printf 'apiVersion: kubeforge.io/v1alpha1\nkind: Cluster\ncluster:\n  name: bench\n  kubernetesVersion: v1.37.2\n'
		printf 'ssh:\n  user: root\n  identityFiles:\n    - %s\n  knownHosts:\n    - %s\nhosts:\n' "$RUN/id_ed25519" "$KNOWN"
		for i in $(seq 1 "$n"); do
			printf '  - name: bench%s\n    address: %s\n    roles:\n      - %s\n' "$i" "$(addr "$i")" \
				"$([[ $i == 1 ]] && echo control-plane || echo worker)"
		done
	} >"$RUN/inventory-$n.yaml"
	{
		for i in $(seq 1 "$n"); do printf 'bench%s ansible_host=%s\n' "$i" "$(addr "$i")"; done
		printf '\n[all:vars]\nansible_user=root\nansible_ssh_private_key_file=%s\n' "$RUN/id_ed25519"
		printf "ansible_ssh_common_args='-o UserKnownHostsFile=%s'\n" "$KNOWN"
	} >"$RUN/hosts-$n.ini"
done

wipe() { # wipe N: remove the pushed files from the first N hosts (outside the measurement)
	local i
	for i in $(seq 1 "$1"); do docker exec "kfbench-node$i" sh -c "rm -rf $DEST/* $DEST/.[!.]* /var/lib/kubeforge" & done
	wait
}

record() { # record TOOL MODE N REP MEASURE_JSON [TOOL_JSON]
	local extra=${6:-}
	[[ -n "$extra" && -s "$extra" ]] || extra=/dev/null
	jq -c -n --arg tool "$1" --arg mode "$2" --argjson n "$3" --argjson rep "$4" \
		--slurpfile m "$5" --slurpfile t "$extra" --argjson wire "$((WIRE1 - WIRE0))" \
		'{kind: "run", tool: $tool, mode: $mode, n: $n, rep: $rep, measure: $m[0], detail: ($t[0] // null), wire_bytes: $wire}' >>"$RESULTS"
}

# The bytes this machine sent onto the bench network: the bridge's transmit counter counts what the host sends to
# the containers, not what they send each other (that is switched between their ports). BRIDGE is set above.
wire() { cat "/sys/class/net/$BRIDGE/statistics/tx_bytes"; }

run_kubeforge() { # MODE N REP
	local mode=$1 n=$2 rep=$3 expect=0 out=$RUN/out/kf-$2-$1-$3
	[[ $mode == cold ]] && expect=$((3 * n))
	WIRE0=$(wire)
	"$WORK/measure" -o "$out.measure" -- "$WORK/fanout" -i "$RUN/inventory-$n.yaml" -src "$RUN/src" -dest "$DEST" \
		-concurrency "$n" -fanout "${BENCH_FANOUT:-4}" -peer-binary "$WORK/kubeforge-peer" -expect-changed "$expect" -state-dir "$RUN/state" >"$out.json" 2>"$out.log" ||
		die "kubeforge $mode N=$n failed: $(tail -n 5 "$out.log")"
	WIRE1=$(wire)
	record kubeforge "$mode" "$n" "$rep" "$out.measure" "$out.json"
	log "  kubeforge $mode N=$n: $(jq -r '"\(.wall_s|.*100|round/100)s wall, \(.user_s+.sys_s|.*100|round/100)s cpu, \(.max_rss_mb|round) MB"' "$out.measure")"
}

run_ansible() { # MODE N REP
	local mode=$1 n=$2 rep=$3 out=$RUN/out/an-$2-$1-$3 cp want
	cp=$(mktemp -d "$RUN/cp.XXXXXX") # a fresh control socket dir: every run starts with no connection, as kubeforge does
	WIRE0=$(wire)
	ANSIBLE_CONFIG=$ROOT/test/bench/ansible/ansible.cfg ANSIBLE_SSH_CONTROL_PATH_DIR=$cp ANSIBLE_LOCAL_TEMP=$RUN/ansible-tmp \
		ANSIBLE_HOME=$RUN/ansible-home \
		"$WORK/measure" -o "$out.measure" -- ansible-playbook -i "$RUN/hosts-$n.ini" -f "$n" -e "bench_src=$RUN/src" \
		test/bench/ansible/fanout.yml >"$out.log" 2>&1 || die "ansible $mode N=$n failed: $(tail -n 20 "$out.log")"
	WIRE1=$(wire)
	rm -rf "$cp"
	# The recap must show every host ok, the copy task changed on a cold run and nothing changed on a warm one.
	want=0
	[[ $mode == cold ]] && want=1
	local bad
	bad=$(awk -v w="$want" '/PLAY RECAP/{r=1;next} r && /ok=/ {
		for (i=1;i<=NF;i++){split($i,kv,"="); v[kv[1]]=kv[2]}
		if (v["changed"]!=w || v["failed"]!=0 || v["unreachable"]!=0) print $1 }' "$out.log")
	local hosts
	hosts=$(awk '/PLAY RECAP/{r=1;next} r && /ok=/' "$out.log" | wc -l)
	[[ -z "$bad" && "$hosts" == "$n" ]] || die "ansible $mode N=$n: unexpected recap for ${bad:-some hosts} ($hosts hosts) (see $out.log)"
	record ansible "$mode" "$n" "$rep" "$out.measure"
	log "  ansible   $mode N=$n: $(jq -r '"\(.wall_s|.*100|round/100)s wall, \(.user_s+.sys_s|.*100|round/100)s cpu, \(.max_rss_mb|round) MB max proc, \(.tree_pss_mb|round) MB tree PSS"' "$out.measure")"
}

# --- P1: fan-out, interleaved ------------------------------------------------------------------------------------
T0=$(date +%s)
log "fan-out: N in {$NS}, $REPS repetitions, ${SIZE_MB} MB payload"
idx=0
for rep in $(seq 1 "$REPS"); do
	for n in $NS; do
		if (((rep + idx) % 2)); then order="kubeforge ansible"; else order="ansible kubeforge"; fi
		idx=$((idx + 1))
		for tool in $order; do
			wipe "$n"
			"run_$tool" cold "$n" "$rep"
			"run_$tool" warm "$n" "$rep"
		done
	done
done

# --- raw scp vs kubeforge's SFTP upload, one host ----------------------------------------------------------------
log "scp vs kubeforge SFTP, one host, ${SIZE_MB} MB"
SCP_REPS=$((REPS < 3 ? 3 : REPS))
for rep in $(seq 1 "$SCP_REPS"); do
	wipe 1
	# scp of a small file first: its time (connection, authentication, session) is taken off the payload's.
	"$WORK/measure" -o "$RUN/out/scp-small-$rep.measure" -- scp -q "${SSHOPTS[@]}" "$RUN/src/small1.conf" \
		"root@$(addr 1):$DEST/scp.conf" 2>>"$RUN/out/scp.log" || die "scp failed"
	"$WORK/measure" -o "$RUN/out/scp-$rep.measure" -- scp -q "${SSHOPTS[@]}" "$RUN/src/payload.bin" \
		"root@$(addr 1):$DEST/scp.bin" 2>>"$RUN/out/scp.log" || die "scp failed"
	jq -c --argjson rep "$rep" --slurpfile small "$RUN/out/scp-small-$rep.measure" \
		'{kind: "scp", rep: $rep, measure: ., small: $small[0]}' "$RUN/out/scp-$rep.measure" >>"$RESULTS"
	wipe 1
	"$WORK/fanout" -i "$RUN/inventory-1.yaml" -src "$RUN/src" -dest "$DEST" -expect-changed 3 -state-dir "$RUN/state" \
		>"$RUN/out/sftp-$rep.json" 2>>"$RUN/out/sftp.log" || die "kubeforge upload failed"
	jq -c --argjson rep "$rep" '{kind: "sftp", rep: $rep, detail: .}' "$RUN/out/sftp-$rep.json" >>"$RESULTS"
done
CIPHER=$(ssh -v "${SSHOPTS[@]}" "root@$(addr 1)" true 2>&1 | awk '/kex: client->server cipher/{print $5; exit}')

# --- profile: kubeforge at the largest N, cold -------------------------------------------------------------------
log "CPU profile of kubeforge, N=$MAXN cold"
wipe "$MAXN"
"$WORK/fanout" -i "$RUN/inventory-$MAXN.yaml" -src "$RUN/src" -dest "$DEST" -expect-changed $((3 * MAXN)) -peer-binary "$WORK/kubeforge-peer" \
	-cpuprofile "$RUN/cpu.pprof" -state-dir "$RUN/state" >"$RUN/out/profile.json" 2>>"$RUN/out/profile.log" ||
	die "profiled run failed"
"$GO" tool pprof -top -nodecount=22 "$WORK/fanout" "$RUN/cpu.pprof" 2>/dev/null | sed -n '1,30p' >"$RUN/profile-top.txt" || true
"$GO" tool pprof -top -cum -nodecount=30 "$WORK/fanout" "$RUN/cpu.pprof" 2>/dev/null | sed -n '1,40p' >"$RUN/profile-cum.txt" || true
T1=$(date +%s)

# --- the machine -------------------------------------------------------------------------------------------------
jq -c -n --arg date "$(date -u +%Y-%m-%dT%H:%MZ)" --arg cpu "$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)" \
	--arg cores "$(nproc)" --arg mem "$(awk '/MemTotal/{printf "%.0f GB", $2/1048576}' /proc/meminfo)" \
	--arg kernel "$(uname -r)" --arg os "$(. /etc/os-release; echo "$PRETTY_NAME")" \
	--arg go "$("$GO" env GOVERSION)" --arg ansible "$(ansible --version 2>/dev/null | sed -n 1p)" \
	--arg openssh "$(ssh -V 2>&1)" --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" --arg cipher "$CIPHER" \
	--arg ns "$NS" --argjson reps "$REPS" --argjson size "$SIZE_MB" --argjson secs $((T1 - T0)) \
	--arg quick "${BENCH_QUICK:-0}" \
	'{kind: "meta", date: $date, cpu: $cpu, cores: $cores, mem: $mem, kernel: $kernel, os: $os, go: $go,
	  ansible: $ansible, openssh: $openssh, load: $load, cipher: $cipher, ns: $ns, reps: $reps,
	  size_mb: $size, seconds: $secs, quick: $quick}' >>"$RESULTS"

fi # BENCH_P1

# --- P2: the cost of `up` (BENCH_UP=1) ---------------------------------------------------------------------------
if [[ "${BENCH_UP:-0}" == 1 ]]; then
	bench_up "$RUN/up" || log "P2 failed: see $RUN/up"
fi

"$WORK/report" -results "$RESULTS" -profile "$RUN/profile-top.txt" -profile-cum "$RUN/profile-cum.txt" \
	-up "$RUN/up/up.md" -doc "$DOC" -plot "$PLOT"
log "wrote $DOC and $PLOT (raw results: $RESULTS)"
}

# --- P2: the cost of `up` (BENCH_UP=1) -----------------------------------------------------------------------------
# A harness of 15 systemd nodes (instance kfbup, 172.31.241.0/24): node1 control plane + node2-3 workers for `up`,
# node4 for `scale` +1, node5-7 for `scale` +3, node11-15 for `scale` +5 (each onto the 1+2 cluster, removed after),
# node8-10 for kubeadm init/join driven by an ssh shell loop. The artifacts are pushed to every node first (`up --only node/prepare,artifacts`, not timed).
# Writes DIR/up.md.
bench_up() {
	local dir=$1 H ART=${ARTIFACTS:-$ROOT/.cache/artifacts} KF=$ROOT/bin/kubeforge t0 t1
	mkdir -p "$dir"
	H=$dir/harness
	local md=$dir/up.md
	if ! "$KF" up --help >/dev/null 2>&1; then
		echo "Not measured: \`bin/kubeforge up\` does not exist yet." >"$md"
		return 1
	fi
	[[ -x "$ART/bin/kubeadm" ]] || { echo "Not measured: no artifacts in $ART (make artifacts)." >"$md"; return 1; }
	UP_HARNESS=$H # global: the EXIT trap runs after this function's locals are gone
	up_down() { "$GO" run ./test/harness down --dir "$UP_HARNESS" --name-prefix kfbup >/dev/null 2>&1 || true; }
	trap 'up_down; cleanup' EXIT
	up_down # fresh hosts: a harness left by an interrupted run would already hold a cluster
	rm -rf "$dir/state"
	log "P2: harness of 15 nodes (kfbup, 172.31.241.0/24)"
	# Hosts with Debian's containerd: kubeadm needs a runtime there, and both tools must do the same work.
	"$GO" run ./test/harness up 15 --name-prefix kfbup --subnet 172.31.241.0/24 --dir "$H" --artifacts "$ART" --image kubeforge-node:bookworm-containerd \
		>"$dir/harness.log" 2>&1 || { echo "Not measured: harness up failed (see $dir/harness.log)." >"$md"; return 1; }
	local inv=$H/inventory.yaml
	subset() { # subset OUT NAME...: the harness inventory with only the named hosts
		local out=$1
		shift
		awk -v keep=" $* " '
			/^hosts:/ {print; h=1; next}
			!h {print; next}
			/^  - name:/ {k = index(keep, " " $3 " ") > 0}
			k {print}' "$inv" >"$out"
	}
	subset "$dir/all.yaml" node1 node2 node3 node4 node5 node6 node7 node8 node9 node10 node11 node12 node13 node14 node15
	subset "$dir/base.yaml" node1 node2 node3
	subset "$dir/plus1.yaml" node1 node2 node3 node4
	subset "$dir/plus3.yaml" node1 node2 node3 node5 node6 node7
	subset "$dir/plus5.yaml" node1 node2 node3 node11 node12 node13 node14 node15
	subset "$dir/kubeadm.yaml" node8 node9 node10
	# node8 is a worker in the harness inventory; kubeforge pushes kubeadm only to control planes: make it one.
	sed -i '/- name: node8/,/- name:/ s/- worker/- control-plane/' "$dir/kubeadm.yaml"
	local sd=$dir/state
	log "P2: artifacts onto every node (not timed)"
	"$KF" up -i "$dir/all.yaml" --state-dir "$sd/prep" --only node/prepare,artifacts >"$dir/prep.log" 2>&1 ||
		{ echo "Not measured: pushing the artifacts failed (see $dir/prep.log)." >"$md"; return 1; }
	"$KF" up -i "$dir/kubeadm.yaml" --state-dir "$sd/prep2" --only node/prepare,artifacts >>"$dir/prep.log" 2>&1 || true
	local SSHH=(ssh -F "$H/ssh_config" -o BatchMode=yes)

	# The floor, measured on the hosts while `up` runs: kubelet start (systemd's monotonic timestamp) to the API
	# server's /readyz on node1, and each worker's kubelet start to its Node object.
	"${SSHH[@]}" node1 'rm -f /tmp/floor; nohup sh -c '"'"'until [ -f /etc/kubernetes/admin.conf ] && kubectl --kubeconfig /etc/kubernetes/admin.conf get --raw /readyz >/dev/null 2>&1; do sleep 0.2; done; cut -d" " -f1 /proc/uptime >/tmp/floor'"'"' >/dev/null 2>&1 &' || true
	log "P2: kubeforge up, 1 control plane + 2 workers"
	t0=$(date +%s.%N)
	"$KF" up -i "$dir/base.yaml" --state-dir "$sd/kf" --output json >"$dir/up1.jsonl" 2>"$dir/up1.err" ||
		{ echo "Not measured: \`kubeforge up\` failed: $(tail -n 3 "$dir/up1.err")" >"$md"; return 1; }
	t1=$(date +%s.%N)
	local up1 floor_api floor_nodes=0 ks ready created
	up1=$(echo "$t1 - $t0" | bc)
	ks=$("${SSHH[@]}" node1 'systemctl show -p ExecMainStartTimestampMonotonic --value kubelet')
	ready=$("${SSHH[@]}" node1 'cat /tmp/floor 2>/dev/null')
	floor_api=$(echo "$ready - $ks / 1000000" | bc -l)
	for w in node2 node3; do
		# The node turning Ready (API server clock, seconds) against the kubelet's start (same kernel clock:
		# containers). kubeforge creates the Node object itself (with its pod CIDR) before the kubelet starts, so
		# the Node's creation says nothing; Ready is the kubelet's own registration plus TLS bootstrap plus CNI.
		created=$("${SSHH[@]}" node1 "kubectl --kubeconfig /etc/kubernetes/admin.conf get node $w -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].lastTransitionTime}'")
		ks=$("${SSHH[@]}" "$w" 'echo $(( $(date +%s) - $(cut -d. -f1 /proc/uptime) + $(systemctl show -p ExecMainStartTimestampMonotonic --value kubelet) / 1000000 ))')
		local d=$(($(date -d "$created" +%s) - ks))
		((d > floor_nodes)) && floor_nodes=$d
		# What the worker's kubelet logged from its start to Ready, for reading the floor (not parsed).
		"${SSHH[@]}" "$w" 'journalctl -u kubelet -o short-precise --no-pager' >"$dir/kubelet-$w.log" 2>&1 || true
	done
	log "P2: second up (converged)"
	t0=$(date +%s.%N)
	"$KF" up -i "$dir/base.yaml" --state-dir "$sd/kf" --output json >"$dir/up2.jsonl" 2>"$dir/up2.err" || true
	t1=$(date +%s.%N)
	local up2 changed2
	up2=$(echo "$t1 - $t0" | bc)
	# stdout holds the JSON events, then the summary table: read the events only.
	changed2=$(jq -R 'fromjson? | select(.type=="host-end" and .result=="changed")' "$dir/up2.jsonl" | jq -s length)
	# Each scale starts from the same 1+2 cluster: the hosts it added are removed again (`scale --remove`, not
	# timed) before the next one, so +1, +3 and +5 differ by k alone, not by the size of the cluster they join.
	log "P2: scale +1, +3, +5, each onto the 1+2 cluster"
	local s1 s3 s5 hc1 hc3 hc5 mc1 mc3 mc5 k h0 m0
	for k in 1 3 5; do
		local added
		added=$(awk '/^  - name:/ {print $3}' "$dir/plus$k.yaml" | grep -vxE 'node[123]' | tr '\n' ' ')
		h0=$(cpu_hosts kfbup) m0=$(cpu_machine)
		t0=$(date +%s.%N)
		"$KF" scale -i "$dir/plus$k.yaml" --state-dir "$sd/kf" --output json >"$dir/scale$k.jsonl" 2>"$dir/scale$k.err" || true
		t1=$(date +%s.%N)
		printf -v "s$k" %s "$(echo "$t1 - $t0" | bc)"
		# Where the CPU went: the 15 hosts' containers (cgroup accounting) and the whole machine (/proc/stat).
		printf -v "hc$k" %.1f "$(echo "($(cpu_hosts kfbup) - $h0) / 1000000000" | bc -l)"
		printf -v "mc$k" %.1f "$(echo "($(cpu_machine) - $m0) / $(getconf CLK_TCK)" | bc -l)"
		# --remove takes the hosts to remove by name, comma-separated.
		# shellcheck disable=SC2086
		"$KF" scale -i "$dir/plus$k.yaml" --state-dir "$sd/kf" --remove "$(echo $added | tr ' ' ',')" >"$dir/remove$k.log" 2>&1 ||
			log "P2: removing $added after scale +$k failed (see $dir/remove$k.log)"
	done

	log "P2: kubeadm init/join over ssh (node8 + node9, node10)"
	local cfg=$dir/kubeadm-config.yaml a8
	a8=$(awk '/- name: node8/{f=1} f && /address:/{print $2; exit}' "$inv")
	cat >"$cfg" <<-YAML
	apiVersion: kubeadm.k8s.io/v1beta4
	kind: InitConfiguration
	localAPIEndpoint: {advertiseAddress: $a8}
	nodeRegistration: {name: node8}
	---
	apiVersion: kubeadm.k8s.io/v1beta4
	kind: ClusterConfiguration
	kubernetesVersion: v1.37.2
	networking: {podSubnet: 10.244.0.0/16, serviceSubnet: 10.96.0.0/12}
	---
	apiVersion: kubelet.config.k8s.io/v1beta1
	kind: KubeletConfiguration
	cgroupDriver: systemd
	failCgroupV1: false
	resolvConf: /etc/kubeforge/resolv.conf
	YAML
	local unit drop n
	unit=$(sed -n '/^const kubeletUnit = `/,/^`/p' manifests/kubelet.go | sed '1s/.*`//;$d')
	drop=$(sed -n '/^const kubeletDropIn = `/,/^`/p' manifests/kubelet.go | sed '1s/.*`//;$d')
	for n in node9 node10; do # kubeforge pushed kubeadm to node8 only (a control plane): the workers need it too
		if cmp -s "$ART/bin/kubelet" "$ART/bin/kubeadm"; then # one multi-call binary: a link named kubeadm
			"${SSHH[@]}" "$n" "ln -f /usr/bin/kubelet /usr/bin/kubeadm"
		else
			scp -q -F "$H/ssh_config" "$ART/bin/kubeadm" "$n:/usr/bin/kubeadm"
		fi
	done
	for n in node8 node9 node10; do # what the kubelet and kubeadm packages would have installed (not timed)
		"${SSHH[@]}" "$n" "mkdir -p /usr/lib/systemd/system/kubelet.service.d && cat >/usr/lib/systemd/system/kubelet.service <<'U'
$unit
U
cat >/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf <<'U'
$drop
U
systemctl daemon-reload && systemctl enable -q kubelet" || true
	done
	scp -q -F "$H/ssh_config" "$cfg" node8:/root/kubeadm.yaml
	t0=$(date +%s.%N)
	local ok=1
	"${SSHH[@]}" node8 'kubeadm init --config /root/kubeadm.yaml --ignore-preflight-errors=all' >"$dir/kubeadm-init.log" 2>&1 || ok=0
	local join
	join=$("${SSHH[@]}" node8 'kubeadm token create --print-join-command' 2>>"$dir/kubeadm-init.log") || ok=0
	for n in node9 node10; do
		"${SSHH[@]}" "$n" "$join --ignore-preflight-errors=all --node-name $n" >"$dir/kubeadm-join-$n.log" 2>&1 &
	done
	wait || ok=0
	for _ in $(seq 1 300); do
		[[ $("${SSHH[@]}" node8 'kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes --no-headers 2>/dev/null | wc -l') == 3 ]] && break
		sleep 0.5
	done
	t1=$(date +%s.%N)
	local ka
	ka=$(echo "$t1 - $t0" | bc)
	((ok)) || ka="failed (see $dir/kubeadm-*.log)"

	{
		echo "Measured $(date -u +%Y-%m-%dT%H:%MZ) on a 15-node harness (1 control plane + 2 workers for \`up\`; artifacts already on the hosts; each \`scale\` joins that 1+2 cluster, the hosts it added removed before the next)."
		echo
		echo "| what | s |"
		echo "|---|---:|"
		echo "| \`kubeforge up\` 1+2, wall | $up1 |"
		echo "| floor: node1 kubelet start → /readyz | $(printf %.1f "$floor_api") |"
		echo "| floor: worker kubelet start → Node Ready (max of 2, 1 s resolution) | $floor_nodes |"
		echo "| kubeadm init + token + 2 × kubeadm join over ssh, until 3 Nodes exist | $ka |"
		echo "| second \`up\` (converged), wall; host-steps reported changed: $changed2 | $up2 |"
		echo "| \`scale\` +1 worker | $s1 |"
		echo "| \`scale\` +3 workers | $s3 |"
		echo "| \`scale\` +5 workers | $s5 |"
		echo "| \`scale\` +5 ÷ +1 (goal ≤ 1.3) | $(echo "scale=2; $s5 / $s1" | bc) |"
		echo
		echo "CPU during each \`scale\` (CPU-seconds; the machine has $(nproc) cores, so busy ÷ $(nproc) is the wall time"
		echo "the work needs even with no waiting at all):"
		echo
		echo "| | +1 | +3 | +5 |"
		echo "|---|---:|---:|---:|"
		echo "| wall | $s1 | $s3 | $s5 |"
		echo "| the 15 hosts (containers' cgroups) | $hc1 | $hc3 | $hc5 |"
		echo "| whole machine busy (hosts + kubeforge + dockerd + kernel) | $mc1 | $mc3 | $mc5 |"
		echo "| busy ÷ $(nproc) cores | $(echo "scale=1; $mc1 / $(nproc)" | bc) | $(echo "scale=1; $mc3 / $(nproc)" | bc) | $(echo "scale=1; $mc5 / $(nproc)" | bc) |"
		echo
		echo "\`scale\` per step (wall s; steps under 0.05 s in all three left out):"
		echo
		echo "| step | +1 | +3 | +5 |"
		echo "|---|---:|---:|---:|"
		scale_steps "$dir/scale1.jsonl" "$dir/scale3.jsonl" "$dir/scale5.jsonl"
		echo
		echo "\`kubeforge up\` per step (wall s):"
		echo
		echo "| step | s |"
		echo "|---|---:|"
		jq -R -r 'fromjson? | select(.type=="step-end") | "| \(.step) | \(.durationMs/1000*100|round/100) |"' "$dir/up1.jsonl"
	} >"$md"
	log "P2 done: $md"
}

# cpu_hosts PREFIX: CPU nanoseconds used so far by the running containers named PREFIX* (cgroup v1 cpuacct, or v2).
cpu_hosts() {
	local id s=0 u
	for id in $(docker ps -q --no-trunc --filter "name=^$1"); do
		if [[ -r /sys/fs/cgroup/cpuacct/docker/$id/cpuacct.usage ]]; then
			u=$(cat "/sys/fs/cgroup/cpuacct/docker/$id/cpuacct.usage")
		else
			u=$(awk '$1 == "usage_usec" {print $2 * 1000}' "/sys/fs/cgroup/system.slice/docker-$id.scope/cpu.stat" 2>/dev/null)
		fi
		s=$((s + ${u:-0}))
	done
	echo "$s"
}

# cpu_machine: clock ticks the whole machine has spent busy (user, nice, system, irq, softirq; /proc/stat).
cpu_machine() { awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8; exit}' /proc/stat; }

# scale_steps F1 F3 F5: the step-end durations of three `--output json` runs side by side, in the playbook's order.
scale_steps() {
	jq -R -n -r '
		[inputs | (fromjson? // empty) | select(.type == "step-end") + {f: input_filename}] as $e
		| ($e | map(select(.f == $ARGS.positional[2]) | .step)) as $order
		| $order[] as $s
		| [$ARGS.positional[] as $f | $e | map(select(.f == $f and .step == $s)) | .[0].durationMs
			| if . == null then "-" else (. / 1000 * 100 | round / 100 | tostring) end] as $v
		| select([$v[] | tonumber? // 0] | max >= 0.05)
		| "| \($s) | \($v[0]) | \($v[1]) | \($v[2]) |"' "$@" --args "$@"
}

main "$@"; exit $?
