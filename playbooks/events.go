package playbooks

import "time"

// EventType says what an Event reports.
type EventType string

// The events a run emits.
const (
	EventPlaybookStart EventType = "playbook-start"
	EventPlaybookEnd   EventType = "playbook-end"
	EventStepStart     EventType = "step-start"
	EventStepEnd       EventType = "step-end"
	EventHostStart     EventType = "host-start"
	EventHostEnd       EventType = "host-end"
)

// Result is the outcome of a step on a host.
type Result string

// The results.
const (
	ResultOK      Result = "ok"
	ResultChanged Result = "changed"
	ResultFailed  Result = "failed"
	ResultSkipped Result = "skipped"
)

// Event is one progress report of the runner.
type Event struct {
	Type     EventType
	Playbook string
	Step     string
	Host     string
	Result   Result
	Duration time.Duration
	Err      error
}

// EventSink receives events. Implementations must be safe for concurrent use.
type EventSink interface {
	Event(Event)
}

type discard struct{}

func (discard) Event(Event) {}
