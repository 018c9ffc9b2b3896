package snapshot

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSchedulerSkipsPrunesAndRecords(t *testing.T) {
	src, _ := source(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "snapshots")
	// Another master's snapshot in a shared directory is never pruned.
	other := *src.Config
	other.Name = "m9"
	if _, err := Save(ctx, Source{Config: &other, State: src.State, Client: src.Client}, filepath.Join(dir, DefaultName(src.State.ClusterID, "m9", time.Now()))); err != nil {
		t.Fatal(err)
	}
	s := NewScheduler(src, Schedule{Dir: dir, Interval: time.Hour, Retention: 2}, t.Logf)
	write := func() {
		if _, err := src.Client.Put(ctx, "/registry/configmaps/default/changed", time.Now().String()); err != nil {
			t.Fatal(err)
		}
	}
	count := func() int { return len(s.own()) }

	s.RunOnce(ctx)
	if r := s.Record(); count() != 1 || r.LastRevision == 0 || r.Failures != 0 || r.LastFile == "" {
		t.Fatalf("after the first run: %d own snapshots, record %+v", count(), r)
	}
	// Nothing new (the record it wrote itself does not count): skipped.
	s.RunOnce(ctx)
	s.RunOnce(ctx)
	if r := s.Record(); count() != 1 || r.Skipped != 2 {
		t.Fatalf("runs without changes: %d own snapshots, %d skipped; want 1 and 2", count(), r.Skipped)
	}
	for range 3 {
		write()
		time.Sleep(2 * time.Millisecond) // distinct file names
		s.RunOnce(ctx)
	}
	own := s.own()
	if len(own) != 2 {
		t.Fatalf("%d own snapshots kept, want the retention of 2", len(own))
	}
	last := s.Record()
	if own[1].Path != last.LastFile || own[1].Manifest.Revision != last.LastRevision {
		t.Errorf("the newest kept snapshot %s (rev %d) is not the last one taken %s (rev %d)", own[1].Path, own[1].Manifest.Revision, last.LastFile, last.LastRevision)
	}
	if all, _ := List(dir); len(all) != 3 {
		t.Errorf("%d snapshots in the directory, want 2 own and the other master's", len(all))
	}
	recs, err := ReadRecords(ctx, src.Client)
	if err != nil || len(recs) != 1 || recs[0].Master != "m1" || recs[0].LastRevision != last.LastRevision || recs[0].Skipped != 2 {
		t.Fatalf("records in etcd: %v %+v", err, recs)
	}

	// A directory that cannot be written: counted, recorded, nothing kept.
	bad := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(bad, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f := NewScheduler(src, Schedule{Dir: filepath.Join(bad, "sub"), Interval: time.Hour, Retention: 2}, t.Logf)
	f.RunOnce(ctx)
	if r := f.Record(); r.Failures != 1 || r.LastError == "" || !r.LastSuccess.IsZero() {
		t.Errorf("failed run recorded as %+v", r)
	}
}

// TestSchedulerWaitsForTheInterval: a restart does not snapshot at once
// when a recent snapshot of this master exists.
func TestSchedulerWaitsForTheInterval(t *testing.T) {
	src, _ := source(t)
	dir := filepath.Join(t.TempDir(), "snapshots")
	if _, err := Save(context.Background(), src, filepath.Join(dir, DefaultName(src.State.ClusterID, "m1", time.Now()))); err != nil {
		t.Fatal(err)
	}
	s := NewScheduler(src, Schedule{Dir: dir, Interval: time.Hour, Retention: 5}, t.Logf)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	s.Run(ctx)
	if n := len(s.own()); n != 1 {
		t.Errorf("%d snapshots after a restart within the interval, want the 1 from before", n)
	}
	if r := s.Record(); r.LastRevision == 0 || r.LastFile == "" {
		t.Errorf("the record does not show the existing snapshot: %+v", r)
	}
}
