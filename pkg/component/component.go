// Package component gives every long-running part of a master one shape
// and runs a master as a list of steps: components start in order, the
// steps between them (PKI, membership, promotion) run in place, and
// whatever was started or written is stopped or taken back in reverse,
// exactly once, on a failure or at the end.
//
// A master's start is read from one list (see pkg/cluster): each Step
// prints one progress line, starts components through the Runner, and
// registers what must be undone should a later step fail. Runner.Commit
// marks the point after which the work is kept (a cluster that exists is
// left for `start`, not deleted); the components keep running until Stop.
package component

import (
	"context"
)

// Component is one long-running part of a master: the etcd member, the
// apiserver, the controller-manager, the scheduler, the join service, the
// VIP election, the control socket, and whatever comes later.
type Component interface {
	// Name is what progress lines and logs call it.
	Name() string
	// Start launches the part and returns once it runs, or with the
	// reason it could not start. Expensive set-up may go on in the
	// background (the apiserver builds while etcd elects a leader);
	// Ready, where the part has it, waits for that.
	Start(ctx context.Context) error
	// Stop stops the part and releases what it holds. It may be called
	// more than once, and on a part whose Start failed or never ran; it
	// returns by ctx's deadline, giving up the wait rather than the
	// release of its resources.
	Stop(ctx context.Context) error
}

// Readier is a component that can tell when it serves.
type Readier interface {
	// Ready blocks until the part serves, fails, or ctx ends.
	Ready(ctx context.Context) error
}

// Exiter is a component that can stop on its own (a fatal error, or
// etcd's member being removed); the channel yields why, once.
type Exiter interface {
	Exited() <-chan error
}
