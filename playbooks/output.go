package playbooks

import (
	"github.com/kubeforge/kubeforge/tasks"

	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// TextSink prints one plain line per step and per host result: readable on a
// terminal and in CI logs alike.
type TextSink struct {
	mu sync.Mutex
	W  io.Writer
	// Verbose also prints host-start lines.
	Verbose bool
}

// Event implements EventSink.
func (t *TextSink) Event(e Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.write(e)
}

// write prints e's line; the caller holds t.mu.
func (t *TextSink) write(e Event) {
	switch e.Type {
	case EventPlaybookStart:
		fmt.Fprintf(t.W, "kubeforge %s\n", e.Playbook)
	case EventStepStart:
		fmt.Fprintf(t.W, "==> %s\n", e.Step)
	case EventHostStart:
		if t.Verbose {
			fmt.Fprintf(t.W, "    %-20s started\n", e.Host)
		}
	case EventHostEnd:
		fmt.Fprintf(t.W, "    %-20s %-8s %s\n", e.Host, e.Result, round(e.Duration))
	case EventStepEnd:
		if e.Result == ResultFailed {
			fmt.Fprintf(t.W, "    step %s failed after %s\n", e.Step, round(e.Duration))
		} else if e.Host == "" && e.Duration > 0 {
			fmt.Fprintf(t.W, "    %-20s %-8s %s\n", "(done)", e.Result, round(e.Duration))
		}
	case EventPlaybookEnd:
		fmt.Fprintf(t.W, "%s %s in %s\n", e.Playbook, e.Result, round(e.Duration))
	}
}

// JSONSink writes one JSON object per line for other programs.
type JSONSink struct {
	mu sync.Mutex
	W  io.Writer
}

type jsonEvent struct {
	Time       string  `json:"time"`
	Type       string  `json:"type"`
	Playbook   string  `json:"playbook,omitempty"`
	Step       string  `json:"step,omitempty"`
	Host       string  `json:"host,omitempty"`
	Result     string  `json:"result,omitempty"`
	DurationMS float64 `json:"durationMs,omitempty"`
	Error      string  `json:"error,omitempty"`
}

// Event implements EventSink.
func (j *JSONSink) Event(e Event) {
	je := jsonEvent{
		Time: time.Now().UTC().Format(time.RFC3339Nano), Type: string(e.Type), Playbook: e.Playbook,
		Step: e.Step, Host: e.Host, Result: string(e.Result), DurationMS: float64(e.Duration.Microseconds()) / 1000,
	}
	if e.Err != nil {
		je.Error = e.Err.Error()
	}
	b, _ := json.Marshal(je)
	j.mu.Lock()
	defer j.mu.Unlock()
	j.W.Write(append(b, '\n'))
}

// Summary collects per-host results for the final table.
type Summary struct {
	mu    sync.Mutex
	hosts map[string]*hostSummary
	steps []stepTime
}

type hostSummary struct {
	result  Result
	failed  string
	elapsed time.Duration
}

type stepTime struct {
	name string
	d    time.Duration
}

// Event implements EventSink.
func (s *Summary) Event(e Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hosts == nil {
		s.hosts = map[string]*hostSummary{}
	}
	switch e.Type {
	case EventStepEnd:
		s.steps = append(s.steps, stepTime{e.Step, e.Duration})
	case EventHostEnd:
		h := s.hosts[e.Host]
		if h == nil {
			h = &hostSummary{result: ResultOK}
			s.hosts[e.Host] = h
		}
		h.elapsed += e.Duration
		switch {
		case e.Result == ResultFailed:
			h.result, h.failed = ResultFailed, e.Step
		case e.Result == ResultChanged && h.result == ResultOK:
			h.result = ResultChanged
		}
	}
}

// StepDurations returns each step's wall time in run order.
func (s *Summary) StepDurations() []struct {
	Step     string
	Duration time.Duration
} {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]struct {
		Step     string
		Duration time.Duration
	}, len(s.steps))
	for i, st := range s.steps {
		out[i].Step, out[i].Duration = st.name, st.d
	}
	return out
}

// Write prints the summary table: host, result, time spent in steps, changes.
func (s *Summary) Write(w io.Writer, changes map[string][]tasks.Change) {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.hosts))
	for n := range s.hosts {
		names = append(names, n)
	}
	sort.Strings(names)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tRESULT\tTIME\tCHANGES")
	for _, n := range names {
		h := s.hosts[n]
		res := string(h.result)
		if h.failed != "" {
			res += " (" + h.failed + ")"
		}
		c := changes[n]
		desc := "none"
		if len(c) > 0 {
			desc = fmt.Sprintf("%d: %s", len(c), strings.Join(first(changeStrings(c), 3), ", "))
			if len(c) > 3 {
				desc += ", ..."
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n, res, round(h.elapsed), desc)
	}
	tw.Flush()
}

// Multi fans events out to several sinks.
type Multi []EventSink

// Event implements EventSink.
func (m Multi) Event(e Event) {
	for _, s := range m {
		if s != nil {
			s.Event(e)
		}
	}
}

func first(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func changeStrings(cs []tasks.Change) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.String()
	}
	return out
}

func round(d time.Duration) time.Duration {
	switch {
	case d > time.Minute:
		return d.Round(time.Second)
	case d > time.Second:
		return d.Round(100 * time.Millisecond)
	default:
		return d.Round(time.Millisecond)
	}
}

var (
	_ EventSink = (*TextSink)(nil)
	_ EventSink = (*JSONSink)(nil)
	_ EventSink = (*Summary)(nil)
	_ EventSink = Multi(nil)
)

// TTYSink is TextSink for a terminal: the same lines, plus a status line
// under them, redrawn as hosts start and finish, that names the hosts still
// working on the current step. The runner calls Event from one goroutine per
// host: the embedded TextSink's mutex guards the status too, and each event's
// output (clear the status line, print, redraw it) is written as one piece.
type TTYSink struct {
	TextSink
	running []string
	start   time.Time
}

// Event implements EventSink.
func (t *TTYSink) Event(e Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprint(t.W, "\r\033[K") // clear the status line
	switch e.Type {
	case EventStepStart:
		t.start, t.running = time.Now(), nil
	case EventHostStart:
		t.running = append(t.running, e.Host)
	case EventHostEnd:
		for i, h := range t.running {
			if h == e.Host {
				t.running = append(t.running[:i], t.running[i+1:]...)
				break
			}
		}
	}
	if e.Type != EventHostStart {
		t.TextSink.write(e)
	}
	if len(t.running) > 0 && e.Type != EventStepEnd && e.Type != EventPlaybookEnd {
		fmt.Fprintf(t.W, "    ... %s (%s)", strings.Join(first(t.running, 6), ", "), round(time.Since(t.start)))
	}
}

var _ EventSink = (*TTYSink)(nil)
