package tasks

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kubeforge/kubeforge/internal/nodefile"
	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/manifests"
	"github.com/kubeforge/kubeforge/ssh"
)

// Where kubeforge installs the container runtime of the artifacts directory
// (docs/runtime.md). The marker is written first and names every file, so a
// run cut short is finished by the next one and `reset --purge` removes
// exactly what kubeforge installed.
const (
	runtimeMarkerPath    = "/var/lib/kubeforge/runtime"
	runtimePendingPath   = "/var/lib/kubeforge/runtime.restart"
	containerdConfigPath = "/etc/containerd/config.toml"
	containerdUnitPath   = "/etc/systemd/system/containerd.service"
	runtimeBinDir        = "/usr/local/bin"
	runcPath             = "/usr/local/sbin/runc"
	cniBinDir            = "/opt/cni/bin"
	// replacedSuffix names the config of a runtime kubeforge replaced
	// (runtime.install: always), kept for `reset --purge` to restore.
	replacedSuffix = ".before-kubeforge"
	// containerdOptDir is the root of containerd's "opt" plugin, made at its
	// first start: part of the runtime kubeforge installs.
	containerdOptDir = "/opt/containerd"
)

// runtimeBundle is the runtime/ part of an artifacts directory.
type runtimeBundle struct {
	dir      string
	versions map[string]string // "containerd" -> "v2.4.2", "runc", "cni-plugins"
}

// bundle reads the artifacts directory's runtime/VERSIONS; nil when there is none.
func (e *Env) runtimeBundle() (*runtimeBundle, error) {
	if e.Inv.Cluster.Artifacts == "" {
		return nil, nil
	}
	dir := filepath.Join(e.Inv.Cluster.Artifacts, "runtime")
	f, err := os.Open(filepath.Join(dir, "VERSIONS"))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the runtime of the artifacts: %w", err)
	}
	defer f.Close()
	b := &runtimeBundle{dir: dir, versions: map[string]string{}}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), " "); ok {
			b.versions[k] = v
		}
	}
	if b.versions["containerd"] == "" || b.versions["runc"] == "" {
		return nil, fmt.Errorf("%s names no containerd or runc version", f.Name())
	}
	return b, nil
}

func (b *runtimeBundle) String() string {
	return fmt.Sprintf("containerd %s, runc %s, CNI plugins %s", b.versions["containerd"], b.versions["runc"], orDash(b.versions["cni-plugins"]))
}

// RuntimeDecision is what kubeforge does about h's container runtime, decided
// from what the host has: install (or converge) its own, keep the one found,
// or stop with Problem.
type RuntimeDecision struct {
	Install bool
	Problem string // why neither works; Fix says what to do
	Fix     string
	Message string // what was found and what happens
}

