package tasks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/manifests"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Severity says whether a failed check stops the run.
type Severity string

// Severities.
const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
)

// CheckResult is the outcome of one preflight check on one host.
type CheckResult struct {
	Host     string
	ID       string
	Severity Severity
	Passed   bool
	Ignored  bool // failed, but the user ignored it
	Message  string
	Fix      string
}

// PreflightError is a preflight run with failed checks; nothing was changed.
type PreflightError struct{ Failed []CheckResult }

func (e *PreflightError) Error() string {
	hosts := map[string]bool{}
	var ids []string
	for _, r := range e.Failed {
		hosts[r.Host] = true
		ids = append(ids, r.Host+":"+r.ID)
	}
	return fmt.Sprintf("preflight failed on %d host(s): %s", len(hosts), strings.Join(ids, ", "))
}

// maxClockSkew bounds the clock offset of a host from the workstation and from
// the other hosts: certificates, tokens and etcd's leases all assume clocks agree.
const maxClockSkew = 30 * time.Second

// ControlPlanePorts and WorkerPorts must be free on a host before it joins.
var (
	controlPlanePorts = []int{inventory.DefaultAPIServerPort, manifests.EtcdClientPort, manifests.EtcdPeerPort, 10250, 10257, 10259}
	workerPorts       = []int{10250}
)

// PreflightHost runs the checks that need only this host's facts and a command
// or two on it. Results are stored on the Env.
func PreflightHost(ctx context.Context, env *Env, h *Host) error {
	f := h.Facts
	if f == nil {
		return errors.New("preflight: no facts gathered")
	}
	add := func(id string, sev Severity, ok bool, msg, fix string) {
		env.addCheck(CheckResult{Host: h.Name, ID: id, Severity: sev, Passed: ok, Message: msg, Fix: fix})
	}
	add("Privileges", SeverityError, true, "root or passwordless sudo", "")
	arch := f.Arch == "x86_64" || f.Arch == "aarch64"
	add("Arch", SeverityError, arch, "architecture "+f.Arch, "kubeforge supports x86_64 and aarch64 hosts")
	known := map[string]bool{"debian": true, "ubuntu": true, "rhel": true, "centos": true, "rocky": true, "almalinux": true, "fedora": true, "amzn": true, "ol": true, "sles": true, "opensuse-leap": true, "flatcar": true}
	add("OS", SeverityWarning, known[f.OS], "OS "+orDash(f.OSName), "untested distribution; it may still work")
	add("KernelVersion", SeverityError, kernelAtLeast(f.Kernel, 4, 19), "kernel "+f.Kernel, "Kubernetes 1.37 needs Linux 4.19 or newer")
	if f.CgroupV2 {
		add("Cgroups", SeverityWarning, true, "cgroup v2", "")
	} else {
		add("Cgroups", SeverityWarning, false, "cgroup v1: kubelet >= 1.35 needs failCgroupV1=false (kubeforge sets it)",
			"move the host to cgroup v2 (systemd.unified_cgroup_hierarchy=1); v1 support is deprecated")
	}
	add("Swap", SeverityError, !f.SwapOn, "swap "+onOff(f.SwapOn), "run `swapoff -a` and remove swap entries from /etc/fstab")
	add("IPForward", SeverityWarning, f.IPForward, "net.ipv4.ip_forward="+boolDigit(f.IPForward),
		"kubeforge sets net.ipv4.ip_forward=1 in /etc/sysctl.d/99-kubeforge.conf during up")
	if err := checkRuntime(env, h, add); err != nil {
		return err
	}
	if err := checkRegistries(env, h, add); err != nil {
		return err
	}
	checkVXLAN(env, f, add)
	add("FileExisting-cp", SeverityError, f.HasCp, "cp on PATH "+yesNo(f.HasCp), "install coreutils: the kubelet and kubeforge need cp")
	if rc := env.Inv.Cluster.Kubelet.ResolvConf; rc != "" {
		add("ResolvConf", SeverityError, f.ResolvConf, "kubelet resolvConf "+rc+" "+map[bool]string{true: "present", false: "missing"}[f.ResolvConf],
			"create "+rc+" on the host, or change cluster.kubelet.resolvConf: kubelet cannot start any pod without it")
	}
	if h.IsControlPlane() {
		add("NumCPU", SeverityError, f.CPUs >= 2, fmt.Sprintf("%d CPUs", f.CPUs), "a control plane needs at least 2 CPUs")
		add("Mem", SeverityError, f.MemoryMB >= 1700, fmt.Sprintf("%d MB memory", f.MemoryMB), "a control plane needs at least 1700 MB")
	}
	if errs := validation.IsDNS1123Subdomain(strings.ToLower(f.Hostname)); len(errs) > 0 {
		add("Hostname", SeverityWarning, false, "hostname "+f.Hostname+" is not a valid node name",
			"kubeforge names the node "+h.Name+" (--hostname-override)")
	}
	// A host that is already a node, or where an earlier run of kubeforge
	// started the kubelet (an interrupted join), uses these ports itself.
	if !f.KubeletConf && f.KubeletStarted == "" {
		ports := workerPorts
		if h.IsControlPlane() {
			ports = controlPlanePorts
		}
		var busy []string
		for _, p := range ports {
			if f.Listening[p] {
				busy = append(busy, strconv.Itoa(p))
			}
		}
		add("Ports", SeverityError, len(busy) == 0, portsMsg(ports, busy),
			"stop what listens there (`ss -ltnp` on the host shows it), or `kubeforge reset` a previous install")
		// A new control plane's etcd starts from an empty data dir (kubeadm's DirAvailable--var-lib-etcd).
		if h.IsControlPlane() && !f.StaticPods && f.RestoreMarker == "" && !f.HeldPods {
			dir := manifests.EtcdDataDirOf(env.Inv)
			add("DirAvailable--var-lib-etcd", SeverityError, !f.EtcdDirUsed, dir+" "+map[bool]string{true: "is not empty", false: "empty or absent"}[f.EtcdDirUsed],
				"this host is no member of the cluster: move "+dir+" away (it may be another cluster's data), or `kubeforge reset` it")
		}
	}
	return checkReach(ctx, env, h)
}

