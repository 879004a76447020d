package tasks

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"github.com/kubeforge/kubeforge/manifests"
	"github.com/kubeforge/kubeforge/ssh"
	"strconv"
	"strings"
	"time"
)

// Facts is what kubeforge knows about a host, gathered in one command.
type Facts struct {
	OS, OSVersion, OSName string
	Arch, Kernel          string
	Hostname              string
	MachineID             string
	ProductUUID           string
	MACs                  []string
	IPs                   []string
	CgroupV2              bool
	SwapOn                bool
	MemoryMB              int
	CPUs                  int
	ClockOffset           time.Duration // host clock minus workstation clock
	// ClockUncertainty bounds ClockOffset's error: half the time the command
	// that read the host's clock took (a loaded host or link stretches it).
	ClockUncertainty time.Duration
	Listening        map[int]bool // TCP ports in LISTEN state
	IPForward        bool
	CRISocket        bool   // the runtime's socket exists
	CRIReady         bool   // the CRI plugin answers
	RuntimeVersion   string // containerd --version
	// RuntimeMarker is the first line of the marker kubeforge writes when it
	// installs the runtime ("" when it did not install this host's runtime).
	RuntimeMarker string
	// RuntimeReplaced is the runtime kubeforge's replaced, as its marker records.
	RuntimeReplaced string
	// RuntimePending: an install wrote containerd's files and has not seen it
	// answer since (a run cut short): containerd must restart.
	RuntimePending bool
	// CNIPlugins are the plugins in /opt/cni/bin.
	CNIPlugins map[string]bool
	// RuntimeSandbox is the sandbox (pause) image the runtime's CRI is
	// configured with; SandboxPresent says the runtime has that image.
	RuntimeSandbox string
	SandboxPresent bool
	// RegistryConfigPath is the registry config_path of a runtime kubeforge
	// did not install ("" when it has none; not read for kubeforge's own).
	RegistryConfigPath string
	// RegistryMirrors: that runtime's CRI config has the deprecated
	// registry.mirrors tables instead (containerd then reads no hosts files).
	RegistryMirrors bool
	// RegistryFiles are the files of cluster.registries an earlier run wrote
	// (the marker's list).
	RegistryFiles []string
	// LinkMTU is the MTU of the link that holds each IPv4 address.
	LinkMTU map[string]int
	// PodRoutes: the bridge network's routes script is on the host (a
	// cluster made with cni.plugin bridge).
	PodRoutes bool
	// VXLAN: the kernel has VXLAN (loaded, built in, or a module to load).
	VXLAN bool
	// CapSysResource: CAP_SYS_RESOURCE is in PID 1's bounding set. Without it
	// (some VMs and containers) runc cannot lower oom_score_adj, and containerd
	// must be told (restrict_oom_score_adj).
	CapSysResource bool
	// Resolved: systemd-resolved is active, so /etc/resolv.conf names its
	// 127.0.0.53 stub, which pods cannot use.
	Resolved bool
	HasCp    bool // cp is on PATH (the kubelet runs it for some volume types; kubeadm checks it)
	// EtcdDirUsed: etcd's data dir (/var/lib/etcd or the inventory's
	// data-dir) exists and is not empty.
	EtcdDirUsed    bool
	KubeletVersion string // empty when absent
	KubeletActive  bool
	KubeletConf    bool   // /etc/kubernetes/kubelet.conf exists: the host is a node already
	StaticPods     bool   // /etc/kubernetes/manifests holds kubeforge's control-plane pods
	EtcdData       bool   // <etcd data dir>/member exists: this host holds an etcd member's data
	HeldPods       bool   // a restore holds the control-plane manifests aside (kubeforge-restore-held)
	APIProxyUnit   bool   // the node-local API proxy's unit is installed
	RestoreMarker  string // /var/lib/kubeforge/restore.json: a restore under way
	// TrustStores are the host's CA trust-store directories among those
	// kubeadm mounts into the API server and controller manager.
	TrustStores []string
	// EtcdInitialCluster and EtcdInitialState are the flags of the etcd manifest
	// on the host: inert once the member has data, so they are kept as found.
	EtcdInitialCluster, EtcdInitialState string
	// KubeletServer is the API server URL in /etc/kubernetes/kubelet.conf.
	KubeletServer string
	// KubeletIdentity is the subject CN of the kubelet's client certificate
	// ("system:node:<name>"); its key is never read.
	KubeletIdentity string
	// KubeletInputs fingerprints the kubelet's inputs as they are on the host;
	// KubeletStarted is the fingerprint recorded when kubeforge last started it.
	KubeletInputs, KubeletStarted string
	ResolvConf                    bool // the kubelet's resolvConf (cluster.kubelet.resolvConf) is readable
	UID                           int
	// Disk is the filesystem of each directory a run writes to (diskDirs and
	// etcd's data dir), measured at its nearest existing ancestor.
	Disk map[string]DiskFree
}