// decideRuntime judges h's runtime from its facts, the inventory's
// runtime.install and the artifacts' runtime. A runtime kubeforge did not
// install is never touched unless runtime.install is always.
func decideRuntime(env *Env, h *Host) (RuntimeDecision, error) {
	f := h.Facts
	policy := env.Inv.Cluster.Runtime.Install
	b, err := env.runtimeBundle()
	if err != nil {
		return RuntimeDecision{}, err
	}
	found := "no container runtime"
	if f.RuntimeVersion != "" {
		found = f.RuntimeVersion
	}
	usable := f.CRISocket && f.CRIReady
	endpoint := env.Inv.Cluster.ContainerRuntimeEndpoint
	switch {
	case f.RuntimeMarker != "" && b != nil:
		return RuntimeDecision{Install: true, Message: "runtime installed by kubeforge (" + f.RuntimeMarker + "): kept as the artifacts have it (" + b.String() + ")"}, nil
	case f.RuntimeMarker != "" && usable:
		return RuntimeDecision{Message: "runtime installed by kubeforge (" + f.RuntimeMarker + "); no runtime in the artifacts: left as it is"}, nil
	case usable && policy != inventory.RuntimeInstallAlways:
		return RuntimeDecision{Message: found + " (not installed by kubeforge): left as it is"}, nil
	case f.RuntimeMarker == "" && f.RuntimeVersion == "" && f.CRISocket:
		// Something holds the socket but is no containerd kubeforge can see (CRI-O, or a containerd off PATH).
		return RuntimeDecision{Problem: "a runtime that is not containerd (or not on PATH) holds " + endpoint + "; kubeforge installs containerd only where no runtime is",
			Fix: "use that runtime (it must answer ctr's CRI plugin list), or remove it, or set cluster.containerRuntimeEndpoint to another socket"}, nil
	case policy == inventory.RuntimeInstallNever:
		return RuntimeDecision{Problem: found + ", no CRI answering on " + endpoint + ", and runtime.install is never",
			Fix: "install containerd with its CRI plugin and start it, or set cluster.runtime.install: ifMissing with an artifacts directory that has runtime/"}, nil
	case b == nil:
		return RuntimeDecision{Problem: found + ", no CRI answering on " + endpoint + ", and the artifacts have no runtime/ to install",
			Fix: "build the artifacts with the runtime (make artifacts), or install containerd >= 2.0 and start it"}, nil
	case f.RuntimeVersion != "" && policy != inventory.RuntimeInstallAlways:
		return RuntimeDecision{Problem: found + " is installed but its CRI does not answer on " + endpoint + "; kubeforge does not touch a runtime it did not install",
			Fix: "fix and start it (journalctl -u containerd), or set cluster.runtime.install: always to replace it with " + b.String()}, nil
	}
	what := "installs"
	if f.RuntimeVersion != "" {
		what = "replaces " + found + " (runtime.install: always) with"
	}
	return RuntimeDecision{Install: true, Message: found + ": kubeforge " + what + " " + b.String() + " from the artifacts"}, nil
}

// containerdMajor is the major version in `containerd --version` output
// ("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1"), or -1.
func containerdMajor(v string) int {
	for _, field := range strings.Fields(v) {
		field = strings.TrimPrefix(field, "v")
		if maj, _, ok := strings.Cut(field, "."); ok {
			if n, err := strconv.Atoi(maj); err == nil {
				return n
			}
		}
	}
	return -1
}

// checkRuntime adds the preflight checks of h's runtime: what kubeforge will
// do about it, its version against the cluster's, and its sandbox image.
func checkRuntime(env *Env, h *Host, add func(id string, sev Severity, ok bool, msg, fix string)) error {
	d, err := decideRuntime(env, h)
	if err != nil {
		return err
	}
	if d.Problem != "" {
		add("Runtime", SeverityError, false, d.Problem, d.Fix)
		return nil
	}
	add("Runtime", SeverityError, true, d.Message, "")
	if d.Install {
		return nil
	}
	f := h.Facts
	if maj := containerdMajor(f.RuntimeVersion); maj >= 0 && maj < 2 {
		sev := SeverityWarning
		msg := f.RuntimeVersion + ": containerd 1.x is past its Kubernetes support (the kubelet warns from v1.35 and refuses it from v1.38)"
		if minorOf(env.Inv.Cluster.KubernetesVersion) >= 38 {
			sev = SeverityError
		}
		fix := "upgrade it to containerd >= 2.0"
		if b, _ := env.runtimeBundle(); b != nil {
			fix = "set cluster.runtime.install: always to replace it with " + b.String() + " from the artifacts, or upgrade it to containerd >= 2.0"
		}
		add("RuntimeVersion", sev, false, msg, fix)
	} else if maj >= 2 {
		add("RuntimeVersion", SeverityError, true, f.RuntimeVersion, "")
	}
	if sb := f.RuntimeSandbox; sb != "" {
		want := manifests.Images(env.Inv)["pause"]
		inArtifacts, err := env.artifactsHaveImage(sb)
		if err != nil {
			return err
		}
		switch {
		case !f.SandboxPresent && !inArtifacts && env.Inv.Cluster.Artifacts != "":
			add("SandboxImage", SeverityError, false, "the runtime's sandbox image "+sb+" is neither on the host nor in the artifacts: no pod can start offline",
				"set the sandbox image in /etc/containerd/config.toml to "+want+" (in the artifacts) and restart containerd")
		case sb != want:
			add("SandboxImage", SeverityWarning, false, "the runtime's sandbox image "+sb+" is not the cluster's "+want,
				"set the sandbox image in /etc/containerd/config.toml to "+want+" and restart containerd")
		default:
			add("SandboxImage", SeverityError, true, "sandbox image "+sb, "")
		}
	}
	return nil
}

