package snapshot

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/component-base/metrics"

	"github.com/k8s-master/k8s-master/pkg/process"
)

// Schedule is when and where a master snapshots itself.
type Schedule struct {
	Dir       string
	Interval  time.Duration
	Retention int
	// Rate bounds the bytes per second a scheduled snapshot reads and
	// writes: 0 is ScheduledRate, negative no limit.
	Rate int64
}

// Record is a master's scheduled-snapshot state, kept in etcd under
// RecordPrefix+name so that `status` on any master shows every master's.
type Record struct {
	Master    string    `json:"master"`
	Dir       string    `json:"dir"`
	Interval  string    `json:"interval"`
	Retention int       `json:"retention"`
	Updated   time.Time `json:"updated"`
	// The last snapshot written.
	LastSuccess  time.Time `json:"lastSuccess,omitzero"`
	LastFile     string    `json:"lastFile,omitempty"`
	LastBytes    int64     `json:"lastBytes,omitempty"`
	LastRevision int64     `json:"lastRevision,omitempty"`
	LastSeconds  float64   `json:"lastSeconds,omitempty"`
	// Skipped counts runs with nothing new since the last snapshot;
	// Failures runs that failed, the last one's error in LastError.
	Skipped       int       `json:"skipped"`
	Failures      int       `json:"failures"`
	LastError     string    `json:"lastError,omitempty"`
	LastErrorTime time.Time `json:"lastErrorTime,omitzero"`
}

// RecordPrefix is where masters keep their Records in etcd.
const RecordPrefix = "/k8s-master/snapshots/"

// ReadRecords reads every master's Record.
func ReadRecords(ctx context.Context, cli *clientv3.Client) ([]Record, error) {
	resp, err := cli.Get(ctx, RecordPrefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, err
	}
	var out []Record
	for _, kv := range resp.Kvs {
		var r Record
		if json.Unmarshal(kv.Value, &r) == nil {
			out = append(out, r)
		}
	}
	return out, nil
}

// Scheduled snapshots' metrics, in the registry the apiserver serves at
// /metrics.
var (
	lastSuccessGauge = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace: "k8s_master", Subsystem: "snapshot", Name: "last_success_timestamp_seconds",
		Help: "Unix time of this master's last scheduled snapshot written.", StabilityLevel: metrics.ALPHA,
	})
	lastBytesGauge = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace: "k8s_master", Subsystem: "snapshot", Name: "last_size_bytes",
		Help: "Size of this master's last scheduled snapshot.", StabilityLevel: metrics.ALPHA,
	})
	lastSecondsGauge = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace: "k8s_master", Subsystem: "snapshot", Name: "last_duration_seconds",
		Help: "Seconds this master's last scheduled snapshot took to write and verify.", StabilityLevel: metrics.ALPHA,
	})
	failuresCounter = metrics.NewCounter(&metrics.CounterOpts{
		Namespace: "k8s_master", Subsystem: "snapshot", Name: "failures_total",
		Help: "Scheduled snapshots of this master that failed.", StabilityLevel: metrics.ALPHA,
	})
	registerOnce sync.Once
)

// Scheduler snapshots one master every Interval, skipping runs while its
// etcd revision has not moved, and keeps the newest Retention of its own
// snapshots in Dir.
type Scheduler struct {
	src   Source
	sched Schedule
	logf  func(format string, args ...any)

	mu  sync.Mutex
	rec Record
	// expect is the etcd revision while nothing but this scheduler's own
	// record writes happened since its last snapshot; 0: unknown.
	expect int64
}

// NewScheduler makes a scheduler; logf receives one line per run that did
// something or failed.
func NewScheduler(src Source, s Schedule, logf func(string, ...any)) *Scheduler {
	registerOnce.Do(func() { process.RegisterMetrics(lastSuccessGauge, lastBytesGauge, lastSecondsGauge, failuresCounter) })
	return &Scheduler{src: src, sched: s, logf: logf, rec: Record{
		Master: src.Config.Name, Dir: s.Dir, Interval: s.Interval.String(), Retention: s.Retention,
	}}
}

// Run snapshots until ctx ends. The first run comes one interval after the
// newest snapshot of this master in Dir (after one interval when there is
// none), so restarts do not add snapshots.
func (s *Scheduler) Run(ctx context.Context) {
	wait := s.sched.Interval
	if newest, ok := s.newestOwn(); ok {
		s.mu.Lock()
		s.rec.LastSuccess, s.rec.LastFile, s.rec.LastRevision = newest.Manifest.Created, newest.Path, newest.Manifest.Revision
		s.rec.LastBytes = newest.Bytes
		s.expect = newest.Manifest.Revision
		s.mu.Unlock()
		wait = max(0, s.sched.Interval-time.Since(newest.Manifest.Created))
	}
	s.publish(ctx)
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.RunOnce(ctx)
		t.Reset(s.sched.Interval)
	}
}

