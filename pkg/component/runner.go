package component

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// Step is one line of a master's start-up list.
type Step struct {
	// Name is the progress line ("etcd member ready"); a step without a
	// name runs silently (taking a lock, recording state).
	Name string
	// Do runs the step. It starts components with r.Start, waits with
	// r.Ready, and registers with r.OnRollback or r.OnStop what must be
	// undone later.
	Do func(ctx context.Context, r *Runner) error
}

// StopReserve is the time each component still to be stopped is sure to
// get: a stop that hangs cannot eat the budget of the ones after it.
const StopReserve = time.Second

// undo is one entry of the runner's stack: a started component, or a
// function registered by a step.
type undo struct {
	name string
	// comp is set for a started component: stopped at Stop and Rollback.
	comp Component
	// fn is set for a registered function.
	fn func(ctx context.Context) error
	// rollbackOnly entries take back work of a failed start (files of a
	// half-made member, a learner); Commit drops them.
	rollbackOnly bool
}

// Runner runs Steps, prints their progress, and keeps the stack of what
// they started and registered, so that Stop and Rollback undo exactly
// that, in reverse, once.
type Runner struct {
	out   io.Writer
	begun time.Time

	mu        sync.Mutex
	stack     []undo
	committed bool
	unwound   bool
	exited    chan Exit
}

// Exit is a component that stopped on its own, and why (nil: no reason
// given).
type Exit struct {
	Name string
	Err  error
}

// NewRunner prints progress to out (nil: nowhere).
func NewRunner(out io.Writer) *Runner {
	if out == nil {
		out = io.Discard
	}
	return &Runner{out: out, begun: time.Now(), exited: make(chan Exit, 1)}
}

// Printf prints one progress line.
func (r *Runner) Printf(format string, a ...any) {
	fmt.Fprintf(r.out, format+"\n", a...)
}

// Elapsed is the time since the runner was made.
func (r *Runner) Elapsed() time.Duration { return time.Since(r.begun) }

// Run runs steps in order and stops at the first that fails. Nothing is
// undone here: the caller decides between Rollback (the start failed) and
// keeping what runs.
func (r *Runner) Run(ctx context.Context, steps []Step) error {
	for _, s := range steps {
		if err := r.step(ctx, s); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

func (r *Runner) step(ctx context.Context, s Step) error {
	if s.Name == "" {
		return s.Do(ctx, r)
	}
	t := time.Now()
	err := s.Do(ctx, r)
	mark := "ok"
	if err != nil {
		mark = "FAILED"
	}
	fmt.Fprintf(r.out, "  %-40s %6.2f s  %s\n", s.Name, time.Since(t).Seconds(), mark)
	return err
}

// Start starts c and, whether or not that worked, puts its Stop on the
// stack (a half-started part still holds what it opened).
func (r *Runner) Start(ctx context.Context, c Component) error {
	r.push(undo{name: c.Name(), comp: c})
	if err := c.Start(ctx); err != nil {
		return fmt.Errorf("%s: %w", c.Name(), err)
	}
	if e, ok := c.(Exiter); ok {
		go r.watch(c.Name(), e.Exited())
	}
	return nil
}

// Ready waits for every c that can tell.
func (r *Runner) Ready(ctx context.Context, cs ...Component) error {
	for _, c := range cs {
		rd, ok := c.(Readier)
		if !ok {
			continue
		}
		if err := rd.Ready(ctx); err != nil {
			return fmt.Errorf("%s: %w", c.Name(), err)
		}
	}
	return nil
}

// OnStop registers fn to run when the runner stops or rolls back, after
// everything started later and before everything started earlier
// (releasing the data directory's lock, closing the log).
func (r *Runner) OnStop(name string, fn func(ctx context.Context) error) {
	r.push(undo{name: name, fn: fn})
}

// OnRollback registers fn to run only if the start is rolled back before
// Commit (removing the files of a half-made member, its learner).
func (r *Runner) OnRollback(name string, fn func(ctx context.Context) error) {
	r.push(undo{name: name, fn: fn, rollbackOnly: true})
}

// Commit keeps what the steps so far made: later failures stop the
// components but take nothing back.
func (r *Runner) Commit() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.committed = true
	kept := r.stack[:0]
	for _, u := range r.stack {
		if !u.rollbackOnly {
			kept = append(kept, u)
		}
	}
	r.stack = kept
}

// Committed tells whether Commit was called.
func (r *Runner) Committed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.committed
}

func (r *Runner) push(u undo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stack = append(r.stack, u)
}

func (r *Runner) watch(name string, ch <-chan error) {
	err, ok := <-ch
	if !ok {
		err = nil
	}
	select {
	case r.exited <- Exit{Name: name, Err: err}:
	default: // the first exit is what counts; the rest follow from it
	}
}

// Exited yields the first component that stopped on its own, with why.
func (r *Runner) Exited() <-chan Exit { return r.exited }

// Error names the component and the cause.
func (e Exit) Error() string {
	if e.Err == nil {
		return e.Name + " stopped unexpectedly; see the log"
	}
	return fmt.Sprintf("%s failed: %v; see the log", e.Name, e.Err)
}

// Unwrap is the cause.
func (e Exit) Unwrap() error { return e.Err }

// Stop unwinds the stack: every started component is stopped and every
// registered function run, in reverse order, once, within timeout. Each
// component still to be stopped is sure of StopReserve of it. Calling
// Stop again does nothing.
func (r *Runner) Stop(timeout time.Duration) error { return r.unwind(timeout) }

// Rollback is Stop for a start that failed: before Commit it also takes
// back what OnRollback registered.
func (r *Runner) Rollback(timeout time.Duration) error { return r.unwind(timeout) }

func (r *Runner) unwind(timeout time.Duration) error {
	r.mu.Lock()
	if r.unwound {
		r.mu.Unlock()
		return nil
	}
	r.unwound = true
	stack := r.stack
	r.stack = nil
	r.mu.Unlock()

	deadline := time.Now().Add(timeout)
	var errs []error
	for i := len(stack) - 1; i >= 0; i-- {
		u := stack[i]
		later := 0
		for _, v := range stack[:i] {
			if v.comp != nil {
				later++
			}
		}
		d := deadline.Add(-time.Duration(later) * StopReserve)
		if min := time.Now().Add(StopReserve); u.comp != nil && d.Before(min) {
			d = min
		}
		ctx, cancel := context.WithDeadline(context.Background(), d)
		var err error
		if u.comp != nil {
			err = u.comp.Stop(ctx)
		} else {
			err = u.fn(ctx)
		}
		if err == nil && u.comp != nil && ctx.Err() != nil {
			err = fmt.Errorf("did not stop within its share of the budget: %w", ctx.Err())
		}
		cancel()
		if err != nil {
			klog.InfoS("Stopping step failed", "step", u.name, "err", err)
			errs = append(errs, fmt.Errorf("%s: %w", u.name, err))
		}
	}
	return errors.Join(errs...)
}
