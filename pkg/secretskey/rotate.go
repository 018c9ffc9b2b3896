package secretskey

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/k8s-master/k8s-master/pkg/layout"
	"github.com/k8s-master/k8s-master/pkg/pki"
)

// Rotator runs `secrets rotate-key` from a master's host: it records each
// phase in etcd, waits for every master to load it, and rewrites the
// encrypted objects itself. Killed at any point, a new run resumes from
// the recorded phase.
type Rotator struct {
	Client *clientv3.Client
	// Layout is the local master's data directory: its sa.key opens the
	// sealed keys; its configuration file is the one a first rotation
	// starts from.
	Layout layout.Layout
	Out    io.Writer
	// WaitTimeout bounds each wait for the masters (default 3 minutes).
	WaitTimeout time.Duration
	// StopAfter, for tests, ends the run with an error right after the
	// named phase was recorded (as if it had been killed there).
	StopAfter Phase
	// Workers rewriting in parallel (default 16).
	Workers int
}

// Result is what a finished rotation reports.
type Result struct {
	Key       string  `json:"key"`
	Rewritten int     `json:"rewritten"`
	Verified  int     `json:"verified"`
	Skipped   int     `json:"skipped"`
	Seconds   float64 `json:"rewriteSeconds"`
	PerSecond float64 `json:"rewritePerSecond"`
}

// ErrStopped is returned when StopAfter ended the run.
var ErrStopped = errors.New("stopped by the test hook")

func (r *Rotator) printf(format string, a ...any) {
	if r.Out != nil {
		fmt.Fprintf(r.Out, format+"\n", a...)
	}
}