// checkVXLAN checks, for the flannel pod network only, that the host's
// kernel has VXLAN (loaded, built in, or a module it can load).
func checkVXLAN(env *Env, f *Facts, add func(id string, sev Severity, ok bool, msg, fix string)) {
	if env.NetworkPlugin() != inventory.CNIFlannel {
		return
	}
	add("VXLAN", SeverityError, f.VXLAN, "kernel VXLAN "+map[bool]string{true: "available", false: "not found"}[f.VXLAN],
		"the flannel pod network needs the kernel's vxlan module (`modprobe vxlan`); on one L2 segment, cni.plugin: bridge needs none")
}

// checkReach tests, from the host, that the control-plane endpoint answers on
// TCP (a refusal proves the route: an endpoint may have no backend yet). The
// ports between hosts are CheckPeerPorts'.
func checkReach(ctx context.Context, env *Env, h *Host) error {
	type target struct {
		host string
		port int
		why  string
	}
	epHost, epPort := env.Inv.Endpoint(env.Seed())
	targets := []target{{epHost, epPort, "control-plane endpoint"}}
	var script strings.Builder
	for _, t := range targets {
		// bash's /dev/tcp: exit 0 open, 1 refused (reachable), 124 timed out.
		fmt.Fprintf(&script, "timeout 3 bash -c '</dev/tcp/%s/%d' 2>/dev/null; echo \"%s %d $?\"\n", t.host, t.port, t.host, t.port)
	}
	out, err := h.Client.Run(ctx, script.String())
	if err != nil {
		return fmt.Errorf("test reachability: %w", err)
	}
	for i, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if i >= len(targets) {
			break
		}
		t := targets[i]
		fields := strings.Fields(line)
		code := fields[len(fields)-1]
		addr := net.JoinHostPort(t.host, strconv.Itoa(t.port))
		ok := code == "0" || (code == "1" && t.why == "control-plane endpoint")
		env.addCheck(CheckResult{Host: h.Name, ID: "Reach", Severity: SeverityError, Passed: ok,
			Message: fmt.Sprintf("%s %s %s", t.why, addr, reachWord(code)),
			Fix:     "open TCP " + strconv.Itoa(t.port) + " from " + h.Name + " to " + t.host + " (firewall, routes, security groups)"})
	}
	return nil
}

