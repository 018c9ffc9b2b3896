package etcd

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// The helpers recognise what a real member answers through clientv3 (the
// message texts are not what one would guess: promoting a voter says "can
// only promote a learner member", which a learner not yet caught up also
// starts with), wrapped or not, and a bare gRPC status.
func TestMembershipErrors(t *testing.T) {
	m, cli := runReady(t, newMember(t, t.TempDir()), "errors")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	self := uint64(m.etcd.Server.MemberID())

	_, promoteVoter := cli.MemberPromote(ctx, self)
	_, removeUnknown := cli.MemberRemove(ctx, self+1)
	// Never started: it cannot be promoted, and it is the one learner
	// etcd allows by default.
	add, err := cli.MemberAddAsLearner(ctx, []string{"https://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	_, promoteBehind := cli.MemberPromote(ctx, add.Member.ID)
	_, addSecond := cli.MemberAddAsLearner(ctx, []string{"https://127.0.0.1:2"})

	checks := []struct {
		name string
		err  error
		is   func(error) bool
	}{
		{"promote a voter", promoteVoter, IsNotLearner},
		{"remove an unknown member", removeUnknown, IsMemberNotFound},
		{"add a second learner", addSecond, IsTooManyLearners},
	}
	all := []func(error) bool{IsNotLearner, IsMemberNotFound, IsTooManyLearners, IsUnhealthy}
	for _, tc := range checks {
		t.Logf("%s: %v", tc.name, tc.err)
		if !tc.is(tc.err) {
			t.Errorf("%s: %v not recognised", tc.name, tc.err)
		}
		if !tc.is(fmt.Errorf("wrapped: %w", tc.err)) {
			t.Errorf("%s: wrapped %v not recognised", tc.name, tc.err)
		}
		matched := 0
		for _, is := range all {
			if is(tc.err) {
				matched++
			}
		}
		if matched != 1 {
			t.Errorf("%s: %v matched %d helpers, want 1", tc.name, tc.err, matched)
		}
	}
	if promoteBehind == nil || IsNotLearner(promoteBehind) {
		t.Errorf("promoting a learner that has not caught up: %v; want an error that is not IsNotLearner (it is retried)", promoteBehind)
	}
	if !IsMemberNotFound(rpctypes.ErrGRPCMemberNotFound) || !IsNotLearner(rpctypes.ErrGRPCMemberNotLearner) || !IsTooManyLearners(rpctypes.ErrGRPCTooManyLearners) {
		t.Error("bare gRPC status errors not recognised")
	}
	if IsNotLearner(nil) || IsMemberNotFound(context.DeadlineExceeded) {
		t.Error("nil or an unrelated error recognised")
	}
}
