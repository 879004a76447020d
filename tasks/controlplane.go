package tasks

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubeforge/kubeforge/internal/nodefile"
	"github.com/kubeforge/kubeforge/manifests"
	"github.com/kubeforge/kubeforge/ssh"
)

// InitControlPlane pushes the first control plane's whole tree (PKI,
// kubeconfigs, etcd and control-plane static pods, kubelet files), starts
// kubelet and waits until the API server is healthy and ready.
func InitControlPlane(ctx context.Context, env *Env, h *Host) error {
	if err := installNode(ctx, env, h); err != nil {
		return err
	}
	return waitAPIServer(ctx, env, h)
}

// installNode pushes h's rendered files plus extra, and (re)starts kubelet
// when one of its inputs changed.
func installNode(ctx context.Context, env *Env, h *Host, extra ...nodefile.File) error {
	files, err := env.NodeFiles(h)
	if err != nil {
		return err
	}
	if h.IsControlPlane() && (h.Facts == nil || !h.Facts.EtcdData) {
		// As kubeadm: etcd's data directory is private (0700), made before etcd
		// starts (the kubelet would make it 0755).
		dir := manifests.EtcdDataDirOf(env.Inv)
		if _, err := h.Client.Run(ctx, "[ -d "+ssh.Quote(dir)+" ] || install -d -m 0700 "+ssh.Quote(dir)); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
	}
	before := staticPodProcess(ctx, h, "kube-apiserver")
	// The static pods' manifests go last, and under the kubelet that will run
	// them: written under a kubelet about to restart, they stop etcd at once,
	// and the restarted kubelet waits for its Node, which the API server
	// cannot serve without etcd, before it starts the new one (minutes on a
	// cluster's only control plane, seen after `kubeadm upgrade apply`).
	inputs, pods := splitStaticPods(append(files, extra...))
	changed, err := push(ctx, h, inputs)
	if err != nil {
		return err
	}
	if len(pods) > 0 {
		if err := stopKubeletToRestart(ctx, env, h); err != nil {
			return err
		}
		c, err := push(ctx, h, pods)
		if err != nil {
			return err
		}
		changed = append(changed, c...)
	}
	if err := startKubelet(ctx, env, h); err != nil {
		return err
	}
	if before != "" && slices.Contains(changed, path.Join(manifests.ManifestsDir, "kube-apiserver.yaml")) {
		return waitReplaced(ctx, h, "kube-apiserver", before, env.waitTimeout())
	}
	return nil
}

// splitStaticPods separates the static pods' manifests from the other files
// (the inputs those pods and the kubelet read).
func splitStaticPods(files []nodefile.File) (inputs, pods []nodefile.File) {
	for _, f := range files {
		if path.Dir(f.Path) == manifests.ManifestsDir {
			pods = append(pods, f)
		} else {
			inputs = append(inputs, f)
		}
	}
	return inputs, pods
}

// stopKubeletToRestart stops h's running kubelet when the host says it is
// to restart (its inputs are not those it started with: startKubelet's
// rule), so that new static pod manifests are read once, by the new kubelet.
// A kubelet that stays is left running.
func stopKubeletToRestart(ctx context.Context, env *Env, h *Host) error {
	if h.Facts == nil || !h.Facts.KubeletActive || !kubeletMayRestart(env, h) {
		return nil
	}
	out, err := h.Client.Run(ctx, `f=$(`+kubeletFingerprint(h)+`)
if `+stampIsFingerprint+`; then echo same; exit 0; fi
systemctl stop kubelet && echo stopped`)
	if err != nil {
		return fmt.Errorf("stop the kubelet before its restart: %w", err)
	}
	if strings.TrimSpace(out) == "stopped" {
		h.Log.Info("kubelet stopped", "why", "its inputs changed; the static pods' manifests follow")
		h.Facts.KubeletActive = false
	}
	return nil
}

// staticPodProcess identifies h's running process of a static pod's program
// (kube-apiserver, etcd): its PID and start time, read from /proc (no
// runtime CLI needed); "" when none runs.
func staticPodProcess(ctx context.Context, h *Host, comm string) string {
	if !h.IsControlPlane() || h.Facts == nil || !h.Facts.KubeletActive {
		return ""
	}
	return runningProcess(ctx, h, comm)
}

