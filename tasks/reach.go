package tasks

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/manifests"
)

// peerPort is one port a host must reach on another.
type peerPort struct {
	from, to *Host
	port     int
	why      string
}

// peerPorts are the ports the hosts must reach on each other: every host the
// API server on each control plane, the control planes each other's etcd, and
// the control planes every kubelet (logs, exec, metrics).
func peerPorts(env *Env) []peerPort {
	var out []peerPort
	hosts := env.Hosts(env.Inv.Hosts)
	for _, to := range hosts {
		for _, from := range hosts {
			if from == to || from.Facts == nil || to.Facts == nil || from.Client == nil || to.Client == nil {
				continue
			}
			if to.IsControlPlane() {
				out = append(out, peerPort{from, to, inventory.DefaultAPIServerPort, "API server"})
				if from.IsControlPlane() {
					out = append(out, peerPort{from, to, manifests.EtcdClientPort, "etcd client"}, peerPort{from, to, manifests.EtcdPeerPort, "etcd peer"})
				}
			}
			if from.IsControlPlane() {
				out = append(out, peerPort{from, to, 10250, "kubelet"})
			}
		}
	}
	return out
}

// fresh reports whether nothing of a cluster runs on the host yet, so kubeforge
// may hold its ports for a moment.
func fresh(f *Facts) bool {
	return !f.KubeletConf && f.KubeletStarted == "" && !f.StaticPods && !f.KubeletActive
}

// reachUnit names the transient unit that holds port open for the test.
func reachUnit(port int) string { return fmt.Sprintf("kubeforge-reach-%d", port) }