// factsScript prints "key<TAB>value" lines; it only reads. $1 is the CRI
// socket, $2 the kubelet's resolvConf, $3 the command that fingerprints the
// kubelet's inputs, $4 etcd's data dir; $4 and the rest are the directories
// whose free space is measured.
var factsScript = `set +e
. /etc/os-release 2>/dev/null
printf 'os\t%s\nosversion\t%s\nosname\t%s\n' "$ID" "$VERSION_ID" "$PRETTY_NAME"
printf 'arch\t%s\nkernel\t%s\nhostname\t%s\n' "$(uname -m)" "$(uname -r)" "$(hostname)"
printf 'machineid\t%s\n' "$(cat /etc/machine-id 2>/dev/null)"
printf 'productuuid\t%s\n' "$(cat /sys/class/dmi/id/product_uuid 2>/dev/null)"
# MACs of the physical NICs; on a host with none (a VM with virtio counts as physical; a container does not),
# the interface of the default route. Bridges, veths and tunnels are left out: they repeat across hosts by design.
dev=$(ip -o route show default 2>/dev/null | awk '{for (i=1;i<NF;i++) if ($i=="dev") {print $(i+1); exit}}')
for f in /sys/class/net/*; do n=${f##*/}
  case "$(readlink -f "$f")" in */virtual/*) [ "$n" = "$dev" ] || continue ;; esac
  printf 'mac\t%s %s\n' "$n" "$(cat "$f/address" 2>/dev/null)"
done
ip -o -4 addr show 2>/dev/null | awk '{print "ip\t" $4}'
ip -o -4 addr show 2>/dev/null | while read -r _ d _ a _; do printf 'ipmtu\t%s %s\n' "${a%/*}" "$(cat "/sys/class/net/${d%@*}/mtu" 2>/dev/null)"; done
printf 'podroutes\t%s\n' "$(test -f ` + routesPath + ` && echo yes)"
printf 'vxlan\t%s\n' "$({ [ -d /sys/module/vxlan ] || modinfo vxlan >/dev/null 2>&1 || grep -qs /vxlan.ko "/lib/modules/$(uname -r)/modules.builtin"; } && echo yes)"
printf 'cgroupfs\t%s\n' "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)"
printf 'swaps\t%s\n' "$(tail -n +2 /proc/swaps 2>/dev/null | wc -l)"
printf 'memkb\t%s\n' "$(awk '/^MemTotal:/{print $2}' /proc/meminfo)"
printf 'cpus\t%s\n' "$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)"
printf 'ipforward\t%s\n' "$(cat /proc/sys/net/ipv4/ip_forward 2>/dev/null)"
` + listeningPortsCmd + ` | while read -r p; do printf 'listen\t%s\n' "$p"; done
printf 'crisocket\t%s\n' "$(test -S "$1" && echo yes)"
printf 'criready\t%s\n' "$(test -S "$1" && command -v ctr >/dev/null && ctr --address "$1" plugins ls 2>/dev/null | awk '$2=="io.containerd.grpc.v1.cri" || $1=="io.containerd.grpc.v1" && $2=="cri" {print $NF}' | head -1)"
printf 'runtime\t%s\n' "$(containerd --version 2>/dev/null)"
printf 'runtimemarker\t%s\n' "$(head -n1 ` + runtimeMarkerPath + ` 2>/dev/null)"
printf 'runtimereplaced\t%s\n' "$(sed -n 's/^# replaced: //p' ` + runtimeMarkerPath + ` 2>/dev/null | head -n1)"
printf 'runtimepending\t%s\n' "$(test -e ` + runtimePendingPath + ` && echo yes)"
for p in ` + cniBinDir + `/*; do [ -f "$p" ] && printf 'cniplugin\t%s\n' "${p##*/}"; done
# containerd 1.x dumps sandbox_image = "...", 2.x sandbox = '...'.
# (Read only for a runtime kubeforge did not install: the dump takes a few hundred ms.)
# Its registry config_path too: where the hosts files of cluster.registries go.
[ -f ` + runtimeMarkerPath + ` ] || { dump=$(containerd config dump 2>/dev/null)
  sb=$(printf '%s\n' "$dump" | sed -n "s/^ *\(sandbox_image\|sandbox\) *= *[\"']\(.*\)[\"'] *$/\2/p" | head -n1)
  # The CRI plugin's registry section only (1.x grpc.v1.cri, 2.x cri.v1.images): the transfer plugin has one too.
  rp=$(printf '%s\n' "$dump" | awk -F"[\"']" '/^ *\[/ {s = ($0 ~ /cri.*\.registry\]/)} s && /^ *config_path *=/ {print $2; exit}')
  mr=$(printf '%s\n' "$dump" | grep -q 'registry\.mirrors\.' && echo yes); }
printf 'sandbox\t%s\nregistrydir\t%s\nregistrymirrors\t%s\n' "$sb" "$rp" "$mr"
[ ! -r ` + registriesMarkerPath + ` ] || while IFS= read -r p; do [ -z "$p" ] || printf 'registryfile\t%s\n' "$p"; done < ` + registriesMarkerPath + `
[ -z "$sb" ] || printf 'sandboxpresent\t%s\n' "$(ctr --address "$1" -n k8s.io images ls -q 2>/dev/null | grep -Fxq "$sb" && echo yes)"
printf 'capbnd\t%s\n' "$(awk '/^CapBnd:/ {print $2}' /proc/1/status 2>/dev/null)"
printf 'resolved\t%s\n' "$(systemctl is-active systemd-resolved 2>/dev/null)"
printf 'cp\t%s\n' "$(command -v cp)"
printf 'etcddir\t%s\n' "$(ls -A "$4" 2>/dev/null | head -n1)"
# The kubelet's --version (the binary is large: ~0.4 s to start) as recorded at its last start, while the binary is
# the one recorded (size, ctime, inode: any write or rename over it changes them); else asked of the binary.
kv=; kk=$(stat -c '%s %.9Z %i' /usr/bin/kubelet 2>/dev/null); case "$kk" in *Z*) kk=;; esac
[ -z "$kk" ] || [ ! -r ` + kubeletVersionPath + ` ] || { { IFS= read -r ck; IFS= read -r cv; } < ` + kubeletVersionPath + `; [ "$ck" = "$kk" ] && kv=$cv; }
[ -n "$kv" ] || [ ! -e /usr/bin/kubelet ] || kv=$(/usr/bin/kubelet --version 2>/dev/null)
printf 'kubelet\t%s\n' "$kv"
printf 'kubeletactive\t%s\n' "$(systemctl is-active kubelet 2>/dev/null)"
printf 'kubeletconf\t%s\n' "$(test -f /etc/kubernetes/kubelet.conf && echo yes)"
printf 'staticpods\t%s\n' "$(test -f /etc/kubernetes/manifests/kube-apiserver.yaml && echo yes)"
printf 'uid\t%s\n' "$(id -u)"
printf 'etcddata\t%s\n' "$(test -d "$4/member" && echo yes)"
printf 'apiproxyunit\t%s\n' "$(test -f ` + manifests.APIProxyUnitPath + ` && echo yes)"
printf 'heldpods\t%s\n' "$(ls ` + heldManifests + `/*.yaml >/dev/null 2>&1 && echo yes)"
printf 'restore\t%s\n' "$( (tr -d '\n' < ` + restoreMarkerPath + `) 2>/dev/null)"
for d in ` + strings.Join(manifests.TrustStorePaths, " ") + `; do [ -d "$d" ] && printf 'truststore\t%s\n' "$d"; done
m=/etc/kubernetes/manifests/etcd.yaml
if [ -f $m ]; then
  printf 'etcdinitialcluster\t%s\n' "$(sed -n 's/^ *- --initial-cluster=//p' $m | head -1)"
  printf 'etcdinitialstate\t%s\n' "$(sed -n 's/^ *- --initial-cluster-state=//p' $m | head -1)"
fi
k=/etc/kubernetes/kubelet.conf
if [ -f $k ]; then
  printf 'kubeletserver\t%s\n' "$(awk '$1=="server:" {print $2; exit}' $k)"
  # Only the certificate block: the kubelet's key never leaves the host.
  c=$(awk '$1=="client-certificate-data:" {print $2; exit}' $k)
  p=$(awk '$1=="client-certificate:" {print $2; exit}' $k)
  [ -n "$c" ] || [ ! -r "$p" ] || c=$(sed -n '/BEGIN CERTIFICATE/,/END CERTIFICATE/p' "$p" | base64 | tr -d '\n')
  printf 'kubeletcert\t%s\n' "$c"
fi
printf 'kubeletinputs\t%s\n' "$(eval "$3")"
printf 'kubeletstarted\t%s\n' "$(cat ` + kubeletStampPath + ` 2>/dev/null)"
[ -z "$2" ] || printf 'resolvconf\t%s\n' "$(test -r "$2" && echo yes)"
shift 3
` + diskScript + `
printf 'clock\t%s\n' "$(date +%s.%N)"
`