// PreflightCluster runs the checks across hosts (the ports they need on each
// other, unique names, IDs and MACs, clock skew), then fails when any check failed and was not ignored.
func PreflightCluster(ctx context.Context, env *Env) error {
	if err := CheckPeerPorts(ctx, env); err != nil {
		return err
	}
	hosts := env.Hosts(env.Inv.Hosts)
	unique := func(id, what string, get func(*Facts) []string, fix string) {
		seen := map[string][]string{}
		for _, h := range hosts {
			if h.Facts == nil {
				continue
			}
			mine := map[string]bool{}
			for _, v := range get(h.Facts) {
				if v != "" && !mine[v] {
					mine[v] = true
					seen[v] = append(seen[v], h.Name)
				}
			}
		}
		shared := map[string]bool{}
		for v, names := range seen {
			if len(names) > 1 {
				for _, n := range names {
					shared[n] = true
					env.addCheck(CheckResult{Host: n, ID: id, Severity: SeverityError, Message: fmt.Sprintf("%s %s shared by %s", what, v, strings.Join(names, ", ")), Fix: fix})
				}
			}
		}
		for _, h := range hosts {
			if h.Facts != nil && !shared[h.Name] {
				env.addCheck(CheckResult{Host: h.Name, ID: id, Severity: SeverityError, Passed: true, Message: what + " unique"})
			}
		}
	}
	unique("MachineID", "machine-id", func(f *Facts) []string { return []string{f.MachineID} },
		"give every host its own /etc/machine-id (rm it, then systemd-machine-id-setup)")
	unique("ProductUUID", "product_uuid", func(f *Facts) []string { return []string{f.ProductUUID} },
		"cloned VMs need distinct SMBIOS UUIDs")
	unique("MAC", "MAC address", func(f *Facts) []string { return f.MACs }, "give every host a distinct MAC address")
	unique("HostnameUnique", "hostname", func(f *Facts) []string { return []string{strings.ToLower(f.Hostname)} },
		"give every host its own hostname (hostnamectl set-hostname)")
	var read []*Host // a host that is down has no facts
	for _, h := range hosts {
		if h.Facts != nil {
			read = append(read, h)
		}
	}
	// Certificates are made on the workstation: a host whose clock is off from
	// it, or from the others (their median), by more than the bound may find
	// them not yet valid, or expired, and etcd's leases misbehave.
	offs := make([]time.Duration, 0, len(read))
	for _, h := range read {
		offs = append(offs, h.Facts.ClockOffset)
	}
	slices.Sort(offs)
	// Each offset is known within its uncertainty (the time its reading took):
	// a host fails only when even the most favourable reading is off by more
	// than the bound, so a slow answer is not taken for a wrong clock.
	var worst time.Duration
	for _, h := range read {
		worst = max(worst, h.Facts.ClockUncertainty)
	}
	for _, h := range read {
		off, unc := h.Facts.ClockOffset, h.Facts.ClockUncertainty
		msg := fmt.Sprintf("clock offset from the workstation %s", off.Round(time.Millisecond))
		if unc >= time.Second {
			msg += fmt.Sprintf(" (± %s: the reading took %s)", unc.Round(time.Millisecond), (2 * unc).Round(time.Millisecond))
		}
		ok := off.Abs() <= maxClockSkew+unc
		if len(read) > 1 {
			median := offs[len(offs)/2]
			msg += fmt.Sprintf(", from the hosts' median %s", (off - median).Round(time.Millisecond))
			ok = ok && (off-median).Abs() <= maxClockSkew+unc+worst
		}
		env.addCheck(CheckResult{Host: h.Name, ID: "ClockSkew", Severity: SeverityError, Passed: ok,
			Message: msg + fmt.Sprintf("; at most %s allowed", maxClockSkew),
			Fix:     "run an NTP client (chrony or systemd-timesyncd) on every host and on the workstation"})
	}
	var failed []CheckResult
	for _, r := range env.PreflightResults() {
		if !r.Passed && !r.Ignored && r.Severity == SeverityError {
			failed = append(failed, r)
		}
	}
	if len(failed) > 0 {
		return &PreflightError{Failed: failed}
	}
	return nil
}

// addChecks records rs and returns those that fail the run (failed, an
// error, not ignored).
func (e *Env) addChecks(rs []CheckResult) []CheckResult {
	var failed []CheckResult
	for _, r := range rs {
		if r = e.addCheck(r); !r.Passed && !r.Ignored && r.Severity == SeverityError {
			failed = append(failed, r)
		}
	}
	return failed
}

// addCheck records r, marked ignored when the user said so, and returns it.
func (e *Env) addCheck(r CheckResult) CheckResult {
	if !r.Passed && (e.Opts.IgnorePreflight[r.ID] || e.Opts.IgnorePreflight["all"]) {
		r.Ignored = true
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.preflight = append(e.preflight, r)
	return r
}

// PreflightResults returns the checks run so far, by host then ID.
func (e *Env) PreflightResults() []CheckResult {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := append([]CheckResult(nil), e.preflight...)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Host != out[j].Host {
			return out[i].Host < out[j].Host
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// WritePreflightTable prints the check table; with failedOnly, only what did not pass.
func WritePreflightTable(w io.Writer, results []CheckResult, failedOnly bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tCHECK\tRESULT\tDETAIL")
	for _, r := range results {
		if failedOnly && r.Passed {
			continue
		}
		res := "ok"
		switch {
		case r.Passed:
		case r.Ignored:
			res = "ignored"
		case r.Severity == SeverityWarning:
			res = "warning"
		default:
			res = "FAIL"
		}
		detail := r.Message
		if !r.Passed && r.Fix != "" {
			detail += " — fix: " + r.Fix
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Host, r.ID, res, detail)
	}
	tw.Flush()
}

func kernelAtLeast(v string, major, minor int) bool {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, _ := strconv.Atoi(parts[0])
	mi, _ := strconv.Atoi(strings.TrimFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	return ma > major || (ma == major && mi >= minor)
}

func portsMsg(ports []int, busy []string) string {
	if len(busy) == 0 {
		return fmt.Sprintf("ports %v free", ports)
	}
	return "ports in use: " + strings.Join(busy, ", ")
}

func reachWord(code string) string {
	switch code {
	case "0":
		return "open"
	case "1":
		return "refused (reachable, nothing listening yet)"
	case "124":
		return "timed out"
	}
	return "unreachable (exit " + code + ")"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func boolDigit(b bool) string {
	if b {
		return "1"
	}
	return "0"
}
