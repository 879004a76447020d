//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kubeforge/kubeforge/playbooks"
	"github.com/kubeforge/kubeforge/test/harnesslib"
)

// interruption says where to stop a run: when the event of type Event for
// Step (and Host, if given) appears on the --output json stream, wait Delay,
// then send Signal.
type interruption struct {
	Step   string
	Event  string // "step-end" (a step boundary) or "host-start" (mid-step)
	Host   string
	Delay  time.Duration
	Signal syscall.Signal
}

func (i interruption) String() string {
	sig := "SIGINT"
	if i.Signal == syscall.SIGKILL {
		sig = "SIGKILL"
	}
	where := "after " + i.Step
	if i.Event == "host-start" {
		where = fmt.Sprintf("%s into %s on %s", i.Delay, i.Step, i.Host)
	}
	return sig + " " + where
}

// upInterrupted runs `kubeforge up` and stops it as i says. It reports
// whether the interruption point was reached (a run may finish first).
func upInterrupted(ctx context.Context, t *testing.T, c *harnesslib.Cluster, state string, i interruption) bool {
	t.Helper()
	return interrupted(ctx, t, i, "up", "-i", c.Inventory, "--state-dir", state)
}

// interrupted runs kubeforge with args and stops it as i says.
func interrupted(ctx context.Context, t *testing.T, i interruption, args ...string) bool {
	t.Helper()
	cmd := exec.CommandContext(ctx, kubeforgeBin(t), append(args, "--output", "json")...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reached := false
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e struct{ Type, Step, Host string }
		if json.Unmarshal(sc.Bytes(), &e) != nil || reached {
			continue
		}
		if e.Type == i.Event && e.Step == i.Step && (i.Host == "" || e.Host == i.Host) {
			reached = true
			time.Sleep(i.Delay)
			_ = cmd.Process.Signal(i.Signal)
		}
	}
	err = cmd.Wait()
	t.Logf("%s interrupted (%s): reached=%v exit=%v\n%s", args[0], i, reached, err, stderr.String())
	if reached && i.Signal == syscall.SIGINT && err == nil {
		t.Logf("%s finished before SIGINT took effect (it was in its last step)", args[0])
	}
	return reached
}

// checkWhole asserts the cluster is whole: every inventory host a Ready node,
// etcd with every control plane as a voter and no learner, one cluster ID.
func checkWhole(ctx context.Context, t *testing.T, c *harnesslib.Cluster, state string, cps int) {
	t.Helper()
	checkNodesWhole(ctx, t, state, c.Nodes, cps)
}

// checkNodesWhole: each of nodes Ready; the first cps of them etcd members,
// all voters, of one cluster.
func checkNodesWhole(ctx context.Context, t *testing.T, state string, nodes []harnesslib.Node, cps int) {
	t.Helper()
	ready := readyNodes(ctx, clientFor(t, state))
	for _, n := range nodes {
		if !ready[n.Name] {
			t.Errorf("%s is not a Ready node: %v", n.Name, ready)
		}
	}
	ids := map[uint64]bool{}
	for _, n := range nodes[:cps] {
		voters, learners, id := etcdMembership(ctx, t, state, n)
		ids[id] = true
		if voters != cps || learners != 0 {
			t.Errorf("etcd on %s: %d voters, %d learners; want %d and 0", n.Name, voters, learners, cps)
		}
	}
	if len(ids) != 1 {
		t.Errorf("etcd cluster IDs %v: want one", ids)
	}
}

// interruptionsOf lists the interruption points of a playbook: SIGINT and
// SIGKILL after every step, and SIGKILL in the middle of the joins and of the
// runtime's install.
func interruptionsOf(pb playbooks.Playbook, joinCP, joinWorker string) []interruption {
	var out []interruption
	for _, n := range pb.Names() {
		if n == pb.Names()[len(pb.Names())-1] {
			continue // after the last step there is nothing left to interrupt
		}
		for _, s := range []syscall.Signal{syscall.SIGINT, syscall.SIGKILL} {
			out = append(out, interruption{Step: n, Event: "step-end", Signal: s})
		}
	}
	if joinCP != "" {
		out = append(out, interruption{Step: "control-plane/join", Event: "host-start", Host: joinCP, Delay: 3 * time.Second, Signal: syscall.SIGKILL})
	}
	out = append(out, interruption{Step: "workers/join", Event: "host-start", Host: joinWorker, Delay: 1500 * time.Millisecond, Signal: syscall.SIGKILL})
	// In the middle of the runtime's upload to a bare host (the marker is written, the binaries are not).
	out = append(out, interruption{Step: "runtime/install", Event: "host-start", Host: joinWorker, Delay: 700 * time.Millisecond, Signal: syscall.SIGKILL})
	out = append(out, midFetch(joinWorker))
	return out
}

// midFetch is a SIGKILL of kubeforge while a worker fetches the artifacts
// from its peer: the peer server must exit with its SSH session, and the
// half-fetched file must not be used.
func midFetch(worker string) interruption {
	return interruption{Step: "artifacts/push", Event: "host-start", Host: worker, Delay: 400 * time.Millisecond, Signal: syscall.SIGKILL}
}

