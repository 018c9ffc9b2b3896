// Package componenttest has a fake component whose start, readiness and
// stop each test sets, and a journal of what the fakes were asked to do,
// for the tests of the runner and of the start-up lists that use it.
package componenttest

import (
	"context"
	"strings"
	"sync"
)

// Journal records "start NAME", "ready NAME" and "stop NAME" in order.
type Journal struct {
	mu    sync.Mutex
	lines []string
}

// Add records one line.
func (j *Journal) Add(s string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.lines = append(j.lines, s)
}

// Lines are the recorded lines that start with one of prefixes (all
// without prefixes).
func (j *Journal) Lines(prefixes ...string) []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []string
	for _, l := range j.lines {
		if len(prefixes) == 0 {
			out = append(out, l)
			continue
		}
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				out = append(out, l)
				break
			}
		}
	}
	return out
}

// Reset forgets what was recorded.
func (j *Journal) Reset() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.lines = nil
}

// Fake is a component.Component and component.Readier.
type Fake struct {
	ID       string
	J        *Journal
	StartErr error
	ReadyErr error
	// NeverReady makes Ready block until its context ends.
	NeverReady bool
	// StopHangs makes Stop block until its context ends.
	StopHangs bool

	mu    sync.Mutex
	stops int
}

func (f *Fake) Name() string { return f.ID }

func (f *Fake) Start(context.Context) error {
	f.J.Add("start " + f.ID)
	return f.StartErr
}

func (f *Fake) Ready(ctx context.Context) error {
	if f.NeverReady {
		<-ctx.Done()
		return ctx.Err()
	}
	if f.ReadyErr != nil {
		return f.ReadyErr
	}
	f.J.Add("ready " + f.ID)
	return nil
}

func (f *Fake) Stop(ctx context.Context) error {
	f.mu.Lock()
	f.stops++
	f.mu.Unlock()
	f.J.Add("stop " + f.ID)
	if f.StopHangs {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

// Stops is how often Stop was called.
func (f *Fake) Stops() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stops
}

// ResetStops sets the count of stops back to zero.
func (f *Fake) ResetStops() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stops = 0
}
