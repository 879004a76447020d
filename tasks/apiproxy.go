package tasks

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/manifests"
	"github.com/kubeforge/kubeforge/ssh"
)

// goArch maps `uname -m` of the architectures preflight accepts to Go's GOARCH.
var goArch = map[string]string{"x86_64": "amd64", "aarch64": "arm64"}

// selfBinary is the path of this running kubeforge's own binary: /proc/self/exe on Linux, the very file the
// process runs even when a new build has replaced the file at its path meanwhile (its content and its digest
// stay those of one binary for the whole run); os.Executable elsewhere.
func selfBinary() (string, error) {
	const proc = "/proc/self/exe"
	if _, err := os.Stat(proc); err == nil {
		return proc, nil
	}
	return os.Executable()
}

// apiProxyBinary is this kubeforge binary, which the proxy unit runs on h.
func apiProxyBinary(env *Env, h *Host) (ssh.File, error) {
	self, err := selfBinary()
	if err != nil {
		return ssh.File{}, fmt.Errorf("find the kubeforge binary for the API proxy: %w", err)
	}
	if arch := goArch[h.Facts.Arch]; runtime.GOOS != "linux" || arch != runtime.GOARCH {
		return ssh.File{}, fmt.Errorf("the node-local API proxy runs kubeforge's own binary on the workers; this one is %s/%s and %s is linux/%s: "+
			"run kubeforge from a linux/%s machine, or set cluster.controlPlaneEndpoint (a load balancer) so no proxy is needed",
			runtime.GOOS, runtime.GOARCH, h.Name, h.Facts.Arch, arch)
	}
	a, err := env.artifact(self, false)
	if err != nil {
		return ssh.File{}, err
	}
	return ssh.File{Path: manifests.APIProxyBinaryPath, Mode: 0o755, Source: self, SHA256: a.sha256}, nil
}

// startAPIProxy puts the proxy's binary on worker h (its unit and upstream
// list were pushed with the node's files), enables it, restarts it when its
// binary or unit changed, and waits until it listens. A change of the
// upstream list needs no restart: the proxy reads it again.
func startAPIProxy(ctx context.Context, env *Env, h *Host) error {
	bin, err := apiProxyBinary(env, h)
	if err != nil {
		return err
	}
	changed, err := h.Client.Upload(ctx, []ssh.File{bin})
	if err != nil {
		return fmt.Errorf("push the API proxy: %w", err)
	}
	for _, p := range changed {
		h.Changed(Change{Kind: ChangeFile, What: p})
	}
	restart := len(changed) > 0
	for _, c := range h.Changes() {
		if c.Kind == ChangeFile && (c.What == manifests.APIProxyUnitPath || c.What == manifests.APIProxyBinaryPath) {
			restart = true
		}
	}
	start := "systemctl start " + manifests.APIProxyUnit
	if restart {
		start = "systemctl daemon-reload; systemctl restart " + manifests.APIProxyUnit
	}
	out, err := h.Client.Run(ctx, "set -e; systemctl is-enabled -q "+manifests.APIProxyUnit+" 2>/dev/null || systemctl daemon-reload; "+
		"systemctl --no-reload enable -q "+manifests.APIProxyUnit+"; a=$(systemctl is-active "+manifests.APIProxyUnit+" || true); "+start+"; echo $a")
	if err != nil {
		return fmt.Errorf("start the API proxy: %w", err)
	}
	if restart || strings.TrimSpace(out) != "active" {
		h.Changed(Change{Kind: ChangeRestart, What: manifests.APIProxyUnit})
	}
	err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		busy, err := listeningOn(ctx, h, inventory.DefaultAPIServerPort)
		return len(busy) > 0, err
	})
	if err != nil {
		logs, _ := h.Client.Run(ctx, "journalctl -u "+manifests.APIProxyUnit+" --no-pager -n 20 -o cat 2>&1 | cut -c1-240")
		return fmt.Errorf("the API proxy on %s does not listen on 127.0.0.1:%d: %w\n%s", h.Name, inventory.DefaultAPIServerPort, err, logs)
	}
	return nil
}

// ConvergeAPIProxy brings a joined worker's way to the API in line with the
// inventory when control planes are added or removed (scale): with the proxy,
// its upstream list (read again by the running proxy: no restart of it or of
// the kubelet) and the proxy itself; then the kubelet's server; without the
// proxy, the kubelet moved to the endpoint first and the proxy removed.
func ConvergeAPIProxy(ctx context.Context, env *Env, h *Host) error {
	if h.IsControlPlane() || h.Facts == nil || !h.Facts.KubeletConf {
		return nil
	}
	if env.Inv.UsesAPIProxy() {
		if _, err := push(ctx, h, manifests.APIProxyFiles(env.staying(), h.Host)); err != nil {
			return err
		}
		if err := startAPIProxy(ctx, env, h); err != nil {
			return err
		}
	}
	return moveKubelet(ctx, env, h)
}