// runningProcess is staticPodProcess whatever the kubelet's state: a static
// pod's containers outlive a stopped kubelet.
func runningProcess(ctx context.Context, h *Host, comm string) string {
	out, err := h.Client.Run(ctx, `for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = `+comm+` ] && echo "${p#/proc/} $(cut -d' ' -f22 $p/stat 2>/dev/null)"; done | sort | head -1`)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// waitReplaced waits until the kubelet has replaced the comm process that
// ran before its manifest changed (it notices the file within about 20 s),
// so the readiness wait that follows sees the new one and not the old one
// about to stop.
func waitReplaced(ctx context.Context, h *Host, comm, before string, timeout time.Duration) error {
	err := wait.PollUntilContextTimeout(ctx, time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		now := staticPodProcess(ctx, h, comm)
		return now != "" && now != before, nil
	})
	if err != nil {
		return fmt.Errorf("the kubelet on %s did not replace the %s process within %s after its manifest changed: %w\n%s", h.Name, comm, timeout, err, diagnoseControlPlane(ctx, h))
	}
	h.Log.Info("process replaced", "program", comm, "old", before)
	return nil
}

// waitAPIServer polls /readyz on h's API server through the SSH tunnel. On
// timeout it reports which static pods did not come up and their last logs.
func waitAPIServer(ctx context.Context, env *Env, h *Host) error {
	super, err := env.PKI.SuperAdminKubeconfig(env.Inv.Cluster.Name, env.serverURL())
	if err != nil {
		return fmt.Errorf("make super-admin kubeconfig: %w", err)
	}
	kc, err := hostClient(super, h, 5*time.Second)
	if err != nil {
		return err
	}
	timeout := env.Opts.WaitTimeout
	if timeout == 0 {
		timeout = 5 * time.Minute
	}
	start := time.Now()
	var last error
	err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		for _, p := range []string{"/healthz", "/readyz"} {
			body, err := kc.Discovery().RESTClient().Get().AbsPath(p).DoRaw(ctx)
			if err != nil {
				last = fmt.Errorf("%s: %w", p, err)
				return false, nil
			}
			if strings.TrimSpace(string(body)) != "ok" {
				last = fmt.Errorf("%s: %s", p, body)
				return false, nil
			}
		}
		return true, nil
	})
	if err == nil {
		h.Log.Info("API server ready", "after", time.Since(start).Round(time.Millisecond))
		return nil
	}
	if ctx.Err() != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	diag := diagnoseControlPlane(ctx, h)
	return fmt.Errorf("API server on %s not ready after %s (last: %v)\n%s\nnext: look at `journalctl -u kubelet` on %s, fix, and run up again",
		h.Name, timeout, last, diag, h.Name)
}

// diagnoseControlPlane tells which static pods are not running and shows the
// end of their logs and of the kubelet's journal.
func diagnoseControlPlane(ctx context.Context, h *Host) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
	defer cancel()
	script := `state=$(systemctl is-active kubelet 2>&1); echo "kubelet: $state"
for c in etcd kube-apiserver kube-controller-manager kube-scheduler; do
  d=$(ls -d /var/log/pods/kube-system_${c}-* 2>/dev/null | head -1)
  if [ -z "$d" ]; then echo "$c: no pod started (image missing, kubelet not running, or manifest rejected)"; continue; fi
  f=$(ls -t "$d"/*/*.log 2>/dev/null | head -1)
  echo "$c: last log lines ($f):"; tail -n 5 "$f" 2>/dev/null | cut -c1-300 | sed 's/^/    /'
done
echo "kubelet errors (journal):"
journalctl -u kubelet --no-pager -n 300 -o cat 2>/dev/null | grep -E '^E[0-9]{4} |Failed|failed' | grep -vE 'mirror pod|not found|connection refused|Unable to write event' |
  sed -E 's/^E[0-9]{4} [0-9:.]+ +[0-9]+ //' | cut -c1-240 | awk '!seen[$0]++' | tail -n 6 | sed 's/^/    /'`
	out, err := h.Client.Run(ctx, script)
	if err != nil {
		return "(diagnostics failed: " + err.Error() + ")"
	}
	return out
}
