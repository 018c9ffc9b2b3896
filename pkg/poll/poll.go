// Package poll is how k8s-master waits for something to become true:
// k8s.io/apimachinery's wait loop, with two things every caller needs
// added. The caller's own context ending returns that context's error, and
// the timeout passing returns the caller's error, which says what to do
// next; wait alone reports both as the same context error.
package poll

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// Until calls cond at once and then interval after each call has returned,
// until cond reports done (Until returns nil) or an error (returned as it
// is). When ctx ends first Until returns ctx.Err(); when timeout passes
// first it returns timedOut(). cond's context ends at whichever comes first;
// a call in progress is not interrupted otherwise.
func Until(ctx context.Context, interval, timeout time.Duration, cond wait.ConditionWithContextFunc, timedOut func() error) error {
	return UntilDelay(ctx, func() time.Duration { return interval }, timeout, cond, timedOut)
}

// UntilDelay is Until with a pause that cond may change between calls (a
// server's Retry-After, say): delay is asked after each call.
func UntilDelay(ctx context.Context, delay wait.DelayFunc, timeout time.Duration, cond wait.ConditionWithContextFunc, timedOut func() error) error {
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var failed error
	// Sliding: the pause starts when a call returns, as in the loops this
	// replaced, so a slow call is not followed by one at once.
	err := delay.Until(tctx, true, true, func(ctx context.Context) (bool, error) {
		done, err := cond(ctx)
		failed = err
		return done, err
	})
	switch {
	case err == nil || failed != nil:
		return err
	case ctx.Err() != nil:
		return ctx.Err()
	default:
		return timedOut()
	}
}
