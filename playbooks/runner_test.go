package playbooks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/tasks"
)

func testInventory(n int) *inventory.Inventory {
	inv := &inventory.Inventory{Cluster: inventory.Cluster{Name: "t"}}
	for i := 0; i < n; i++ {
		role := inventory.RoleWorker
		if i == 0 {
			role = inventory.RoleControlPlane
		}
		inv.Hosts = append(inv.Hosts, &inventory.Host{Name: fmt.Sprintf("h%d", i), Address: fmt.Sprintf("10.0.0.%d", i+1), Roles: []inventory.Role{role}})
	}
	return inv
}

func testEnv(n int) *tasks.Env {
	return tasks.NewEnv(testInventory(n), "", slog.New(slog.NewTextHandler(io.Discard, nil)), tasks.Options{})
}

// recorder is an EventSink that keeps every event.
type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) Event(e Event) { r.mu.Lock(); r.events = append(r.events, e); r.mu.Unlock() }

func TestRunnerRunsStepsInOrder(t *testing.T) {
	var mu sync.Mutex
	var got []string
	mark := func(name string) tasks.HostFunc {
		return func(_ context.Context, _ *tasks.Env, h *tasks.Host) error {
			mu.Lock()
			got = append(got, name+":"+h.Name)
			mu.Unlock()
			return nil
		}
	}
	pb := Playbook{Name: "p", Steps: []Step{
		{Name: "a", Hosts: inventory.SelectAll, Run: mark("a")},
		{Name: "b", Local: func(context.Context, *tasks.Env) error { mu.Lock(); got = append(got, "b"); mu.Unlock(); return nil }},
		{Name: "c", Hosts: inventory.SelectWorkers, Run: mark("c")},
	}}
	if err := (&Runner{}).Run(context.Background(), testEnv(3), pb); err != nil {
		t.Fatal(err)
	}
	// Within a parallel step the order of hosts is free; across steps it is fixed.
	idx := func(s string) int {
		for i, g := range got {
			if g == s {
				return i
			}
		}
		t.Fatalf("%s did not run; ran %v", s, got)
		return -1
	}
	if len(got) != 6 {
		t.Fatalf("ran %v; want 3 a, 1 b, 2 c", got)
	}
	for _, h := range []string{"h0", "h1", "h2"} {
		if idx("a:"+h) > idx("b") {
			t.Errorf("a:%s ran after b: %v", h, got)
		}
	}
	if idx("c:h1") < idx("b") || idx("c:h2") < idx("b") {
		t.Errorf("c ran before b: %v", got)
	}
}

func TestRunnerRespectsConcurrencyLimit(t *testing.T) {
	for _, tc := range []struct {
		name   string
		limit  int
		serial bool
		want   int32
	}{
		{"limit 3 of 10", 3, false, 3},
		{"limit 1", 1, false, 1},
		{"serial ignores limit", 8, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cur, peak atomic.Int32
			run := func(context.Context, *tasks.Env, *tasks.Host) error {
				n := cur.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				time.Sleep(20 * time.Millisecond)
				cur.Add(-1)
				return nil
			}
			pb := Playbook{Name: "p", Steps: []Step{{Name: "s", Hosts: inventory.SelectAll, Serial: tc.serial, Run: run}}}
			if err := (&Runner{Concurrency: tc.limit}).Run(context.Background(), testEnv(10), pb); err != nil {
				t.Fatal(err)
			}
			if peak.Load() != tc.want {
				t.Errorf("peak concurrency %d; want %d", peak.Load(), tc.want)
			}
		})
	}
}

func TestRunnerJoinsHostErrorsAndStops(t *testing.T) {
	boom := errors.New("boom")
	ranNext := false
	pb := Playbook{Name: "p", Steps: []Step{
		{Name: "fail", Hosts: inventory.SelectAll, Run: func(_ context.Context, _ *tasks.Env, h *tasks.Host) error {
			if h.Name == "h0" {
				return nil
			}
			return fmt.Errorf("do %s: %w", h.Name, boom)
		}},
		{Name: "next", Local: func(context.Context, *tasks.Env) error { ranNext = true; return nil }},
	}}
	err := (&Runner{}).Run(context.Background(), testEnv(3), pb)
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v; want it to wrap boom", err)
	}
	if ranNext {
		t.Error("the step after a failed step ran")
	}
	var hosts []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		for _, he := range e.(interface{ Unwrap() []error }).Unwrap() {
			var h *HostError
			if !errors.As(he, &h) {
				t.Fatalf("%v is not a HostError", he)
			}
			if h.Step != "fail" {
				t.Errorf("HostError.Step = %q", h.Step)
			}
			hosts = append(hosts, h.Host)
		}
	}
	if strings.Join(hosts, ",") != "h1,h2" {
		t.Errorf("failed hosts %v; want h1,h2", hosts)
	}
}