// GatherFacts reads the host's facts in one command and stores them in h.Facts.
func GatherFacts(ctx context.Context, env *Env, h *Host) error {
	sock := strings.TrimPrefix(env.Inv.Cluster.ContainerRuntimeEndpoint, "unix://")
	before := time.Now()
	resolv := env.Inv.Cluster.Kubelet.ResolvConf
	cmd := "sh -s -- " + ssh.Quote(sock) + " " + ssh.Quote(resolv) + " " + ssh.Quote(kubeletFingerprint(h))
	for _, d := range append([]string{manifests.EtcdDataDirOf(env.Inv)}, diskDirs...) {
		cmd += " " + ssh.Quote(d)
	}
	out, err := h.Client.Run(ctx, cmd+" <<'KUBEFORGE_FACTS'\n"+factsScript+"KUBEFORGE_FACTS")
	after := time.Now()
	if err != nil {
		return fmt.Errorf("gather facts: %w", err)
	}
	f, err := parseFacts(out, before.Add(after.Sub(before)/2))
	if err != nil {
		return fmt.Errorf("gather facts: %w", err)
	}
	f.ClockUncertainty = after.Sub(before) / 2
	h.Facts = f
	h.Log.Debug("facts", "os", f.OSName, "kernel", f.Kernel, "arch", f.Arch, "cgroupv2", f.CgroupV2,
		"runtime", f.RuntimeVersion, "kubelet", f.KubeletVersion)
	return nil
}

