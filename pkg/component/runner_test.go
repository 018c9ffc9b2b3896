package component

import (
	"bytes"
	"context"
	"errors"
	"github.com/k8s-master/k8s-master/pkg/component/componenttest"
	"regexp"
	"strings"
	"testing"
	"time"
)

type fake = componenttest.Fake

// exiting is a fake that can stop on its own.
type exiting struct {
	*fake
	exited chan error
}

func (e exiting) Exited() <-chan error { return e.exited }

func startStep(name string, cs ...Component) Step {
	return Step{Name: name, Do: func(ctx context.Context, r *Runner) error {
		for _, c := range cs {
			if err := r.Start(ctx, c); err != nil {
				return err
			}
		}
		return r.Ready(ctx, cs...)
	}}
}

func equal(t *testing.T, got, want []string) {
	t.Helper()
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
}

func TestRunStartsInOrderAndStopsInReverseOnce(t *testing.T) {
	j := &componenttest.Journal{}
	a, b, c := &fake{ID: "a", J: j}, &fake{ID: "b", J: j}, &fake{ID: "c", J: j}
	var out bytes.Buffer
	r := NewRunner(&out)
	err := r.Run(context.Background(), []Step{
		startStep("a ready", a),
		{Do: func(_ context.Context, r *Runner) error {
			r.OnStop("release lock", func(context.Context) error { j.Add("release lock"); return nil })
			return nil
		}},
		startStep("b and c ready", b, c),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := r.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	equal(t, j.Lines(), []string{"start a", "ready a", "start b", "start c", "ready b", "ready c",
		"stop c", "stop b", "release lock", "stop a"})
	for _, f := range []*fake{a, b, c} {
		if f.Stops() != 1 {
			t.Errorf("%s stopped %d times, want once", f.ID, f.Stops())
		}
	}
	// Progress: one line per named step, none for the silent one.
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("progress %q: want 2 lines", out.String())
	}
	line := regexp.MustCompile(`^  (.{40}) +\d+\.\d\d s  ok$`)
	for i, want := range []string{"a ready", "b and c ready"} {
		m := line.FindStringSubmatch(lines[i])
		if m == nil || strings.TrimSpace(m[1]) != want {
			t.Errorf("progress line %q: want step %q in today's format", lines[i], want)
		}
	}
}

func TestFailedStartRollsBackExactlyWhatRan(t *testing.T) {
	j := &componenttest.Journal{}
	a := &fake{ID: "a", J: j}
	broken := &fake{ID: "broken", J: j, StartErr: errors.New("port taken")}
	never := &fake{ID: "never", J: j}
	var out bytes.Buffer
	r := NewRunner(&out)
	err := r.Run(context.Background(), []Step{
		{Do: func(_ context.Context, r *Runner) error {
			r.OnRollback("remove files", func(context.Context) error { j.Add("remove files"); return nil })
			return nil
		}},
		startStep("a ready", a),
		startStep("broken ready", broken),
		startStep("never ready", never),
	})
	if err == nil || !strings.Contains(err.Error(), "broken: port taken") {
		t.Fatalf("err = %v, want the failing component named", err)
	}
	if !strings.Contains(out.String(), "broken ready") || !strings.Contains(out.String(), "FAILED") || strings.Contains(out.String(), "never ready") {
		t.Errorf("progress %q: want the failed step marked and no later step", out.String())
	}
	r.Rollback(5 * time.Second)
	// The half-started component is stopped too: it may hold what it
	// opened before failing.
	equal(t, j.Lines(), []string{"start a", "ready a", "start broken", "stop broken", "stop a", "remove files"})
	if never.Stops() != 0 {
		t.Error("a component that never started was stopped")
	}
}

func TestCommitKeepsWork(t *testing.T) {
	j := &componenttest.Journal{}
	a, b := &fake{ID: "a", J: j}, &fake{ID: "b", J: j, StartErr: errors.New("boom")}
	r := NewRunner(nil)
	err := r.Run(context.Background(), []Step{
		{Do: func(_ context.Context, r *Runner) error {
			r.OnRollback("remove files", func(context.Context) error { j.Add("remove files"); return nil })
			return nil
		}},
		startStep("", a),
		{Do: func(_ context.Context, r *Runner) error { r.Commit(); return nil }},
		startStep("", b),
	})
	if err == nil {
		t.Fatal("want b's failure")
	}
	if !r.Committed() {
		t.Fatal("Committed() = false after Commit")
	}
	r.Rollback(5 * time.Second)
	equal(t, j.Lines(), []string{"start a", "ready a", "start b", "stop b", "stop a"})
}

func TestNeverReadyFailsWithItsName(t *testing.T) {
	j := &componenttest.Journal{}
	slow := &fake{ID: "slow", J: j, NeverReady: true}
	r := NewRunner(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := r.Run(ctx, []Step{startStep("slow ready", slow)})
	if err == nil || !strings.HasPrefix(err.Error(), "slow: ") || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want slow's deadline", err)
	}
	r.Rollback(time.Second)
	equal(t, j.Lines(), []string{"start slow", "stop slow"})
}

func TestHangingStopLeavesTheOthersTheirShare(t *testing.T) {
	j := &componenttest.Journal{}
	a, b := &fake{ID: "a", J: j}, &fake{ID: "b", J: j}
	hang := &fake{ID: "hang", J: j, StopHangs: true}
	r := NewRunner(nil)
	if err := r.Run(context.Background(), []Step{startStep("", a, b, hang)}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	err := r.Stop(3 * time.Second)
	took := time.Since(t0)
	if err == nil || !strings.Contains(err.Error(), "hang") {
		t.Fatalf("err = %v, want the hanging stop reported", err)
	}
	equal(t, j.Lines(), []string{"start a", "start b", "start hang", "ready a", "ready b", "ready hang", "stop hang", "stop b", "stop a"})
	// hang may use the budget less the reserve of the two after it.
	if took > 3*time.Second+2*time.Second {
		t.Errorf("stop took %s, over its 3 s budget", took)
	}
	if took < 3*time.Second-2*StopReserve-200*time.Millisecond {
		t.Errorf("stop took %s: the hanging stop did not get its share", took)
	}
}

func TestExitedNamesTheComponent(t *testing.T) {
	j := &componenttest.Journal{}
	e := exiting{&fake{ID: "etcd", J: j}, make(chan error, 1)}
	r := NewRunner(nil)
	if err := r.Run(context.Background(), []Step{startStep("", e)}); err != nil {
		t.Fatal(err)
	}
	e.exited <- errors.New("disk full")
	select {
	case x := <-r.Exited():
		if x.Name != "etcd" || x.Error() != "etcd failed: disk full; see the log" {
			t.Fatalf("exit = %+v (%v)", x, x)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no exit reported")
	}
	r.Stop(time.Second)
}