func TestRunnerSerialStopsAtFirstFailure(t *testing.T) {
	var ran []string
	pb := Playbook{Name: "p", Steps: []Step{{Name: "s", Hosts: inventory.SelectAll, Serial: true,
		Run: func(_ context.Context, _ *tasks.Env, h *tasks.Host) error {
			ran = append(ran, h.Name)
			if h.Name == "h1" {
				return errors.New("no")
			}
			return nil
		}}}}
	rec := &recorder{}
	err := (&Runner{Events: rec}).Run(context.Background(), testEnv(4), pb)
	if err == nil || strings.Join(ran, ",") != "h0,h1" {
		t.Fatalf("ran %v, err %v; want h0,h1 then stop", ran, err)
	}
	skipped := 0
	for _, e := range rec.events {
		if e.Type == EventHostEnd && e.Result == ResultSkipped {
			skipped++
		}
	}
	if skipped != 2 {
		t.Errorf("%d hosts reported skipped; want 2", skipped)
	}
}

func TestRunnerBestEffortContinuesWithoutFailedHosts(t *testing.T) {
	var mu sync.Mutex
	second := map[string]bool{}
	pb := Playbook{Name: "p", BestEffort: true, Steps: []Step{
		{Name: "first", Hosts: inventory.SelectAll, Run: func(_ context.Context, _ *tasks.Env, h *tasks.Host) error {
			if h.Name == "h1" {
				return errors.New("unreachable")
			}
			return nil
		}},
		{Name: "second", Hosts: inventory.SelectAll, Run: func(_ context.Context, _ *tasks.Env, h *tasks.Host) error {
			mu.Lock()
			second[h.Name] = true
			mu.Unlock()
			return nil
		}},
	}}
	err := (&Runner{}).Run(context.Background(), testEnv(3), pb)
	if err == nil {
		t.Fatal("no error for the failed host")
	}
	if !second["h0"] || !second["h2"] || second["h1"] {
		t.Errorf("second step ran on %v; want h0 and h2 only", second)
	}
}

func TestRunnerCancellationStopsRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{}, 10)
	ranAfter := false
	pb := Playbook{Name: "p", Steps: []Step{
		{Name: "wait", Hosts: inventory.SelectAll, Run: func(ctx context.Context, _ *tasks.Env, _ *tasks.Host) error {
			started <- struct{}{}
			<-ctx.Done()
			return ctx.Err()
		}},
		{Name: "after", Local: func(context.Context, *tasks.Env) error { ranAfter = true; return nil }},
	}}
	go func() { <-started; cancel() }()
	done := make(chan error)
	go func() { done <- (&Runner{}).Run(ctx, testEnv(2), pb) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v; want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop after cancel")
	}
	if ranAfter {
		t.Error("a step ran after cancellation")
	}
}

func TestStepTimeoutIsADeadline(t *testing.T) {
	pb := Playbook{Name: "p", Steps: []Step{{Name: "slow", Timeout: 50 * time.Millisecond,
		Local: func(ctx context.Context, _ *tasks.Env) error {
			if _, ok := ctx.Deadline(); !ok {
				return errors.New("no deadline")
			}
			<-ctx.Done()
			return ctx.Err()
		}}}}
	err := (&Runner{}).Run(context.Background(), testEnv(1), pb)
	var se *StepError
	if !errors.As(err, &se) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v; want a StepError wrapping DeadlineExceeded", err)
	}
}

func TestFilterSkipOnly(t *testing.T) {
	pb := Up(nil)
	for _, tc := range []struct {
		name       string
		skip, only []string
		want       string // joined names, or an error substring
		wantErr    bool
	}{
		{name: "skip a group", skip: []string{"nodes"}, want: "connect,facts,cluster/endpoint,preflight/host,preflight/cluster,certs,cluster/probe,cluster/observe,plan,render,node/prepare,runtime/install,artifacts/push,artifacts/import,control-plane/init,cluster/bootstrap,etcd/reconcile,network/cidrs,network/configure,control-plane/join,encryption/add,encryption/promote,encryption/use,encryption/rewrite,encryption/drop,encryption/finish,encryption/done,join/token,workers/join,kube-proxy/restart,network/complete,join/forget,join/cleanup"},
		{name: "only keeps always-steps", only: []string{"render"}, want: "connect,facts,cluster/endpoint,certs,cluster/probe,cluster/observe,plan,render"},
		{name: "unknown step", skip: []string{"nope"}, want: "unknown step nope", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pb.Filter(tc.skip, tc.only)
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v; want %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s := strings.Join(got.Names(), ","); s != tc.want {
				t.Errorf("steps %s\nwant      %s", s, tc.want)
			}
		})
	}
}

// byTwo splits hosts into batches of two.
func byTwo(_ *tasks.Env, hosts []*tasks.Host) [][]*tasks.Host {
	var out [][]*tasks.Host
	for i := 0; i < len(hosts); i += 2 {
		out = append(out, hosts[i:min(i+2, len(hosts))])
	}
	return out
}