// Run rotates the key, or finishes the rotation a killed run left.
func (r *Rotator) Run(ctx context.Context) (*Result, error) {
	sa, err := os.ReadFile(filepath.Join(r.Layout.PKIDir(), pki.SAKey))
	if err != nil {
		return nil, fmt.Errorf("read the service-account key that seals the encryption keys: %w", err)
	}
	sealer, err := NewSealer(sa)
	if err != nil {
		return nil, err
	}
	sess, err := concurrency.NewSession(r.Client, concurrency.WithTTL(10))
	if err != nil {
		return nil, fmt.Errorf("open an etcd session for the rotation lock: %w", err)
	}
	defer sess.Close()
	mu := concurrency.NewMutex(sess, lockPrefix)
	if err := mu.TryLock(ctx); err != nil {
		if errors.Is(err, concurrency.ErrLocked) {
			return nil, fmt.Errorf("another k8s-master secrets rotate-key is running in this cluster; wait for it to end (k8s-master status shows the phase); the lock of a run that was killed lapses within 10 s, then rerun")
		}
		return nil, fmt.Errorf("take the rotation lock in etcd: %w", err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = mu.Unlock(uctx)
	}()

	d, modRev, _, err := readDesired(ctx, r.Client)
	if err != nil {
		return nil, err
	}
	if d == nil {
		// The first rotation: the cluster runs the configuration init
		// made, the same file on every master; it becomes the record.
		b, err := os.ReadFile(r.Layout.EncryptionConfig())
		if err != nil {
			return nil, fmt.Errorf("read this master's encryption configuration: %w", err)
		}
		keys, err := Parse(b)
		if err != nil {
			return nil, err
		}
		sks, err := sealer.SealAll(keys)
		if err != nil {
			return nil, err
		}
		d = &Desired{Keys: sks}
	}
	res := &Result{}
	if d.Rotation == nil {
		keys, err := sealer.OpenAll(d.Keys)
		if err != nil {
			return nil, err
		}
		nk, err := NewKey(Names(keys))
		if err != nil {
			return nil, err
		}
		snk, err := sealer.Seal(nk)
		if err != nil {
			return nil, err
		}
		next, err := Start(*d, snk, time.Now())
		if err != nil {
			return nil, err
		}
		if modRev, err = r.record(ctx, next, modRev); err != nil {
			return nil, err
		}
		d = &next
		r.printf("rotating the secrets-encryption key from %s to %s", d.Rotation.From, d.Rotation.To)
		r.printf("phase 1/4: %s recorded: every master adds %s after %s", d.Rotation.Phase, d.Rotation.To, d.Rotation.From)
		if err := r.hook(d.Rotation.Phase); err != nil {
			return nil, err
		}
	} else {
		r.printf("resuming the rotation from %s to %s (started %s) at phase %s", d.Rotation.From, d.Rotation.To, d.Rotation.Started.Local().Format(time.RFC3339), d.Rotation.Phase)
	}
	res.Key = d.Rotation.To
	for {
		t, err := Advance(*d, time.Now())
		if err != nil {
			return nil, err
		}
		for _, a := range t.Needs {
			switch a {
			case WaitLoaded:
				if err := r.waitLoaded(ctx, sealer, d); err != nil {
					return nil, err
				}
			case Rewrite:
				keys, err := sealer.OpenAll(d.Keys)
				if err != nil {
					return nil, err
				}
				rw := &rewriter{cli: r.Client, keys: keys, workers: r.Workers, dir: r.Layout.Root, printf: r.printf}
				if err := rw.run(ctx, res); err != nil {
					return nil, err
				}
			}
		}
		if modRev, err = r.record(ctx, t.Next, modRev); err != nil {
			return nil, err
		}
		d = &t.Next
		if t.Done {
			r.printf("done: %s is the only key; every encrypted object was verified under it", res.Key)
			return res, nil
		}
		r.printf("phase %s: %s recorded", phaseNumber(d.Rotation.Phase), d.Rotation.Phase)
		if err := r.hook(d.Rotation.Phase); err != nil {
			return nil, err
		}
	}
}

func phaseNumber(p Phase) string {
	switch p {
	case PhaseAdding:
		return "1/4"
	case PhasePrimary:
		return "2/4"
	case PhaseRewritten:
		return "3/4"
	case PhaseRemoving:
		return "4/4"
	}
	return "?"
}

func (r *Rotator) hook(p Phase) error {
	if r.StopAfter != "" && r.StopAfter == p {
		return fmt.Errorf("%w after phase %s; rerun k8s-master secrets rotate-key to finish", ErrStopped, p)
	}
	return nil
}

// record writes next over the desired configuration of modRev.
func (r *Rotator) record(ctx context.Context, next Desired, modRev int64) (int64, error) {
	rev, err := writeDesired(ctx, r.Client, next, modRev)
	if errors.Is(err, errConflict) {
		return 0, fmt.Errorf("%w (another rotation, or a restore?); rerun k8s-master secrets rotate-key to resume from what is recorded", err)
	}
	return rev, err
}

// waitLoaded waits until the apiserver of every etcd member's master has
// loaded d. Members, not registered masters: a master registers once its
// apiserver serves, but a joining one is a member before its apiserver
// starts, and it reads the desired configuration after it became one, so
// whatever joins after this wait began starts with d or later.
func (r *Rotator) waitLoaded(ctx context.Context, sealer *Sealer, d *Desired) error {
	keys, err := sealer.OpenAll(d.Keys)
	if err != nil {
		return err
	}
	want := Hash(Render(keys))
	timeout := r.WaitTimeout
	if timeout == 0 {
		timeout = 3 * time.Minute
	}
	start := time.Now()
	lastSaid := time.Time{}
	for {
		lagging, err := r.lagging(ctx, want)
		if err != nil {
			return err
		}
		if len(lagging) == 0 {
			r.printf("  every master's apiserver runs keys %s (primary %s) after %.1f s", strings.Join(d.KeyNames(), ", "), d.Primary(), time.Since(start).Seconds())
			return nil
		}
		if time.Since(start) > timeout {
			return fmt.Errorf("masters %s have not loaded the encryption configuration with keys %s within %s: start them (k8s-master start), upgrade a master whose release predates secrets rotate-key (it never reports), or remove a master that is gone for good (k8s-master member remove NAME), then rerun k8s-master secrets rotate-key to resume", strings.Join(lagging, ", "), strings.Join(d.KeyNames(), ", "), timeout)
		}
		if time.Since(lastSaid) > 5*time.Second {
			r.printf("  waiting for %s to load keys %s", strings.Join(lagging, ", "), strings.Join(d.KeyNames(), ", "))
			lastSaid = time.Now()
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return err
		}
	}
}

// lagging names the members whose master has not reported want.
func (r *Rotator) lagging(ctx context.Context, want string) ([]string, error) {
	ml, err := r.Client.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("list the etcd members: %w", err)
	}
	reports, err := readLoaded(ctx, r.Client)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ml.Members {
		switch {
		case m.Name == "":
			out = append(out, fmt.Sprintf("(member %x, not started yet)", m.ID))
		case reports[m.Name].Hash != want:
			out = append(out, m.Name)
		}
	}
	slices.Sort(out)
	return out, nil
}
