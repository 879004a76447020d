package tasks

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kubeforge/kubeforge/manifests"
)

// kubeletInputs are the files kubeforge writes that the kubelet reads at
// start: a change to any of them needs a restart. On a worker the kubelet
// writes kubelet.conf itself (TLS bootstrap), so it is an input only where
// kubeforge writes it: on control planes. bootstrap-kubelet.conf is none: a
// join restarts the kubelet anyway, and it is deleted once the kubelet joined.
func kubeletInputs(h *Host) []string {
	in := []string{
		"/usr/bin/kubelet", manifests.KubeletConfigPath, manifests.KubeletInstancePath, manifests.KubeletFlagsPath,
		manifests.KubeletUnitPath, manifests.KubeletDropInPath,
		"/etc/kubernetes/pki/ca.crt",
	}
	if h.IsControlPlane() {
		in = append(in, "/etc/kubernetes/kubelet.conf")
	}
	return in
}

// kubeletStampPath holds the fingerprint of the kubelet's inputs taken when
// kubeforge last (re)started it. It is written after the restart, so a run
// that dies between writing an input and restarting leaves a stale stamp and
// the next run restarts the kubelet.
const kubeletStampPath = "/var/lib/kubeforge/kubelet.started"

// kubeletVersionPath caches `kubelet --version` for the facts: the binary's
// size, ctime and inode, then its output, written when kubeforge starts the
// kubelet. The facts use it only while the binary is still that file.
const kubeletVersionPath = "/var/lib/kubeforge/kubelet.version"

// kubeletFingerprint is a shell command printing a digest of h's kubelet
// inputs' names, sizes, ctimes and inodes: every atomic write (rename over)
// changes it.
func kubeletFingerprint(h *Host) string {
	return "stat -c '%n %s %Z %i' " + strings.Join(kubeletInputs(h), " ") + " 2>/dev/null | sha256sum | cut -c1-64"
}

// stampIsFingerprint is a shell test, after f=$(kubeletFingerprint(h)): the
// kubelet was last started on the inputs the host holds now.
const stampIsFingerprint = `[ "$(cat ` + kubeletStampPath + ` 2>/dev/null)" = "$f" ]`

// isKubeletInput reports whether a pushed path is one of h's kubelet inputs.
func isKubeletInput(h *Host, p string) bool {
	return slices.Contains(kubeletInputs(h), p)
}

// kubeletRestartReason says why the kubelet on h must (re)start, judged from
// the host's own state: it is not running, or its inputs are not those it was
// started with (the fingerprint differs from the stamp). "" means it is fine.
func kubeletRestartReason(f *Facts) string {
	switch {
	case f == nil:
		return ""
	case !f.KubeletActive:
		return "not running"
	case f.KubeletStarted == "":
		return "never started by kubeforge"
	case f.KubeletStarted != f.KubeletInputs:
		return "inputs changed since it started"
	}
	return ""
}

// startKubelet (re)starts the kubelet when the host says it must: it is not
// active, or the fingerprint of its inputs differs from the one recorded at
// its last start. The decision is made on the host in the same command, so
// it holds after a crash at any point of an earlier run.
func startKubelet(ctx context.Context, env *Env, h *Host) error {
	if !kubeletMayRestart(env, h) {
		h.Log.Info("unchanged", "what", "kubelet (as planned)")
		return nil
	}
	script := `set -e
f=$(` + kubeletFingerprint(h) + `)
if systemctl is-active -q kubelet && ` + stampIsFingerprint + `; then echo unchanged; exit 0; fi
mkdir -p ` + dirOf(kubeletStampPath) + `
# The binary's version, for the facts of later runs, read while the kubelet restarts.
( k=$(stat -c '%s %.9Z %i' /usr/bin/kubelet) && v=$(/usr/bin/kubelet --version) &&
  printf '%s\n%s\n' "$k" "$v" > ` + kubeletVersionPath + `.tmp && mv -f ` + kubeletVersionPath + `.tmp ` + kubeletVersionPath + ` ) >/dev/null 2>&1 </dev/null &
systemctl daemon-reload
systemctl --no-reload enable -q kubelet
systemctl restart kubelet
t=$(date +%s)
printf '%s\n' "$f" > ` + kubeletStampPath + `.tmp && mv -f ` + kubeletStampPath + `.tmp ` + kubeletStampPath + `
wait
echo "restarted $t"`
	out, err := h.Client.Run(ctx, script)
	if err != nil {
		return fmt.Errorf("start kubelet: %w", err)
	}
	if strings.TrimSpace(out) == "unchanged" {
		h.Log.Info("unchanged", "what", "kubelet")
		return nil
	}
	h.Changed(Change{Kind: ChangeRestart, What: "kubelet"})
	if sec, err := strconv.ParseInt(strings.TrimPrefix(strings.TrimSpace(out), "restarted "), 10, 64); err == nil {
		h.mu.Lock()
		h.kubeletStarted = time.Unix(sec, 0)
		h.mu.Unlock()
	}
	if h.Facts != nil {
		h.Facts.KubeletActive = true
	}
	return nil
}

// kubeletStartedAt is when this run restarted h's kubelet, by h's clock;
// zero when it did not.
func (h *Host) kubeletStartedAt() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.kubeletStarted
}

// kubeletMayRestart: false only when the plan of this run found the kubelet
// running on the inputs it started with, it was not stopped since, and this
// run wrote none of them;
// otherwise the host decides (startKubelet's script).
func kubeletMayRestart(env *Env, h *Host) bool {
	hp := env.Plan.hostPlan(h.Name)
	if hp == nil || h.Facts != nil && !h.Facts.KubeletActive {
		return true // no plan, or the kubelet is known stopped (an upgrade stops it)
	}
	for _, r := range hp.Restarts {
		if r.What == "kubelet" {
			return true
		}
	}
	for _, c := range h.Changes() {
		if c.Kind == ChangeFile && isKubeletInput(h, c.What) {
			return true
		}
	}
	return false
}

func dirOf(p string) string { return p[:strings.LastIndex(p, "/")] }