// minorOf is the minor of "v1.37.2", or 0.
func minorOf(v string) int {
	parts := strings.Split(strings.TrimPrefix(v, "v"), ".")
	if len(parts) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(parts[1])
	return n
}

// artifactsHaveImage reports whether an image tarball of the artifacts names ref.
func (e *Env) artifactsHaveImage(ref string) (bool, error) {
	if e.Inv.Cluster.Artifacts == "" {
		return false, nil
	}
	images, _ := filepath.Glob(filepath.Join(e.Inv.Cluster.Artifacts, "images", "*.tar"))
	for _, p := range images {
		a, err := e.artifact(p, true)
		if err != nil {
			return false, err
		}
		for _, t := range a.tags {
			if t == ref || "docker.io/"+t == ref {
				return true, nil
			}
		}
	}
	return false, nil
}

// bridgeCNIPlugins are the plugins the built-in networks (bridge, flannel) run: their
// conflist's (bridge, host-local, portmap) and the CRI's loopback.
var bridgeCNIPlugins = map[string]bool{"bridge": true, "host-local": true, "portmap": true, "loopback": true}

// runtimeFiles is what kubeforge's runtime puts on h: the marker (first), the
// binaries and CNI plugins of the bundle, containerd's config and unit.
func runtimeFiles(env *Env, h *Host, b *runtimeBundle) (marker nodefile.File, bins []ssh.File, conf []nodefile.File, err error) {
	var listed []string // every path the runtime may own: what reset --purge removes
	add := func(src, dst string, push bool) error {
		listed = append(listed, dst)
		if !push {
			return nil
		}
		a, err := env.artifact(src, false)
		if err != nil {
			return err
		}
		bins = append(bins, ssh.File{Path: dst, Mode: 0o755, Source: src, SHA256: a.sha256})
		return nil
	}
	for _, n := range []string{"containerd", "containerd-shim-runc-v2", "ctr"} {
		if err := add(filepath.Join(b.dir, "bin", n), runtimeBinDir+"/"+n, true); err != nil {
			return marker, nil, nil, err
		}
	}
	if err := add(filepath.Join(b.dir, "bin", "runc"), runcPath, true); err != nil {
		return marker, nil, nil, err
	}
	plugins, _ := filepath.Glob(filepath.Join(b.dir, "cni", "*"))
	sort.Strings(plugins)
	// flannel's conflist is the bridge's (flanneld needs no CNI plugin of its own).
	bridge := env.NetworkPlugin() == inventory.CNIBridge || env.NetworkPlugin() == inventory.CNIFlannel
	for _, p := range plugins {
		name := filepath.Base(p)
		// The built-in pod network needs only its own plugins (a third of the bytes) and keeps them as
		// the bundle has them. Another CNI may delegate to any standard plugin and often installs its own
		// copies (Calico's, Cilium's): those are put only where the host has none, never overwritten.
		if bridge && !bridgeCNIPlugins[name] {
			continue
		}
		if err := add(p, cniBinDir+"/"+name, bridge || !h.Facts.CNIPlugins[name]); err != nil {
			return marker, nil, nil, err
		}
	}
	conf = []nodefile.File{
		{Path: containerdConfigPath, Mode: 0o644, Data: []byte(containerdConfig(env, h, b))},
		{Path: containerdUnitPath, Mode: 0o644, Data: []byte(containerdUnit)},
	}
	for _, f := range conf {
		listed = append(listed, f.Path)
	}
	var m strings.Builder
	fmt.Fprintf(&m, "%s\n# Installed by kubeforge from the artifacts. `kubeforge reset --purge` removes these files and puts back\n# the file%s copy kept of what was there before.\n", b, replacedSuffix)
	if r := replacedRuntime(h.Facts); r != "" {
		m.WriteString("# replaced: " + r + "\n")
	}
	for _, p := range listed {
		m.WriteString(p + "\n")
	}
	marker = nodefile.File{Path: runtimeMarkerPath, Mode: 0o644, Data: []byte(m.String())}
	return marker, bins, conf, nil
}

