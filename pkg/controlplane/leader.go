package controlplane

import (
	"context"
	"fmt"
	"time"

	"k8s.io/klog/v2"
)

// runner runs a leader-elected component once: it returns when its context
// ends or when it loses its lease.
type runner func(ctx context.Context) error

// Supervised keeps a leader-elected component running in this process. When
// the component returns while the master is still up (its lease was lost,
// say during an etcd outage) it is built afresh and started again after a
// short back-off, the way a kubelet would restart a static pod, but without
// taking the etcd member and apiserver of this process down with it.
type Supervised struct {
	name  string
	build func(ctx context.Context) (runner, error)
	first runner
	done  chan struct{}
}

// newSupervised builds the component once, now, so that configuration
// errors surface before anything runs and the expensive set-up overlaps the
// apiserver's start.
func newSupervised(ctx context.Context, name string, build func(ctx context.Context) (runner, error)) (*Supervised, error) {
	first, err := build(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &Supervised{name: name, build: build, first: first, done: make(chan struct{})}, nil
}

// Start runs the component until ctx ends; Done is closed once it returned.
func (s *Supervised) Start(ctx context.Context) {
	go func() {
		defer close(s.done)
		run := s.first
		backoff := time.Second
		for {
			err := run(ctx)
			if ctx.Err() != nil {
				return
			}
			klog.ErrorS(err, "Component stopped; restarting it", "component", s.name, "after", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 30*time.Second)
			for {
				run, err = s.build(ctx)
				if err == nil {
					break
				}
				klog.ErrorS(err, "Cannot rebuild component", "component", s.name)
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
			}
		}
	}()
}

// Done is closed when the component has stopped for good.
func (s *Supervised) Done() <-chan struct{} { return s.done }