func TestRunnerBatches(t *testing.T) {
	var mu sync.Mutex
	var log []string
	add := func(s string) { mu.Lock(); log = append(log, s); mu.Unlock() }
	step := func(fail string) Step {
		return Step{Name: "w", Hosts: inventory.SelectWorkers, Batches: byTwo,
			BeforeBatch: func(_ context.Context, _ *tasks.Env, hosts []*tasks.Host) error {
				var names []string
				for _, h := range hosts {
					names = append(names, h.Name)
				}
				add("batch " + strings.Join(names, ","))
				return nil
			},
			Run: func(_ context.Context, _ *tasks.Env, h *tasks.Host) error {
				add("run " + h.Name)
				if h.Name == fail {
					return errors.New("boom")
				}
				return nil
			}}
	}
	// Six workers (h1..h6) in three batches: each batch starts (BeforeBatch)
	// only after the one before finished.
	if err := (&Runner{}).Run(context.Background(), testEnv(7), Playbook{Name: "p", Steps: []Step{step("")}}); err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, l := range log {
		pos[l] = i
	}
	if len(log) != 9 || pos["batch h1,h2"] > pos["run h1"] || pos["run h1"] > pos["batch h3,h4"] || pos["run h2"] > pos["batch h3,h4"] ||
		pos["run h4"] > pos["batch h5,h6"] || pos["batch h5,h6"] > pos["run h5"] {
		t.Errorf("batches ran as %v", log)
	}
	// A failed host stops the step after its batch: nothing further is touched.
	log = nil
	err := (&Runner{}).Run(context.Background(), testEnv(7), Playbook{Name: "p", Steps: []Step{step("h3")}})
	var he *HostError
	if !errors.As(err, &he) || he.Host != "h3" {
		t.Fatalf("err %v; want h3's", err)
	}
	for _, l := range log {
		if strings.Contains(l, "h5") || strings.Contains(l, "h6") {
			t.Errorf("the batch after a failure ran: %v", log)
		}
	}
}

func TestRunnerStopsAtASafePoint(t *testing.T) {
	env := testEnv(7)
	var ran []string
	var mu sync.Mutex
	pb := Playbook{Name: "p", Steps: []Step{
		{Name: "w", Hosts: inventory.SelectWorkers, Batches: byTwo, Run: func(_ context.Context, env *tasks.Env, h *tasks.Host) error {
			mu.Lock()
			ran = append(ran, h.Name)
			mu.Unlock()
			if h.Name == "h1" {
				env.RequestStop() // Ctrl-C while the first batch works: it finishes, the next does not start
			}
			return nil
		}},
		{Name: "after", Local: func(context.Context, *tasks.Env) error { t.Error("a step after the stop ran"); return nil }},
	}}
	err := (&Runner{}).Run(context.Background(), env, pb)
	var stopped *ErrStopped
	if !errors.As(err, &stopped) || stopped.Step != "w" || stopped.Done != 1 || stopped.Of != 3 {
		t.Fatalf("err %v; want a stop in w after 1 of 3 batches", err)
	}
	if len(ran) != 2 {
		t.Errorf("ran %v; want the first batch (h1, h2) only", ran)
	}
	// A serial step stops between hosts.
	env = testEnv(4)
	ran = nil
	pb.Steps[0] = Step{Name: "s", Hosts: inventory.SelectAll, Serial: true, Run: func(_ context.Context, env *tasks.Env, h *tasks.Host) error {
		ran = append(ran, h.Name)
		env.RequestStop()
		return nil
	}}
	err = (&Runner{}).Run(context.Background(), env, pb)
	if !errors.As(err, &stopped) || len(ran) != 1 {
		t.Errorf("serial step: err %v, ran %v; want a stop after h0", err, ran)
	}
}

// A panic in a step is a bug; it becomes an InternalError naming the step and
// the host, the other hosts finish the step, and the run stops there.
func TestRunnerTurnsAPanicIntoAnInternalError(t *testing.T) {
	var ran atomic.Int32
	pb := Playbook{Name: "p", Steps: []Step{
		{Name: "a", Hosts: inventory.SelectAll, Run: func(_ context.Context, _ *tasks.Env, h *tasks.Host) error {
			if h.Name == "h1" {
				var m map[string]int
				m["x"]++ // a nil map: a real bug's panic
			}
			ran.Add(1)
			return nil
		}},
		{Name: "b", Local: func(context.Context, *tasks.Env) error { panic("never reached") }},
	}}
	err := (&Runner{}).Run(context.Background(), testEnv(3), pb)
	var ie *InternalError
	if !errors.As(err, &ie) || ie.Step != "a" || ie.Host != "h1" || len(ie.Stack) == 0 || !strings.Contains(err.Error(), "internal error in a on h1") {
		t.Fatalf("err = %v; want an InternalError of step a on h1 with its stack", err)
	}
	if ran.Load() != 2 {
		t.Errorf("%d other hosts finished the step; want 2", ran.Load())
	}
	err = (&Runner{}).Run(context.Background(), testEnv(1), Playbook{Name: "p", Steps: []Step{pb.Steps[1]}})
	if !errors.As(err, &ie) || ie.Step != "b" || ie.Host != "" {
		t.Errorf("a local step's panic: %v", err)
	}
}