func parseFacts(out string, mid time.Time) (*Facts, error) {
	f := &Facts{Listening: map[int]bool{}, CNIPlugins: map[string]bool{}, LinkMTU: map[string]int{}}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "\t")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "os":
			f.OS = v
		case "osversion":
			f.OSVersion = v
		case "osname":
			f.OSName = v
		case "arch":
			f.Arch = v
		case "kernel":
			f.Kernel = v
		case "hostname":
			f.Hostname = v
		case "machineid":
			f.MachineID = v
		case "productuuid":
			f.ProductUUID = v
		case "mac":
			if _, mac, ok := strings.Cut(v, " "); ok && mac != "" && mac != "00:00:00:00:00:00" {
				f.MACs = append(f.MACs, mac)
			}
		case "ip":
			f.IPs = append(f.IPs, v)
		case "ipmtu":
			if ip, mtu, ok := strings.Cut(v, " "); ok {
				if n, err := strconv.Atoi(mtu); err == nil {
					f.LinkMTU[ip] = n
				}
			}
		case "podroutes":
			f.PodRoutes = v == "yes"
		case "vxlan":
			f.VXLAN = v == "yes"
		case "cgroupfs":
			f.CgroupV2 = v == "cgroup2fs"
		case "swaps":
			n, _ := strconv.Atoi(v)
			f.SwapOn = n > 0
		case "memkb":
			n, _ := strconv.Atoi(v)
			f.MemoryMB = n / 1024
		case "cpus":
			f.CPUs, _ = strconv.Atoi(v)
		case "ipforward":
			f.IPForward = v == "1"
		case "listen":
			if p, err := strconv.ParseInt(v, 16, 32); err == nil {
				f.Listening[int(p)] = true
			}
		case "crisocket":
			f.CRISocket = v == "yes"
		case "criready":
			f.CRIReady = v == "ok"
		case "runtime":
			f.RuntimeVersion = v
		case "runtimemarker":
			f.RuntimeMarker = v
		case "runtimereplaced":
			f.RuntimeReplaced = v
		case "runtimepending":
			f.RuntimePending = v == "yes"
		case "cniplugin":
			f.CNIPlugins[v] = true
		case "sandbox":
			f.RuntimeSandbox = v
		case "registrydir":
			f.RegistryConfigPath = v
		case "registryfile":
			f.RegistryFiles = append(f.RegistryFiles, v)
		case "registrymirrors":
			f.RegistryMirrors = v == "yes"
		case "sandboxpresent":
			f.SandboxPresent = v == "yes"
		case "capbnd":
			// CAP_SYS_RESOURCE is capability 24.
			if bits, err := strconv.ParseUint(v, 16, 64); err == nil {
				f.CapSysResource = bits&(1<<24) != 0
			}
		case "resolved":
			f.Resolved = v == "active"
		case "cp":
			f.HasCp = v != ""
		case "etcddir":
			f.EtcdDirUsed = v != ""
		case "kubelet":
			f.KubeletVersion = strings.TrimPrefix(v, "Kubernetes ")
		case "kubeletactive":
			f.KubeletActive = v == "active"
		case "kubeletconf":
			f.KubeletConf = v == "yes"
		case "staticpods":
			f.StaticPods = v == "yes"
		case "resolvconf":
			f.ResolvConf = v == "yes"
		case "truststore":
			f.TrustStores = append(f.TrustStores, v)
		case "etcddata":
			f.EtcdData = v == "yes"
		case "apiproxyunit":
			f.APIProxyUnit = v == "yes"
		case "heldpods":
			f.HeldPods = v == "yes"
		case "restore":
			f.RestoreMarker = v
		case "etcdinitialcluster":
			f.EtcdInitialCluster = v
		case "etcdinitialstate":
			f.EtcdInitialState = v
		case "kubeletserver":
			f.KubeletServer = v
		case "kubeletcert":
			f.KubeletIdentity = certCN(v)
		case "kubeletinputs":
			f.KubeletInputs = v
		case "kubeletstarted":
			f.KubeletStarted = v
		case "uid":
			f.UID, _ = strconv.Atoi(v)
		case "disk":
			f.parseDisk(v)
		case "clock":
			secs, err := strconv.ParseFloat(v, 64)
			if err == nil {
				remote := time.Unix(0, int64(secs*1e9))
				f.ClockOffset = remote.Sub(mid)
			}
		}
	}
	if f.Arch == "" || f.Kernel == "" {
		return nil, fmt.Errorf("unexpected facts output %q", ssh.Shorten(out, 200))
	}
	return f, nil
}

// certCN returns the subject CN of the first certificate in a base64-encoded
// PEM block, or "" when there is none or it has expired.
func certCN(b64 string) string {
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return ""
	}
	blk, _ := pem.Decode(raw)
	if blk == nil {
		return ""
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil || time.Now().After(c.NotAfter) {
		return ""
	}
	return c.Subject.CommonName
}
