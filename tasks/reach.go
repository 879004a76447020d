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
	return !f.KubeletConf && f.KubeletStarted == "" && !f.StaticPods
}

// CheckPeerPorts tests that every host really reaches the ports it needs on the
// others. Where nothing listens yet on a fresh host, a listener is held open
// for the test with systemd-socket-activate (part of systemd, so on every
// host kubeforge supports), bound to the host's address and stopped right
// after: "refused" then means a firewall rejects, not "nothing there yet".
func CheckPeerPorts(ctx context.Context, env *Env) error {
	ports := peerPorts(env)
	listen := map[*Host]map[int]bool{}
	for _, pp := range ports {
		if !pp.to.Facts.Listening[pp.port] && fresh(pp.to.Facts) {
			if listen[pp.to] == nil {
				listen[pp.to] = map[int]bool{}
			}
			listen[pp.to][pp.port] = true
		}
	}
	// Start the listeners; a host without systemd-socket-activate keeps the
	// weaker test (a refusal still proves the route).
	var mu sync.Mutex
	noListener := map[*Host]bool{}
	started := map[*Host]string{} // pids to stop
	g, gctx := errgroup.WithContext(ctx)
	for h, ps := range listen {
		g.Go(func() error {
			var script strings.Builder
			script.WriteString("command -v systemd-socket-activate >/dev/null || { echo none; exit 0; }\n")
			var want []string
			for _, p := range sortedPorts(ps) {
				addr := net.JoinHostPort(h.NodeIP(), strconv.Itoa(p))
				fmt.Fprintf(&script, "nohup timeout 60 systemd-socket-activate -l %s -a true >/dev/null 2>&1 & echo pid $!\n", addr)
				want = append(want, fmt.Sprintf("%04X", p))
			}
			// Wait until they listen (at most 5 s).
			fmt.Fprintf(&script, "for i in $(seq 50); do n=0; for p in %s; do awk -v p=$p 'NR>1 && $4==\"0A\" {split($2,a,\":\"); if (a[2]==p) f=1} END {exit !f}' /proc/net/tcp && n=$((n+1)); done; [ $n -eq %d ] && break; sleep 0.1; done\n", strings.Join(want, " "), len(want))
			out, err := h.Client.Run(gctx, script.String())
			if err != nil {
				return fmt.Errorf("%s: hold ports open for the reachability test: %w", h.Name, err)
			}
			mu.Lock()
			defer mu.Unlock()
			if strings.TrimSpace(out) == "none" {
				noListener[h] = true
				return nil
			}
			var pids []string
			for _, l := range strings.Split(out, "\n") {
				if pid, ok := strings.CutPrefix(l, "pid "); ok {
					pids = append(pids, strings.TrimSpace(pid))
				}
			}
			started[h] = strings.Join(pids, " ")
			return nil
		})
	}
	err := g.Wait()
	defer func() {
		for h, pids := range started {
			// Nothing kubeforge started may stay: stop the listeners (timeout would, within a minute).
			_, _ = h.Client.Run(context.WithoutCancel(ctx), "kill "+pids+" 2>/dev/null; true")
		}
	}()
	if err != nil {
		return err
	}
	bySource := map[*Host][]peerPort{}
	for _, pp := range ports {
		if pp.to.Facts.Listening[pp.port] || listen[pp.to][pp.port] && !noListener[pp.to] {
			bySource[pp.from] = append(bySource[pp.from], pp)
		}
	}
	g, gctx = errgroup.WithContext(ctx)
	for from, pps := range bySource {
		g.Go(func() error {
			var script strings.Builder
			for _, pp := range pps {
				// bash's /dev/tcp: exit 0 open, 1 refused, 124 timed out.
				fmt.Fprintf(&script, "timeout 3 bash -c '</dev/tcp/%s/%d' 2>/dev/null; echo $?\n", pp.to.NodeIP(), pp.port)
			}
			out, err := from.Client.Run(gctx, script.String())
			if err != nil {
				return fmt.Errorf("%s: test reachability: %w", from.Name, err)
			}
			codes := strings.Fields(out)
			for i, pp := range pps {
				code := "?"
				if i < len(codes) {
					code = codes[i]
				}
				addr := net.JoinHostPort(pp.to.NodeIP(), strconv.Itoa(pp.port))
				msg := fmt.Sprintf("%s of %s at %s %s", pp.why, pp.to.Name, addr, peerWord(code))
				env.addCheck(CheckResult{Host: from.Name, ID: "PeerPort", Severity: SeverityError, Passed: code == "0", Message: msg,
					Fix: "open TCP " + strconv.Itoa(pp.port) + " from " + from.Name + " (" + from.NodeIP() + ") to " + pp.to.Name + " (firewall, security group, routes)"})
			}
			return nil
		})
	}
	return g.Wait()
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