// replacedRuntime is the runtime kubeforge's replaced on the host (recorded in
// the marker once, so the marker is the same on every run), or "".
func replacedRuntime(f *Facts) string {
	if f.RuntimeMarker != "" {
		return f.RuntimeReplaced
	}
	return f.RuntimeVersion
}

// restartsContainerd reports whether a change of path needs containerd
// restarted: its binaries, runc, config and unit do; CNI plugins (run per pod)
// and the marker do not.
func restartsContainerd(path string) bool {
	return path != runtimeMarkerPath && !strings.HasPrefix(path, cniBinDir+"/")
}

// containerdConfig is containerd 2.x's config (version 3) for the kubelet:
// the CRI socket of the inventory, the cgroup driver of the kubelet, the
// cluster's sandbox image, the CNI paths kubeforge's plugins use, and
// restrict_oom_score_adj where the host lacks CAP_SYS_RESOURCE.
func containerdConfig(env *Env, h *Host, bundle *runtimeBundle) string {
	sock := strings.TrimPrefix(env.Inv.Cluster.ContainerRuntimeEndpoint, "unix://")
	systemd := env.Inv.Cluster.Kubelet.CgroupDriver != inventory.CgroupDriverCgroupfs
	restrict := h.Facts != nil && !h.Facts.CapSysResource
	var b strings.Builder
	fmt.Fprintf(&b, `# Written by kubeforge for the kubelet of cluster %q. kubeforge rewrites it on every up.
version = %d

[grpc]
  address = %q

[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = %q
%s
[plugins."io.containerd.cri.v1.runtime"]
`, env.Inv.Cluster.Name, containerdConfigVersion(bundle), sock, manifests.Images(env.Inv)["pause"], registryConfig(env))
	if restrict {
		b.WriteString("  # CAP_SYS_RESOURCE is not in this host's bounding set: runc cannot lower oom_score_adj.\n  restrict_oom_score_adj = true\n")
	}
	fmt.Fprintf(&b, `
[plugins."io.containerd.cri.v1.runtime".containerd]
  default_runtime_name = "runc"

[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
  BinaryName = %q
  SystemdCgroup = %t

[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = [%q]
  conf_dir = "/etc/cni/net.d"
`, runcPath, systemd, cniBinDir)
	return b.String()
}

// registryConfig is the config_path section of containerd's config when the
// inventory has registries (docs/registries.md): containerd then reads a
// hosts.toml per registry at each pull. Without registries it is left out,
// so adding the first restarts containerd once and later changes never.
func registryConfig(env *Env) string {
	if len(env.Inv.Cluster.Registries) == 0 {
		return ""
	}
	return fmt.Sprintf("\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = %q\n", manifests.RegistryHostsDir)
}