// moveKubelet points h's kubelet at the nodes' server, then removes a proxy
// the cluster no longer uses.
func moveKubelet(ctx context.Context, env *Env, h *Host) error {
	if err := pointKubelet(ctx, env, h); err != nil {
		return err
	}
	if !env.Inv.UsesAPIProxy() && h.Facts != nil && h.Facts.APIProxyUnit {
		return removeAPIProxy(ctx, h)
	}
	return nil
}

// removeAPIProxy stops the proxy and removes its files from a worker of a
// cluster that no longer uses it (its kubelet was pointed elsewhere first).
func removeAPIProxy(ctx context.Context, h *Host) error {
	script := "systemctl disable --now -q " + manifests.APIProxyUnit + " 2>/dev/null; rm -f " +
		strings.Join([]string{manifests.APIProxyUnitPath, manifests.APIProxyUpstreamsPath, manifests.APIProxyBinaryPath}, " ") + "; systemctl daemon-reload"
	if _, err := h.Client.Run(ctx, script); err != nil {
		return fmt.Errorf("remove the API proxy: %w", err)
	}
	h.Changed(Change{Kind: ChangeHost, What: "removed " + manifests.APIProxyUnit})
	h.Facts.APIProxyUnit = false
	return nil
}

// pointKubelet makes a joined worker's kubelet.conf name the server of the
// cluster's nodes (the proxy, or the endpoint), when it names another, and
// restarts the kubelet: the move between the two ways of reaching the API.
// Only the server line changes; the kubelet's credentials stay.
func pointKubelet(ctx context.Context, env *Env, h *Host) error {
	want := env.Inv.NodeServerURL()
	if h.Facts == nil || !h.Facts.KubeletConf || h.Facts.KubeletServer == "" || h.Facts.KubeletServer == want {
		return nil
	}
	k := "/etc/kubernetes/kubelet.conf"
	script := fmt.Sprintf(`set -e; umask 077
sed -E 's#^( *server:).*#\1 %[2]s#' %[1]s > %[1]s.kubeforge-tmp
chmod 0600 %[1]s.kubeforge-tmp
mv -f %[1]s.kubeforge-tmp %[1]s
systemctl restart kubelet`, k, want)
	if _, err := h.Client.Run(ctx, script); err != nil {
		return fmt.Errorf("point the kubelet at %s: %w", want, err)
	}
	h.Log.Info("kubelet moved", "from", h.Facts.KubeletServer, "to", want)
	h.Changed(Change{Kind: ChangeFile, What: k})
	h.Changed(Change{Kind: ChangeRestart, What: "kubelet"})
	h.Facts.KubeletServer = want
	return nil
}

// listeningPortsCmd prints, in hex, the port of every TCP socket in LISTEN state.
const listeningPortsCmd = `cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk 'NR>1 && $4=="0A" {split($2,a,":"); print a[2]}'`

// listeningOn returns which of ports have a TCP listener on h.
func listeningOn(ctx context.Context, h *Host, ports ...int) ([]int, error) {
	out, err := h.Client.Run(ctx, listeningPortsCmd+" | sort -u")
	if err != nil {
		return nil, err
	}
	var busy []int
	for _, port := range ports {
		if slices.Contains(strings.Fields(out), fmt.Sprintf("%04X", port)) {
			busy = append(busy, port)
		}
	}
	return busy, nil
}

// staying is the inventory without the hosts this run removes (scale
// --remove): the control planes the proxies forward to from now on.
func (e *Env) staying() *inventory.Inventory {
	inv := *e.Inv
	inv.Hosts = nil
	for _, h := range e.Inv.Hosts {
		if !e.Removing(e.Host(h)) {
			inv.Hosts = append(inv.Hosts, h)
		}
	}
	return &inv
}

// planAPIProxy adds to hp what the run does to the worker's API proxy:
// (re)started when its binary or unit differ, or removed when the cluster
// no longer uses it.
func planAPIProxy(env *Env, h *Host, hp *HostPlan, differ map[string]bool, proxied bool) {
	switch {
	case proxied && (differ[manifests.APIProxyBinaryPath] || differ[manifests.APIProxyUnitPath]):
		hp.Restarts = append(hp.Restarts, RestartPlan{What: manifests.APIProxyUnit, Reason: "its binary or unit changes"})
	case !proxied && !h.IsControlPlane() && h.Facts.APIProxyUnit:
		hp.Restarts = append(hp.Restarts, RestartPlan{What: manifests.APIProxyUnit,
			Reason: "removed once the kubelet uses " + env.Inv.NodeServerURL() + ": the cluster no longer uses the node-local proxy"})
	}
}
