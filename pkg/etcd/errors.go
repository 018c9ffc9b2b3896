package etcd

import (
	"errors"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// Membership answers callers act on, by etcd's typed errors rather than
// their text. clientv3 returns rpctypes' client-side errors (ErrMemberNotFound
// and so on), which errors.Is finds through wrapping; a bare gRPC status
// from a raw etcdserverpb client is mapped to the same by rpctypes.Error.

// IsNotLearner tells whether MemberPromote failed because the member is
// already a voter: a promotion whose answer was lost and that is retried.
// A learner that has not caught up yet is another error
// (rpctypes.ErrMemberLearnerNotReady), worth retrying.
func IsNotLearner(err error) bool { return is(err, rpctypes.ErrMemberNotLearner) }

// IsMemberNotFound tells whether a member ID is not (or no longer) in the
// cluster, as MemberRemove and MemberPromote answer for a removed member.
func IsMemberNotFound(err error) bool { return is(err, rpctypes.ErrMemberNotFound) }

// IsTooManyLearners tells whether MemberAddAsLearner failed because the
// cluster already has its maximum of learners (one by default): another
// member is joining.
func IsTooManyLearners(err error) bool { return is(err, rpctypes.ErrTooManyLearners) }

// IsUnhealthy tells whether a membership change was refused by etcd's
// strict reconfiguration check, which passes once the remaining members
// have been connected for a few seconds.
func IsUnhealthy(err error) bool { return is(err, rpctypes.ErrUnhealthy) }

func is(err, target error) bool {
	return err != nil && (errors.Is(err, target) || errors.Is(rpctypes.Error(err), target))
}
