package snapshot

import (
	"context"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ScheduledRate is how fast a scheduled snapshot reads etcd and writes its
// files. At full speed a 100 MB snapshot saturates the disk for about a
// second, and every etcd fsync (every API write) queues behind it; paced,
// a scheduled snapshot takes longer but the API does not notice it.
// `snapshot save`, run by a person who waits for it, is not paced.
const ScheduledRate = 40 << 20 // bytes per second

const (
	// paceStep is how much is written between two looks at the clock.
	paceStep = 256 << 10
	// flushStep is how often the kernel is asked to start writing back
	// what was written, so that dirty pages never pile up into one burst.
	flushStep = 4 << 20
)

// pacedFile writes to f at most rate bytes per second (0: no limit) and
// starts the write-back of every flushStep bytes as it goes.
type pacedFile struct {
	ctx     context.Context
	f       *os.File
	rate    int64
	start   time.Time
	written int64
	flushed int64
}

func newPacedFile(ctx context.Context, f *os.File, rate int64) *pacedFile {
	return &pacedFile{ctx: ctx, f: f, rate: rate, start: time.Now()}
}

func (p *pacedFile) Write(b []byte) (int, error) {
	total := 0
	for len(b) > 0 {
		n := min(len(b), paceStep)
		w, err := p.f.Write(b[:n])
		total += w
		p.written += int64(w)
		if err != nil {
			return total, err
		}
		b = b[n:]
		if p.written-p.flushed >= flushStep {
			// Best effort: where sync_file_range is missing, the final
			// fsync still makes the file durable.
			_ = unix.SyncFileRange(int(p.f.Fd()), p.flushed, p.written-p.flushed, unix.SYNC_FILE_RANGE_WRITE)
			p.flushed = p.written
		}
		if p.rate > 0 {
			due := p.start.Add(time.Duration(float64(p.written) / float64(p.rate) * float64(time.Second)))
			if wait := time.Until(due); wait > 0 {
				select {
				case <-time.After(wait):
				case <-p.ctx.Done():
					return total, p.ctx.Err()
				}
			}
		}
	}
	return total, nil
}
