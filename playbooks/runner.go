package playbooks

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
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

// ErrStopped is returned when a requested stop (the first Ctrl-C of an
// upgrade) ended the run at a safe point: before step Step, or within it
// after Done of its Of batches or hosts.
type ErrStopped struct {
	Step     string
	Done, Of int
}

func (e *ErrStopped) Error() string {
	if e.Of > 0 {
		return fmt.Sprintf("stopped as asked, at a safe point in step %s (after %d of %d): run the same command again to go on", e.Step, e.Done, e.Of)
	}
	return fmt.Sprintf("stopped as asked, at a safe point before step %s: run the same command again to go on", e.Step)
}

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
	for i, s := range pb.Steps {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("%s stopped before step %s: %w", pb.Name, s.Name, err))
			break
		}
		if i > 0 && env.StopRequested() && !s.ReadOnly {
			errs = append(errs, &ErrStopped{Step: s.Name})
			break
		}
		err := r.step(ctx, env, s, sink, failed)
		if err == nil {
			continue
		}
		errs = append(errs, err)
		if !pb.BestEffort || s.Gate {
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
		err := guard(s.Name, "", func() error { return s.Local(ctx, env) })
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
	batches := [][]*tasks.Host{hosts}
	if s.Batches != nil {
		batches = s.Batches(env, hosts)
	}
	var errs []error
	for bi, batch := range batches {
		if bi > 0 && errors.Join(errs...) != nil {
			for _, h := range batch { // a failed batch stops the step: nothing further is touched
				sink.Event(Event{Type: EventHostEnd, Step: s.Name, Host: h.Name, Result: ResultSkipped})
			}
			continue
		}
		if bi > 0 && env.StopRequested() {
			errs = append(errs, &ErrStopped{Step: s.Name, Done: bi, Of: len(batches)})
			break
		}
		if s.BeforeBatch != nil && len(batch) > 0 {
			if err := s.BeforeBatch(ctx, env, batch); err != nil {
				errs = append(errs, err)
				break
			}
		}
		errs = append(errs, r.hosts(ctx, env, s, sink, failed, batch)...)
	}
	if s.After != nil {
		actx, acancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute) // also after a timeout or a cancel
		errs = append(errs, s.After(actx, env, hosts))
		acancel()
	}
	err := errors.Join(errs...)
	sink.Event(Event{Type: EventStepEnd, Step: s.Name, Result: resultOf(err), Duration: time.Since(start), Err: err})
	return err
}

// hosts runs s on hosts at once (within the runner's concurrency; one at a
// time for a serial step) and returns their errors.
func (r *Runner) hosts(ctx context.Context, env *tasks.Env, s Step, sink EventSink, failed map[string]bool, hosts []*tasks.Host) []error {
	limit := r.Concurrency
	if limit <= 0 {
		limit = tasks.DefaultConcurrency
	}
	if s.Serial {
		limit = 1
	}
	errs := make([]error, len(hosts))
	var g errgroup.Group // not WithContext: one host's failure must not cancel the others mid-change
	g.SetLimit(limit)
	for i, h := range hosts {
		g.Go(func() error {
			if s.Serial && i > 0 && (errors.Join(errs[:i]...) != nil || env.StopRequested()) {
				errs[i] = nil // a serial step stops at the first failing host, or at a requested stop
				if errors.Join(errs[:i]...) == nil {
					errs[i] = &ErrStopped{Step: s.Name, Done: i, Of: len(hosts)}
				}
				sink.Event(Event{Type: EventHostEnd, Step: s.Name, Host: h.Name, Result: ResultSkipped})
				return nil
			}
			hstart := time.Now()
			before := len(h.Changes())
			sink.Event(Event{Type: EventHostStart, Step: s.Name, Host: h.Name})
			err := ctx.Err()
			if err == nil {
				err = guard(s.Name, h.Name, func() error { return s.Run(ctx, env, h) })
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
			if _, stopped := e.(*ErrStopped); stopped {
				continue
			}
			failed[hosts[i].Name] = true
			if s.Tolerate != nil && s.Tolerate.Match(env, hosts[i]) {
				env.MarkUnreachable(hosts[i], e)
				errs[i] = nil
			}
		}
	}
	return errs
}

func resultOf(err error) Result {
	if err != nil {
		return ResultFailed
	}
	return ResultOK
}

// InternalError is a panic that escaped a step: a bug in kubeforge, turned
// into an error so that the other hosts finish their step and the run
// reports and stops as after any failure.
type InternalError struct {
	Step, Host string
	Value      any
	Stack      []byte
}

func (e *InternalError) Error() string {
	where := e.Step
	if e.Host != "" {
		where += " on " + e.Host
	}
	return fmt.Sprintf("internal error in %s: %v", where, e.Value)
}

// guard runs f, turning a panic into an *InternalError: the last resort, never
// the way a step reports a failure.
func guard(step, host string, f func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &InternalError{Step: step, Host: host, Value: v, Stack: debug.Stack()}
		}
	}()
	return f()
}
