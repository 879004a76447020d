package playbooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/kubeforge/kubeforge/inventory"
	"github.com/kubeforge/kubeforge/tasks"
)

func TestJSONSinkEmitsOneEventPerLine(t *testing.T) {
	var buf bytes.Buffer
	pb := Playbook{Name: "p", Steps: []Step{{Name: "s", Hosts: inventory.SelectAll,
		Run: func(_ context.Context, _ *tasks.Env, h *tasks.Host) error {
			if h.Name == "h1" {
				return errors.New("broke")
			}
			return nil
		}}}}
	(&Runner{Events: &JSONSink{W: &buf}}).Run(context.Background(), testEnv(2), pb)
	var types []string
	failed := ""
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		types = append(types, e["type"].(string))
		if e["type"] == "host-end" && e["result"] == "failed" {
			failed = e["host"].(string) + ": " + e["error"].(string)
		}
	}
	if types[0] != "playbook-start" || types[len(types)-1] != "playbook-end" || len(types) != 8 {
		t.Errorf("event types %v", types)
	}
	if failed != "h1: step s on h1: broke" {
		t.Errorf("failed host event %q", failed)
	}
}

func TestSummaryTableShowsEachHostsResultAndChanges(t *testing.T) {
	env := testEnv(2)
	pb := Playbook{Name: "p", Steps: []Step{{Name: "s", Hosts: inventory.SelectAll,
		Run: func(_ context.Context, _ *tasks.Env, h *tasks.Host) error {
			if h.Name == "h0" {
				h.Changed(tasks.Change{Kind: tasks.ChangeFile, What: "/etc/x"})
			}
			return nil
		}}}}
	sum := &Summary{}
	if err := (&Runner{Events: sum}).Run(context.Background(), env, pb); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	sum.Write(&buf, env.Changes())
	out := buf.String()
	if !strings.Contains(out, "h0    changed") || !strings.Contains(out, "1: wrote /etc/x") || !strings.Contains(out, "h1    ok") {
		t.Errorf("summary:\n%s", out)
	}
}

func TestTTYSinkShowsRunningHostsAndClearsThem(t *testing.T) {
	var buf bytes.Buffer
	s := &TTYSink{TextSink: TextSink{W: &buf}}
	s.Event(Event{Type: EventStepStart, Step: "artifacts"})
	s.Event(Event{Type: EventHostStart, Step: "artifacts", Host: "a"})
	s.Event(Event{Type: EventHostStart, Step: "artifacts", Host: "b"})
	s.Event(Event{Type: EventHostEnd, Step: "artifacts", Host: "a", Result: ResultChanged})
	out := buf.String()
	// The elapsed time is the machine's (0s, or some ms under load).
	if !strings.Contains(out, "... a, b") || !regexp.MustCompile(`    \.\.\. b \([0-9.]+m?s\)$`).MatchString(out) {
		t.Errorf("status line: %q", out)
	}
	s.Event(Event{Type: EventHostEnd, Step: "artifacts", Host: "b", Result: ResultOK})
	s.Event(Event{Type: EventStepEnd, Step: "artifacts", Result: ResultOK})
	if strings.HasSuffix(buf.String(), ")") {
		t.Errorf("status line left after the step: %q", buf.String())
	}
}

// TestTTYSinkIsSafeForConcurrentUse sends events as the runner does, from one
// goroutine per host: -race must find nothing, every host line must come out
// whole right after the status line is cleared (no status redraw in between),
// and no host may be left in the status line.
func TestTTYSinkIsSafeForConcurrentUse(t *testing.T) {
	var buf bytes.Buffer
	s := &TTYSink{TextSink: TextSink{W: &buf}}
	s.Event(Event{Type: EventStepStart, Step: "artifacts"})
	const n = 50
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			h := fmt.Sprintf("h%02d", i)
			s.Event(Event{Type: EventHostStart, Step: "artifacts", Host: h})
			s.Event(Event{Type: EventHostEnd, Step: "artifacts", Host: h, Result: ResultOK})
		})
	}
	close(start)
	wg.Wait()
	s.Event(Event{Type: EventStepEnd, Step: "artifacts", Result: ResultOK})
	out := buf.String()
	for i := range n {
		line := fmt.Sprintf("\r\033[K    %-20s %-8s ", fmt.Sprintf("h%02d", i), ResultOK)
		if c := strings.Count(out, line); c != 1 {
			t.Errorf("host h%02d: %d whole lines after a cleared status line; want 1", i, c)
		}
	}
	s.mu.Lock()
	left := s.running
	s.mu.Unlock()
	if len(left) != 0 {
		t.Errorf("hosts left in the status line after they all finished: %v", left)
	}
}