// containerdConfigVersion is the config schema the bundle's containerd reads
// without migrating: 4 from containerd 2.4 on (its version.ConfigVersion), 3
// before. The keys kubeforge writes are the same in both.
func containerdConfigVersion(b *runtimeBundle) int {
	v := strings.Split(strings.TrimPrefix(b.versions["containerd"], "v"), ".")
	if len(v) >= 2 {
		major, _ := strconv.Atoi(v[0])
		minor, _ := strconv.Atoi(v[1])
		if major > 2 || major == 2 && minor >= 4 {
			return 4
		}
	}
	return 3
}

// containerdUnit runs the installed containerd (the settings of containerd's
// own unit). Named containerd.service, it takes the place of a distribution's.
const containerdUnit = `# Written by kubeforge: containerd from the artifacts.
[Unit]
Description=containerd container runtime (installed by kubeforge)
Documentation=https://containerd.io
After=network.target local-fs.target dbus.service

[Service]
ExecStartPre=-/sbin/modprobe overlay
ExecStart=` + runtimeBinDir + `/containerd
Type=notify
Delegate=yes
KillMode=process
Restart=always
RestartSec=5
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
OOMScoreAdjust=-999

[Install]
WantedBy=multi-user.target
`

// InstallRuntime installs (or converges) kubeforge's container runtime on a
// host that needs it, restarts containerd when a file of it changed, and
// waits until the CRI answers. A runtime kubeforge did not install is left
// alone (runtime.install: always aside). Then the hosts files of
// cluster.registries, whichever runtime it is (ConvergeRegistries).
func InstallRuntime(ctx context.Context, env *Env, h *Host) error {
	if err := installRuntime(ctx, env, h); err != nil {
		return err
	}
	return ConvergeRegistries(ctx, env, h)
}

func installRuntime(ctx context.Context, env *Env, h *Host) error {
	d, err := decideRuntime(env, h)
	if err != nil {
		return err
	}
	if d.Problem != "" {
		return fmt.Errorf("container runtime: %s; %s", d.Problem, d.Fix)
	}
	if !d.Install {
		h.Log.Info("unchanged", "what", "container runtime", "detail", d.Message)
		return nil
	}
	b, err := env.runtimeBundle()
	if err != nil {
		return err
	}
	marker, bins, conf, err := runtimeFiles(env, h, b)
	if err != nil {
		return err
	}
	// Before anything is written: on the first install, a copy of every file
	// the runtime takes the place of (a replaced runtime's config, a runc or CNI
	// plugins someone put there), which `reset --purge` puts back; and a flag
	// that says containerd must restart, removed once it answered. A run cut
	// short after writing restarts it on the next run.
	restart := h.Facts.RuntimePending
	var prep strings.Builder
	if h.Facts.RuntimeMarker == "" {
		for _, p := range append(pathsOf(bins), containerdConfigPath, containerdUnitPath) {
			fmt.Fprintf(&prep, "if [ -e %[1]s ] && [ ! -e %[1]s%[2]s ]; then cp -p %[1]s %[1]s%[2]s; fi\n", ssh.Quote(p), replacedSuffix)
		}
	}
	needsRestart := false
	for _, f := range append(h.unverified(bins), h.unverified(nodeFiles(conf))...) {
		needsRestart = needsRestart || restartsContainerd(f.Path)
	}
	if needsRestart && !restart {
		fmt.Fprintf(&prep, "mkdir -p %s && : > %s\n", path.Dir(runtimePendingPath), runtimePendingPath)
	}
	if prep.Len() > 0 {
		if _, err := h.Client.Run(ctx, "set -e\n"+prep.String()); err != nil {
			return fmt.Errorf("prepare the runtime's install: %w", err)
		}
	}
	// The marker first: from here on the runtime is kubeforge's, and a run cut
	// short is finished by the next.
	changed, err := push(ctx, h, []nodefile.File{marker})
	if err != nil {
		return err
	}
	if bins = h.unverified(bins); len(bins) > 0 {
		up, err := h.Client.Upload(ctx, bins)
		if err != nil {
			return fmt.Errorf("push the runtime: %w", err)
		}
		for _, p := range up {
			h.Changed(Change{Kind: ChangeFile, What: p})
		}
		changed = append(changed, up...)
	}
	c, err := push(ctx, h, conf)
	if err != nil {
		return err
	}
	for _, p := range append(changed, c...) {
		restart = restart || restartsContainerd(p)
	}
	if !restart && h.Facts.CRISocket && h.Facts.CRIReady {
		return nil // running and answering, as the facts found it, and nothing of it changed
	}
	script := "systemctl daemon-reload && systemctl --no-reload enable -q containerd && "
	if restart {
		script += "systemctl restart containerd"
	} else {
		script += "{ systemctl is-active -q containerd || systemctl start containerd; }"
	}
	if _, err := h.Client.Run(ctx, script); err != nil {
		return fmt.Errorf("start containerd: %w%s", err, journalTail(ctx, h, "containerd"))
	}
	if restart {
		h.Changed(Change{Kind: ChangeHost, What: "containerd restarted"})
	}
	if err := waitCRI(ctx, env, h, b.versions["containerd"]); err != nil {
		return err
	}
	if restart || needsRestart {
		if _, err := h.Client.Run(ctx, "rm -f "+runtimePendingPath); err != nil {
			return fmt.Errorf("clear the runtime's restart flag: %w", err)
		}
	}
	return nil
}

