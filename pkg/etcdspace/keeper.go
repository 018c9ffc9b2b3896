// Package etcdspace keeps the embedded etcd's database within its quota
// without an operator: the space keeper, one per master, defragments
// members whose database is mostly free pages, and when etcd has raised
// its NOSPACE alarm (it then refuses writes) it compacts, defragments and
// disarms the alarm once there is room again, so that writes resume with
// no restart.
//
// A defragmentation blocks its member for its duration, so they must never
// run on two members at once, and the leader goes last, after handing its
// leadership over. The coordination cannot take a lock in etcd: under
// NOSPACE a Put or a lease grant is refused. It uses the raft leadership
// instead, which etcd keeps unique: only the keeper beside the current
// leader acts, and it defragments the other members through their client
// URLs one by one. It never defragments its own member while it leads:
// it moves the leadership to a defragmented follower and stops; the new
// leader's keeper then defragments the old leader. A keeper that has just
// become leader first waits long enough for a defragmentation the previous
// leader's keeper may still have under way to end.
package etcdspace

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"

	"github.com/k8s-master/k8s-master/pkg/etcd"
)

// Options tune a Keeper; zero values take the defaults.
type Options struct {
	// Interval is how often the members are checked for free space to
	// give back (default 1 minute).
	Interval time.Duration
	// Poll is how often the alarm and the leadership are looked at
	// (default 2 s): a NOSPACE alarm is handled at the next poll.
	Poll time.Duration
	// Settle is the least time a keeper waits after becoming leader
	// before it acts (default 2 s); it grows with the database size, see
	// settle.
	Settle time.Duration
	// MinSize is the database size below which a member is not worth a
	// routine defragmentation, however empty (default: 64 MiB or an
	// eighth of the quota, whichever is smaller).
	MinSize int64
}

func (o Options) withDefaults() Options {
	if o.Interval <= 0 {
		o.Interval = time.Minute
	}
	if o.Poll <= 0 {
		o.Poll = 2 * time.Second
	}
	if o.Settle <= 0 {
		o.Settle = 2 * time.Second
	}
	return o
}

// Thresholds. A routine defragmentation pays once at least half the file
// is free. Under NOSPACE anything that gives back a tenth is worth it; the
// alarm is disarmed once every member's file is at most 90% of its quota,
// so that writes do not hit the quota again at once.
const (
	routineFreeFraction = 0.5
	nospaceFreeFraction = 0.1
	disarmBelow         = 0.9
	// defragRate is a slow disk's defragmentation speed, to bound how
	// long one may take (it rewrites the whole file).
	defragRate = 20 << 20 // bytes per second
	// defragTimeout bounds one defragmentation call on top of that.
	defragTimeout = 30 * time.Second
	// maxTries bounds the defragmentations of a member per compaction
	// under NOSPACE.
	maxTries = 2
	// compactionGrace lets the followers finish a compaction.
	compactionGrace = time.Second
	// The wait after a futile pass under NOSPACE: short, since it also
	// delays the recovery once objects are deleted.
	minBackoff = 5 * time.Second
	maxBackoff = 20 * time.Second
)

// Keeper is one master's space keeper.
type Keeper struct {
	cli      *clientv3.Client
	localURL string
	o        Options

	// leaderSince is when this keeper first saw its member lead, zero
	// while it does not; acted says whether it has run a pass since.
	leaderSince time.Time
	acted       bool
	lastPass    time.Time
	// compacted is the revision of this keeper's last compaction, tries
	// the defragmentations of each member since (under NOSPACE).
	compacted int64
	tries     map[uint64]int
	// gained says whether a defragmentation of this pass gave back at
	// least a tenth of its member's file. Under NOSPACE, after a pass
	// whose defragmentations all gained nothing (the data itself fills
	// the quota), the next waits until quiet, doubling up to maxBackoff:
	// expiring leases keep moving the revision, and each new compaction
	// would start another round of defragmentations and a leadership
	// move.
	gained, futile bool
	backoff        time.Duration
	quiet          time.Time
	// onDefrag, set by tests, sees each defragmentation start and end.
	onDefrag func(member string, started bool)
}

// New makes a keeper for the member at localURL; cli must reach it and,
// for MoveLeader, talk to it (the master's local client).
func New(cli *clientv3.Client, localURL string, o Options) *Keeper {
	registerMetrics()
	return &Keeper{cli: cli, localURL: localURL, o: o.withDefaults()}
}