// RunOnce takes one scheduled snapshot unless nothing changed since the
// last, prunes old ones, and records the outcome.
func (s *Scheduler) RunOnce(ctx context.Context) {
	err := s.take(ctx)
	if ctx.Err() != nil {
		return // stopping: not a failure
	}
	if err != nil {
		s.mu.Lock()
		s.rec.Failures++
		s.rec.LastError, s.rec.LastErrorTime = err.Error(), time.Now().UTC()
		s.mu.Unlock()
		failuresCounter.Inc()
		s.logf("scheduled snapshot failed: %v", err)
	}
	s.publish(ctx)
}

func (s *Scheduler) take(ctx context.Context) error {
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// A serializable read of nothing: its header carries the member's
	// current revision.
	resp, err := s.src.Client.Get(gctx, RecordPrefix+"\x00", clientv3.WithSerializable(), clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("read the etcd revision: %w", err)
	}
	s.mu.Lock()
	unchanged := s.expect != 0 && resp.Header.Revision == s.expect
	if unchanged {
		s.rec.Skipped++
	}
	s.mu.Unlock()
	if unchanged {
		return nil
	}
	start := time.Now()
	out := filepath.Join(s.sched.Dir, DefaultName(s.src.State.ClusterID, s.src.Config.Name, start))
	m, err := save(ctx, s.src, out, s.rate())
	if err != nil {
		return err
	}
	info, err := os.Stat(out)
	if err != nil {
		return err
	}
	took := time.Since(start)
	s.mu.Lock()
	s.rec.LastSuccess, s.rec.LastFile, s.rec.LastBytes, s.rec.LastRevision, s.rec.LastSeconds = m.Created, out, info.Size(), m.Revision, took.Seconds()
	s.expect = m.Revision
	s.mu.Unlock()
	lastSuccessGauge.Set(float64(m.Created.Unix()))
	lastBytesGauge.Set(float64(info.Size()))
	lastSecondsGauge.Set(took.Seconds())
	s.logf("scheduled snapshot %s: etcd revision %d, %d bytes, %.1f s", out, m.Revision, info.Size(), took.Seconds())
	return s.prune()
}

func (s *Scheduler) rate() int64 {
	switch {
	case s.sched.Rate == 0:
		return ScheduledRate
	case s.sched.Rate < 0:
		return 0
	}
	return s.sched.Rate
}

// newestOwn is this master's newest snapshot of this cluster in Dir.
func (s *Scheduler) newestOwn() (Entry, bool) {
	own := s.own()
	if len(own) == 0 {
		return Entry{}, false
	}
	return own[len(own)-1], true
}

// own lists this master's readable snapshots of this cluster, oldest first.
func (s *Scheduler) own() []Entry {
	entries, _ := List(s.sched.Dir)
	var own []Entry
	for _, e := range entries {
		if m := e.Manifest; m != nil && m.Master == s.src.Config.Name && m.ClusterID == s.src.State.ClusterID {
			own = append(own, e)
		}
	}
	return own
}

// prune deletes this master's oldest snapshots beyond the retention;
// other masters' and other clusters' files in a shared directory are left
// alone.
func (s *Scheduler) prune() error {
	own := s.own()
	for len(own) > s.sched.Retention {
		if err := os.Remove(own[0].Path); err != nil {
			return fmt.Errorf("delete an old snapshot: %w", err)
		}
		own = own[1:]
	}
	return nil
}

// publish writes the record to etcd (best effort: status shows it).
func (s *Scheduler) publish(ctx context.Context) {
	s.mu.Lock()
	s.rec.Updated = time.Now().UTC()
	data, _ := json.Marshal(s.rec)
	s.mu.Unlock()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := s.src.Client.Put(pctx, RecordPrefix+s.src.Config.Name, string(data))
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err != nil:
		s.expect = 0
		if ctx.Err() == nil {
			s.logf("could not record the snapshot state in etcd: %v", err)
		}
	case s.expect != 0 && resp.Header.Revision == s.expect+1:
		// Only this put since the last snapshot: still nothing new.
		s.expect = resp.Header.Revision
	default:
		s.expect = 0 // others wrote since the last snapshot
	}
}

// Record is the scheduler's state now.
func (s *Scheduler) Record() Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rec
}
