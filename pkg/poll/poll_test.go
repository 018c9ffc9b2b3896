package poll

import (
	"context"
	"errors"
	"testing"
	"time"
)

var errTimedOut = errors.New("timed out")

func timedOut() error { return errTimedOut }

func TestUntil(t *testing.T) {
	errDefinite := errors.New("refused")
	for _, tc := range []struct {
		name    string
		cond    func(calls int) (bool, error)
		timeout time.Duration
		want    error
		calls   int // at least
	}{
		{"done at once", func(int) (bool, error) { return true, nil }, time.Minute, nil, 1},
		{"done later", func(n int) (bool, error) { return n == 3, nil }, time.Minute, nil, 3},
		{"cond fails", func(n int) (bool, error) { return false, errDefinite }, time.Minute, errDefinite, 1},
		// 500 ms, not less: a loaded machine may not get to the second
		// call (5 ms after the first) in a shorter timeout.
		{"never done", func(int) (bool, error) { return false, nil }, 500 * time.Millisecond, errTimedOut, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			err := Until(context.Background(), 5*time.Millisecond, tc.timeout, func(context.Context) (bool, error) {
				calls++
				return tc.cond(calls)
			}, timedOut)
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if calls < tc.calls {
				t.Fatalf("%d calls, want at least %d", calls, tc.calls)
			}
		})
	}
}

// The caller's context ending is not a timeout: it returns that context's
// error, so that an interrupted start says "interrupted", not "not ready".
func TestUntilContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	err := Until(ctx, 5*time.Millisecond, time.Minute, func(context.Context) (bool, error) {
		cancel()
		return false, nil
	}, timedOut)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

// The pause starts when a call returns: a slow call is not followed by
// another one at once.
func TestUntilSliding(t *testing.T) {
	var starts []time.Time
	_ = Until(context.Background(), 30*time.Millisecond, time.Minute, func(context.Context) (bool, error) {
		starts = append(starts, time.Now())
		time.Sleep(40 * time.Millisecond)
		return len(starts) == 2, nil
	}, timedOut)
	if len(starts) != 2 {
		t.Fatalf("%d calls, want 2", len(starts))
	}
	if gap := starts[1].Sub(starts[0]); gap < 70*time.Millisecond {
		t.Fatalf("second call %s after the first, want the 40 ms call plus the 30 ms pause", gap)
	}
}

func TestUntilDelayAsksAfterEachCall(t *testing.T) {
	pause := time.Hour
	calls := 0
	err := UntilDelay(context.Background(), func() time.Duration { return pause }, time.Minute, func(context.Context) (bool, error) {
		calls++
		pause = time.Millisecond // as a server's Retry-After would set it
		return calls == 2, nil
	}, timedOut)
	if err != nil || calls != 2 {
		t.Fatalf("err = %v after %d calls, want nil after 2", err, calls)
	}
}
