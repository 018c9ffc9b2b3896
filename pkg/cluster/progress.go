package cluster

import (
	"fmt"
	"io"
	"time"
)

// progress prints one short line per step with its duration, for the
// person watching init or start.
type progress struct {
	out   io.Writer
	start time.Time
}

func newProgress(out io.Writer) *progress {
	if out == nil {
		out = io.Discard
	}
	return &progress{out: out, start: time.Now()}
}

func (p *progress) printf(format string, a ...any) {
	fmt.Fprintf(p.out, format+"\n", a...)
}

// step runs fn and reports it as done or failed.
func (p *progress) step(name string, fn func() error) error {
	t := time.Now()
	err := fn()
	mark := "ok"
	if err != nil {
		mark = "FAILED"
	}
	fmt.Fprintf(p.out, "  %-40s %6.2f s  %s\n", name, time.Since(t).Seconds(), mark)
	return err
}

func (p *progress) elapsed() time.Duration { return time.Since(p.start) }
