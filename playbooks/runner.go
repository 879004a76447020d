package playbooks

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/kubeforge/kubeforge/tasks"
)

// HostError is a step that failed on one host.
type HostError struct {
	Step string
	Host string
	Err  error
}

func (e *HostError) Error() string { return fmt.Sprintf("step %s on %s: %v", e.Step, e.Host, e.Err) }
func (e *HostError) Unwrap() error { return e.Err }

// StepError is a local step that failed.
type StepError struct {
	Step string
	Err  error
}

func (e *StepError) Error() string { return fmt.Sprintf("step %s: %v", e.Step, e.Err) }
func (e *StepError) Unwrap() error { return e.Err }

// Runner executes playbooks. It is the only place that starts goroutines.
type Runner struct {
	// Concurrency bounds how many hosts a step works on at once (a sliding window).
	Concurrency int
	// StepTimeout is the default deadline of a step.
	StepTimeout time.Duration
	// Events receives progress; nil discards it.
	Events EventSink
}

// Run executes pb's steps in order against env. A step that fails on any host
// stops the playbook after every host of that step has finished; the per-host
// failures are joined.
func (r *Runner) Run(ctx context.Context, env *tasks.Env, pb Playbook) error {
	sink := r.Events
	if sink == nil {
		sink = discard{}
	}
	start := time.Now()
	sink.Event(Event{Type: EventPlaybookStart, Playbook: pb.Name})
	failed := map[string]bool{}
	var errs []error
	for _, s := range pb.Steps {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("%s stopped before step %s: %w", pb.Name, s.Name, err))
			break
		}
		err := r.step(ctx, env, s, sink, failed)
		if err == nil {
			continue
		}
		errs = append(errs, err)
		if !pb.BestEffort {
			break
		}
	}
	err := errors.Join(errs...)
	sink.Event(Event{Type: EventPlaybookEnd, Playbook: pb.Name, Result: resultOf(err), Duration: time.Since(start), Err: err})
	return err
}

func (r *Runner) step(ctx context.Context, env *tasks.Env, s Step, sink EventSink, failed map[string]bool) error {
	timeout := s.Timeout
	if timeout == 0 {
		timeout = r.StepTimeout
	}
	if timeout == 0 {
		timeout = 15 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	sink.Event(Event{Type: EventStepStart, Step: s.Name})

	if s.Local != nil {
		err := s.Local(ctx, env)
		if err != nil {
			err = &StepError{Step: s.Name, Err: err}
		}
		sink.Event(Event{Type: EventStepEnd, Step: s.Name, Result: resultOf(err), Duration: time.Since(start), Err: err})
		return err
	}

	var hosts []*tasks.Host
	for _, h := range env.Hosts(s.Hosts.Select(env.Inv)) {
		if failed[h.Name] || (s.When != nil && !s.When.Match(env, h)) {
			continue
		}
		hosts = append(hosts, h)
	}
	limit := r.Concurrency
	if limit <= 0 {
		limit = 20
	}
	if s.Serial {
		limit = 1
	}
	errs := make([]error, len(hosts))
	var g errgroup.Group // not WithContext: one host's failure must not cancel the others mid-change
	g.SetLimit(limit)
	for i, h := range hosts {
		g.Go(func() error {
			if s.Serial && i > 0 && errors.Join(errs[:i]...) != nil {
				errs[i] = nil // a serial step stops at the first failing host
				sink.Event(Event{Type: EventHostEnd, Step: s.Name, Host: h.Name, Result: ResultSkipped})
				return nil
			}
			hstart := time.Now()
			before := len(h.Changes())
			sink.Event(Event{Type: EventHostStart, Step: s.Name, Host: h.Name})
			err := ctx.Err()
			if err == nil {
				err = s.Run(ctx, env, h)
			}
			res := resultOf(err)
			if err == nil && len(h.Changes()) > before {
				res = ResultChanged
			}
			if err != nil {
				h.Log.Error("step failed", "step", s.Name, "err", err)
				err = &HostError{Step: s.Name, Host: h.Name, Err: err}
			}
			errs[i] = err
			sink.Event(Event{Type: EventHostEnd, Step: s.Name, Host: h.Name, Result: res, Duration: time.Since(hstart), Err: err})
			return nil
		})
	}
	_ = g.Wait()
	for i, e := range errs {
		if e != nil {
			failed[hosts[i].Name] = true
			if s.Tolerate != nil && s.Tolerate.Match(env, hosts[i]) {
				env.MarkUnreachable(hosts[i], e)
				errs[i] = nil
			}
		}
	}
	err := errors.Join(errs...)
	sink.Event(Event{Type: EventStepEnd, Step: s.Name, Result: resultOf(err), Duration: time.Since(start), Err: err})
	return err
}

func resultOf(err error) Result {
	if err != nil {
		return ResultFailed
	}
	return ResultOK
}