// checkNoPeerServer waits (10 s: sshd ends the sessions of a dead client)
// until no host runs a peer server or listens for one.
func checkNoPeerServer(ctx context.Context, t *testing.T, c *harnesslib.Cluster) {
	t.Helper()
	for _, n := range c.Nodes {
		var got string
		for i := 0; i < 20; i++ {
			got = strings.TrimSpace(MustSSH(ctx, t, c, n, "root", "{ pgrep -fa '[p]eer-serve'; ss -Hltnp | grep kubeforge; } || true"))
			if got == "" {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if got != "" {
			t.Errorf("%s still serves after kubeforge was killed:\n%s", n.Name, got)
		}
	}
}

// TestInterruptedUpConverges stops the first `up` of a cluster at a point,
// then runs `up` again: it must exit 0 and leave the cluster whole. CI runs a
// representative subset on 1+2; KUBEFORGE_INTERRUPT_MATRIX=1 (make
// e2e-interrupt-matrix) runs every step boundary with SIGINT and SIGKILL and
// the mid-join points and the middle of the runtime's install, on 1+2 and on
// 3+1 (KUBEFORGE_INTERRUPT_SHAPE=1+2|3+1 narrows it). Between cases the hosts
// are reset with --purge (bare again) and the state dir is new.
func TestInterruptedUpConverges(t *testing.T) {
	matrix := os.Getenv("KUBEFORGE_INTERRUPT_MATRIX") == "1"
	shapes := []struct {
		name          string
		prefix, net   string
		nodes, cps    int
		joinCP, joinW string
	}{
		{"1+2", "kfint", "172.31.238.0/24", 3, 1, "", "node2"},
		{"3+1", "kfint3", "172.31.237.0/24", 4, 3, "node2", "node4"},
	}
	for _, sh := range shapes {
		if only := os.Getenv("KUBEFORGE_INTERRUPT_SHAPE"); only != "" && only != sh.name {
			continue
		}
		if !matrix && sh.name != "1+2" {
			continue // CI: the 3+1 mid-join case runs in TestThreeControlPlanes on its first up
		}
		t.Run(sh.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 6*time.Hour)
			defer cancel()
			c, _ := startCluster(ctx, t, sh.prefix, sh.net, sh.nodes, sh.cps)
			points := interruptionsOf(playbooks.Up(nil), sh.joinCP, sh.joinW)
			if !matrix {
				// CI's subset (about 3.5 min each): one kill before, at and
				// after the control plane's init. The matrix (make
				// e2e-interrupt-matrix) has every step boundary with SIGINT
				// and SIGKILL and the middle of the artifacts' fetch.
				points = []interruption{
					{Step: "runtime/install", Event: "host-start", Host: sh.joinW, Delay: 700 * time.Millisecond, Signal: syscall.SIGKILL},
					{Step: "control-plane/init", Event: "step-end", Signal: syscall.SIGKILL},
					{Step: "workers/join", Event: "host-start", Host: sh.joinW, Delay: 1500 * time.Millisecond, Signal: syscall.SIGKILL},
				}
			}
			// KUBEFORGE_INTERRUPT_FROM=k resumes a matrix at its k-th point (0-based).
			from, _ := strconv.Atoi(os.Getenv("KUBEFORGE_INTERRUPT_FROM"))
			var failed []string
			for k, p := range points {
				if k < from {
					continue
				}
				ok := t.Run(strings.NewReplacer("/", "_", " ", "_").Replace(p.String()), func(t *testing.T) {
					state := fmt.Sprintf("%s/state-%d", c.Dir, k)
					// Whatever happens, the next case starts from reset, bare hosts (--purge removes the runtime).
					defer func() {
						if code, _ := kubeforge(ctx, t, "reset", "-i", c.Inventory, "--state-dir", state, "--yes", "--purge"); code != 0 {
							t.Errorf("reset exited %d", code)
						}
					}()
					if !upInterrupted(ctx, t, c, state, p) {
						t.Fatalf("the run never reached %s", p)
					}
					if p.Step == "artifacts/push" {
						checkNoPeerServer(ctx, t, c)
					}
					start := time.Now()
					mustUp(ctx, t, c, state)
					t.Logf("converged after %s in %s", p, time.Since(start).Round(time.Millisecond))
					checkWhole(ctx, t, c, state, sh.cps)
					// A converged cluster plans nothing.
					if code, out := kubeforge(ctx, t, "up", "-i", c.Inventory, "--state-dir", state, "--dry-run"); code != 0 || !strings.Contains(out, "The plan is empty") {
						t.Errorf("after converging, the plan is not empty (exit %d)", code)
					}
				})
				if !ok {
					failed = append(failed, p.String())
				}
			}
			t.Logf("%s: %d interruption points, %d failed: %v", sh.name, len(points), len(failed), failed)
		})
	}
}