// Run keeps the space until ctx ends. Failures are logged and retried at
// the next poll: etcd may be briefly unavailable.
func (k *Keeper) Run(ctx context.Context) {
	t := time.NewTicker(k.o.Poll)
	defer t.Stop()
	for {
		if err := k.poll(ctx); err != nil && ctx.Err() == nil {
			klog.ErrorS(err, "etcd space keeper")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// poll looks at the alarm and the leadership, and runs a pass when one is
// due: under NOSPACE at every poll, else every Interval, and once right
// after this keeper's member became leader and settled (to finish what
// the previous leader handed over).
func (k *Keeper) poll(ctx context.Context) error {
	now := time.Now()
	self, leading, err := k.leadership(ctx)
	if err != nil {
		return err
	}
	alarms, err := noSpaceAlarms(ctx, k.cli)
	if err != nil {
		return err
	}
	noSpace.Set(boolGauge(len(alarms) > 0))
	if !leading {
		k.leaderSince, k.acted = time.Time{}, false
	} else if k.leaderSince.IsZero() {
		k.leaderSince = now
	}
	if len(alarms) == 0 {
		k.backoff, k.quiet = 0, time.Time{}
	}
	due := (len(alarms) > 0 && !now.Before(k.quiet)) || now.Sub(k.lastPass) >= k.o.Interval || (leading && !k.acted)
	if !due {
		return nil
	}
	ms, err := etcd.Members(ctx, k.cli)
	if err != nil {
		return err
	}
	k.lastPass = now
	recordSizes(ms)
	if !leading || now.Sub(k.leaderSince) < k.settle(ms) {
		return nil
	}
	k.acted = true
	return k.pass(ctx, self, ms, alarms)
}

// settle is how long a new leader's keeper waits: the previous leader's
// keeper may have started a defragmentation of a follower just before the
// leadership moved, and that one runs to its end even if its caller
// gives up. It takes about the file's size over a slow disk's rate.
func (k *Keeper) settle(ms []etcd.MemberStatus) time.Duration {
	var largest int64
	for _, m := range ms {
		largest = max(largest, m.DBSize)
	}
	return k.o.Settle + time.Duration(float64(largest)/defragRate*float64(time.Second))
}

// leadership says which member this keeper runs beside and whether it
// leads.
func (k *Keeper) leadership(ctx context.Context) (uint64, bool, error) {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := k.cli.Status(sctx, k.localURL)
	if err != nil {
		return 0, false, fmt.Errorf("status of the local etcd member: %w", err)
	}
	return st.Header.MemberId, st.Leader == st.Header.MemberId, nil
}

// pass is the leader's work: compact under NOSPACE, defragment the members
// that need it (followers first; this member last, by handing the
// leadership over), and disarm NOSPACE once there is room.
func (k *Keeper) pass(ctx context.Context, self uint64, ms []etcd.MemberStatus, alarms []*etcdserverpb.AlarmMember) error {
	full := len(alarms) > 0
	if full {
		var err error
		if ms, err = k.compact(ctx); err != nil {
			return err
		}
		k.gained, k.futile = false, false
		defer k.backOff()
	}
	var selfStatus *etcd.MemberStatus
	for i := range ms {
		m := &ms[i]
		if !answered(m) || !k.needs(m, full) {
			continue
		}
		if m.ID == self {
			selfStatus = m
			continue
		}
		// Leadership may have moved since the pass began: the new
		// leader's keeper takes over from here.
		if _, leading, err := k.leadership(ctx); err != nil || !leading {
			return err
		}
		if err := k.defrag(ctx, m); err != nil {
			return err
		}
	}
	// Writes resume as soon as there is room: the defragmentation this
	// member may still need can wait for a routine pass.
	if full {
		disarmed, err := k.disarm(ctx, alarms)
		if err != nil || disarmed {
			return err
		}
	}
	if selfStatus != nil {
		if to, ok := k.handoverTarget(ms, self, full); ok {
			mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := k.cli.MoveLeader(mctx, to.ID)
			cancel()
			if err != nil {
				return fmt.Errorf("hand etcd leadership to %s before defragmenting %s: %w", to.Name, selfStatus.Name, err)
			}
			// A handover counts as a try on this member: under NOSPACE
			// with data that truly fills the quota, the keepers would
			// otherwise pass the leadership round for ever.
			if k.tries != nil {
				k.tries[self]++
			}
			klog.InfoS("Handed etcd leadership over so that this member can be defragmented last", "member", selfStatus.Name, "newLeader", to.Name)
			k.leaderSince, k.acted = time.Time{}, false
			return nil
		}
		// Alone (one member, or no other member answers): nobody else
		// can, and the member is unavailable for the defragmentation
		// either way.
		if err := k.defrag(ctx, selfStatus); err != nil {
			return err
		}
		if full {
			_, err := k.disarm(ctx, alarms)
			return err
		}
	}
	return nil
}

// backOff ends a pass under NOSPACE: when its defragmentations all gained
// nothing, the next pass waits.
func (k *Keeper) backOff() {
	if !k.futile || k.gained {
		k.backoff = 0
		return
	}
	k.backoff = min(max(2*k.backoff, minBackoff), maxBackoff)
	k.quiet = time.Now().Add(k.backoff)
	klog.InfoS("etcd NOSPACE: defragmentation gave nothing back, the data fills the quota; delete objects to free space", "retryIn", k.backoff)
}

// handoverTarget picks the follower to lead while this member is
// defragmented: a voter that answers, preferably one that needs no
// defragmentation itself (it was just done).
func (k *Keeper) handoverTarget(ms []etcd.MemberStatus, self uint64, full bool) (etcd.MemberStatus, bool) {
	var fallback *etcd.MemberStatus
	for i := range ms {
		m := &ms[i]
		if m.ID == self || m.Learner || !answered(m) {
			continue
		}
		if !k.needs(m, full) {
			return *m, true
		}
		if fallback == nil {
			fallback = m
		}
	}
	if fallback != nil {
		return *fallback, true
	}
	return etcd.MemberStatus{}, false
}

// needs says whether m is to be defragmented. Routinely, when that gives
// back enough. Under NOSPACE, also when its file is too near its quota to
// disarm: the in-use size a member reports lags (bbolt counts pages freed
// by a commit as free only after a later one, and under NOSPACE few
// commits happen), so it cannot tell alone; at most maxTries times per
// compaction, so a member whose data truly fills its quota is not
// defragmented over and over.
func (k *Keeper) needs(m *etcd.MemberStatus, full bool) bool {
	free := float64(m.DBSize - m.DBSizeInUse)
	if full {
		if k.tries[m.ID] >= maxTries {
			return false
		}
		return free >= nospaceFreeFraction*float64(m.DBSize) || tooFull(m)
	}
	floor := k.o.MinSize
	if floor <= 0 {
		floor = min(64<<20, m.DBSizeQuota/8)
	}
	return m.DBSize >= floor && free >= routineFreeFraction*float64(m.DBSize)
}

// tooFull tells whether m's file is too near its quota to disarm NOSPACE.
func tooFull(m *etcd.MemberStatus) bool {
	return m.DBSizeQuota > 0 && float64(m.DBSize) > disarmBelow*float64(m.DBSizeQuota)
}

// answered tells whether the member answered its status request (under
// NOSPACE every member reports the alarm, so Healthy is false then).
func answered(m *etcd.MemberStatus) bool { return m.DBSize > 0 && len(m.ClientURLs) > 0 }

// compact compacts to the current revision, so that what was deleted
// frees its pages now rather than at the apiserver's next compaction (5
// minutes), and returns the members' statuses afterwards.
func (k *Keeper) compact(ctx context.Context) ([]etcd.MemberStatus, error) {
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	st, err := k.cli.Status(cctx, k.localURL)
	if err != nil {
		return nil, fmt.Errorf("status of the local etcd member: %w", err)
	}
	if rev := st.Header.Revision; rev > k.compacted {
		_, err := k.cli.Compact(cctx, rev, clientv3.WithCompactPhysical())
		if err != nil && !errors.Is(err, rpctypes.ErrCompacted) {
			return nil, fmt.Errorf("compact etcd to revision %d: %w", rev, err)
		}
		k.compacted, k.tries = rev, map[uint64]int{}
		// ErrCompacted: the previous leader's keeper did it a while ago.
		if err == nil {
			klog.InfoS("Compacted etcd under the NOSPACE alarm", "revision", rev)
			// The followers apply the compaction on their own, in
			// batches: give them a moment before their files are
			// rewritten.
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(compactionGrace):
			}
		}
	}
	ms, err := etcd.Members(ctx, k.cli)
	if err != nil {
		return nil, err
	}
	recordSizes(ms)
	return ms, nil
}

// defrag defragments one member, logged at its start and end.
func (k *Keeper) defrag(ctx context.Context, m *etcd.MemberStatus) error {
	timeout := defragTimeout + time.Duration(float64(m.DBSize)/defragRate*float64(time.Second))
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	klog.InfoS("etcd defragmentation started", "member", m.Name, "dbSize", m.DBSize, "inUse", m.DBSizeInUse)
	defragInProgress.WithLabelValues(m.Name).Set(1)
	if k.tries != nil {
		k.tries[m.ID]++
	}
	if k.onDefrag != nil {
		k.onDefrag(m.Name, true)
	}
	start := time.Now()
	_, err := k.cli.Defragment(dctx, m.ClientURLs[0])
	took := time.Since(start)
	if k.onDefrag != nil {
		k.onDefrag(m.Name, false)
	}
	defragInProgress.WithLabelValues(m.Name).Set(0)
	defragDuration.WithLabelValues(m.Name).Observe(took.Seconds())
	if err != nil {
		defragTotal.WithLabelValues(m.Name, "failed").Inc()
		klog.InfoS("etcd defragmentation finished", "member", m.Name, "took", took, "err", err)
		return fmt.Errorf("defragment etcd member %s: %w", m.Name, err)
	}
	defragTotal.WithLabelValues(m.Name, "ok").Inc()
	after := int64(-1)
	if st, err := k.cli.Status(dctx, m.ClientURLs[0]); err == nil {
		after = st.DbSize
		if float64(m.DBSize-after) >= nospaceFreeFraction*float64(m.DBSize) {
			k.gained = true
		} else {
			k.futile = true
		}
	}
	klog.InfoS("etcd defragmentation finished", "member", m.Name, "took", took, "dbSizeBefore", m.DBSize, "dbSizeAfter", after)
	return nil
}

// disarm lifts NOSPACE once every member that answers has room again, and
// says whether it did.
func (k *Keeper) disarm(ctx context.Context, alarms []*etcdserverpb.AlarmMember) (bool, error) {
	ms, err := etcd.Members(ctx, k.cli)
	if err != nil {
		return false, err
	}
	recordSizes(ms)
	for _, m := range ms {
		if answered(&m) && tooFull(&m) {
			klog.InfoS("etcd NOSPACE stays: a member's database is still near its quota", "member", m.Name, "dbSize", m.DBSize, "inUse", m.DBSizeInUse, "quota", m.DBSizeQuota)
			return false, nil
		}
	}
	for _, a := range alarms {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := k.cli.AlarmDisarm(dctx, (*clientv3.AlarmMember)(a))
		cancel()
		if err != nil {
			return false, fmt.Errorf("disarm etcd's NOSPACE alarm: %w", err)
		}
	}
	noSpace.Set(0)
	klog.InfoS("Disarmed etcd's NOSPACE alarm: writes resume", "alarms", len(alarms))
	return true, nil
}

// noSpaceAlarms lists the raised NOSPACE alarms (one per member that
// raised it).
func noSpaceAlarms(ctx context.Context, cli *clientv3.Client) ([]*etcdserverpb.AlarmMember, error) {
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := cli.AlarmList(actx)
	if err != nil {
		return nil, fmt.Errorf("list etcd alarms: %w", err)
	}
	var out []*etcdserverpb.AlarmMember
	for _, a := range resp.Alarms {
		if a.Alarm == etcdserverpb.AlarmType_NOSPACE {
			out = append(out, a)
		}
	}
	return out, nil
}

// NoSpace tells whether etcd's NOSPACE alarm is raised, for `status`.
func NoSpace(ctx context.Context, cli *clientv3.Client) (bool, error) {
	a, err := noSpaceAlarms(ctx, cli)
	return len(a) > 0, err
}

func recordSizes(ms []etcd.MemberStatus) {
	for _, m := range ms {
		if !answered(&m) {
			continue
		}
		dbSize.WithLabelValues(m.Name).Set(float64(m.DBSize))
		dbInUse.WithLabelValues(m.Name).Set(float64(m.DBSizeInUse))
		dbQuota.WithLabelValues(m.Name).Set(float64(m.DBSizeQuota))
	}
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