// CheckPeerPorts tests that every host really reaches the ports it needs on the
// others. Where nothing listens yet on a fresh host, the port is held open for
// the test by a transient systemd unit running systemd-socket-activate (both
// part of systemd, so on every host kubeforge supports), bound to the host's
// address, limited to two minutes and stopped right after: a refusal then means
// that something between the hosts rejects, not "nothing there yet". A port a
// service of the cluster listens on is probed as it is: a refusal there may be
// the service restarting since the facts were read, so it only warns. With
// --dry-run no port is held.
func CheckPeerPorts(ctx context.Context, env *Env) error {
	ports := peerPorts(env)
	want := map[*Host]map[int]bool{}
	if !env.Opts.DryRun {
		for _, pp := range ports {
			if !pp.to.Facts.Listening[pp.port] && fresh(pp.to.Facts) {
				if want[pp.to] == nil {
					want[pp.to] = map[int]bool{}
				}
				want[pp.to][pp.port] = true
			}
		}
	}
	var mu sync.Mutex
	held := map[*Host]map[int]bool{}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(env.Opts.concurrency())
	for h, ps := range want {
		g.Go(func() error {
			bound, err := holdPorts(gctx, h, sortedPorts(ps))
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			held[h] = bound
			return nil
		})
	}
	err := g.Wait()
	defer func() {
		for h, bound := range held {
			if len(bound) == 0 {
				continue
			}
			var units []string
			for _, p := range sortedPorts(bound) {
				units = append(units, reachUnit(p))
			}
			// Nothing kubeforge started may stay (the units would end by themselves within two minutes).
			if _, err := h.Client.Run(context.WithoutCancel(ctx), "systemctl stop "+strings.Join(units, " ")); err != nil {
				h.Log.Warn("stop the reachability listeners", "units", units, "err", err)
			}
		}
	}()
	if err != nil {
		return err
	}
	for h, ps := range want {
		for p := range ps {
			if _, ok := held[h]; ok && !held[h][p] {
				env.addCheck(CheckResult{Host: h.Name, ID: "PeerPort", Severity: SeverityWarning,
					Message: fmt.Sprintf("could not hold TCP %d open on %s for the test: the routes to it are not checked", p, h.NodeIP()),
					Fix:     "systemd-run and systemd-socket-activate (systemd) are needed on the host for this check"})
			}
		}
	}
	bySource := map[*Host][]peerPort{}
	for _, pp := range ports {
		if pp.to.Facts.Listening[pp.port] || held[pp.to][pp.port] {
			bySource[pp.from] = append(bySource[pp.from], pp)
		}
	}
	type probe struct {
		peerPort
		code string // 0 open, 1 refused, 124 timed out
	}
	var probes []probe
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(env.Opts.concurrency())
	for from, pps := range bySource {
		g.Go(func() error {
			out, err := from.Client.RunInput(gctx, "sh -s", strings.NewReader(probeScript(pps)))
			if err != nil {
				return fmt.Errorf("%s: test reachability: %w", from.Name, err)
			}
			codes := map[int]string{}
			for _, l := range strings.Split(out, "\n") {
				if f := strings.Fields(l); len(f) == 2 {
					if i, err := strconv.Atoi(f[0]); err == nil {
						codes[i] = f[1]
					}
				}
			}
			mu.Lock()
			defer mu.Unlock()
			for i, pp := range pps {
				probes = append(probes, probe{pp, codes[i]})
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	// A refusal of a port a service listened on when the facts were read: if the
	// service still listens, something between the hosts rejects (an error);
	// if it does not, it restarted meanwhile (a warning).
	recheck := map[*Host]map[int]bool{}
	for _, p := range probes {
		if p.code == "1" && !held[p.to][p.port] {
			if recheck[p.to] == nil {
				recheck[p.to] = map[int]bool{}
			}
			recheck[p.to][p.port] = true
		}
	}
	stillListening := map[*Host]map[int]bool{}
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(env.Opts.concurrency())
	for h, ps := range recheck {
		g.Go(func() error {
			listening, err := listeningOn(gctx, h, sortedPorts(ps)...)
			if err != nil {
				return fmt.Errorf("%s: read its listening ports: %w", h.Name, err)
			}
			now := map[int]bool{}
			for _, p := range listening {
				now[p] = true
			}
			mu.Lock()
			defer mu.Unlock()
			stillListening[h] = now
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for _, p := range probes {
		addr := net.JoinHostPort(p.to.NodeIP(), strconv.Itoa(p.port))
		msg := fmt.Sprintf("%s of %s at %s %s", p.why, p.to.Name, addr, peerWord(p.code))
		sev := SeverityError
		if p.code == "1" && !held[p.to][p.port] && !stillListening[p.to][p.port] {
			sev = SeverityWarning
			msg += " (its service stopped listening since the facts were read)"
		}
		env.addCheck(CheckResult{Host: p.from.Name, ID: "PeerPort", Severity: sev, Passed: p.code == "0", Message: msg,
			Fix: "open TCP " + strconv.Itoa(p.port) + " from " + p.from.Name + " (" + p.from.NodeIP() + ") to " + p.to.Name + " (firewall, security group, routes)"})
	}
	return nil
}

// probeBatch is how many probes a host runs at once: a fleet's worth of
// peers must not start a thousand processes together.
const probeBatch = 64

// probeScript tests each of pps from one host with bash's /dev/tcp (exit 0
// open, 1 refused, 124 timed out three times in a row), probeBatch at a
// time, printing "INDEX CODE" lines. It goes on stdin: one command line of a thousand peers'
// probes would pass Linux's limit on one argument (128 KiB).
func probeScript(pps []peerPort) string {
	var script strings.Builder
	for i, pp := range pps {
		// A timeout is tried twice more: a host just restarted, or a loaded one, can miss 3 s once;
		// an answer (open or refused) is final.
		fmt.Fprintf(&script, "( for a in 1 2 3; do timeout 3 bash -c '</dev/tcp/%s/%d' 2>/dev/null; r=$?; [ $r = 124 ] || break; done; echo \"%d $r\" ) &\n",
			pp.to.NodeIP(), pp.port, i)
		if (i+1)%probeBatch == 0 {
			script.WriteString("wait\n")
		}
	}
	script.WriteString("wait\n")
	return script.String()
}

func holdPorts(ctx context.Context, h *Host, ports []int) (map[int]bool, error) {
	var script strings.Builder
	script.WriteString("command -v systemd-run >/dev/null && command -v systemd-socket-activate >/dev/null || exit 0\n")
	for _, p := range ports {
		addr := net.JoinHostPort(h.NodeIP(), strconv.Itoa(p))
		fmt.Fprintf(&script, "systemd-run --quiet --collect --unit %s -p RuntimeMaxSec=120 systemd-socket-activate -l %s -a true >/dev/null 2>&1\n", reachUnit(p), addr)
	}
	// Report each port once it listens (at most 5 s).
	var hex []string
	for _, p := range ports {
		hex = append(hex, fmt.Sprintf("%04X", p))
	}
	fmt.Fprintf(&script, `left="%s"
for i in $(seq 50); do
  next=""
  for p in $left; do
    if awk -v p=$p 'NR>1 && $4=="0A" {split($2,a,":"); if (a[2]==p) f=1} END {exit !f}' /proc/net/tcp /proc/net/tcp6 2>/dev/null; then echo "bound $p"; else next="$next $p"; fi
  done
  left=$next
  [ -z "$left" ] && break
  sleep 0.1
done
`, strings.Join(hex, " "))
	out, err := h.Client.Run(ctx, script.String())
	if err != nil {
		return nil, fmt.Errorf("%s: hold ports open for the reachability test: %w", h.Name, err)
	}
	bound := map[int]bool{}
	for _, l := range strings.Split(out, "\n") {
		if x, ok := strings.CutPrefix(strings.TrimSpace(l), "bound "); ok {
			if p, err := strconv.ParseInt(x, 16, 32); err == nil {
				bound[int(p)] = true
			}
		}
	}
	return bound, nil
}

func sortedPorts(m map[int]bool) []int {
	out := make([]int, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	sort.Ints(out)
	return out
}

func peerWord(code string) string {
	switch code {
	case "0":
		return "reachable"
	case "1":
		return "refused: something between the hosts rejects it"
	case "124":
		return "timed out: something between the hosts drops it"
	}
	return "unreachable (exit " + code + ")"
}