func pathsOf(files []ssh.File) []string {
	out := make([]string, len(files))
	for i, f := range files {
		out[i] = f.Path
	}
	return out
}

func nodeFiles(files []nodefile.File) []ssh.File {
	out := make([]ssh.File, len(files))
	for i, f := range files {
		out[i] = ssh.File{Path: f.Path, Mode: f.Mode, Data: f.Data}
	}
	return out
}

// waitCRI waits until containerd answers on the CRI socket with version want
// and its CRI plugin is ok.
func waitCRI(ctx context.Context, env *Env, h *Host, want string) error {
	sock := strings.TrimPrefix(env.Inv.Cluster.ContainerRuntimeEndpoint, "unix://")
	cmd := fmt.Sprintf("ctr --address %[1]s version 2>&1 | sed -n '/^Server:/,$ s/^ *Version: *//p'; ctr --address %[1]s plugins ls 2>/dev/null | awk '$1==\"io.containerd.grpc.v1\" && $2==\"cri\" {print $NF}'", ssh.Quote(sock))
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for {
		out, err := h.Client.Run(ctx, cmd)
		last = strings.Join(strings.Fields(out), " ")
		// containerd prints its version as built (-X version.Version=v2.4.2).
		if err == nil && (last == want+" ok" || last == strings.TrimPrefix(want, "v")+" ok") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd %s did not answer on %s with its CRI plugin within 60s (last: %q)%s", want, sock, last, journalTail(ctx, h, "containerd"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// journalTail is the last lines a unit logged, for an error message.
func journalTail(ctx context.Context, h *Host, unit string) string {
	out, err := h.Client.Run(ctx, "journalctl -u "+ssh.Quote(unit)+" -n 15 --no-pager -o cat 2>/dev/null")
	if err != nil || strings.TrimSpace(out) == "" {
		return ""
	}
	return "\n" + unit + " logged:\n" + strings.TrimRight(out, "\n")
}

// plannedRuntime is what the plan checks for h's runtime: the files of
// kubeforge's runtime when it installs one (nil otherwise).
func plannedRuntime(env *Env, h *Host) ([]ssh.File, error) {
	d, err := decideRuntime(env, h)
	if err != nil || !d.Install {
		return nil, err
	}
	b, err := env.runtimeBundle()
	if err != nil {
		return nil, err
	}
	marker, bins, conf, err := runtimeFiles(env, h, b)
	if err != nil {
		return nil, err
	}
	sf := append(nodeFiles([]nodefile.File{marker}), bins...)
	return append(sf, nodeFiles(conf)...), nil
}
