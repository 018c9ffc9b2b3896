package datadir

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/k8s-master/k8s-master/pkg/layout"
	"github.com/k8s-master/k8s-master/pkg/poll"
)

// lockFile is held (flock) by the master running on a data directory and
// holds its pid, so that a second master on the same directory is refused
// and `leave` can find the running one.
func lockFile(dir string) string { return layout.Layout{Root: dir}.Lock() }

// Lock is a held data-directory lock.
type Lock struct{ f *os.File }

// Acquire takes the lock or says which process holds it.
func Acquire(dir string) (*Lock, error) {
	f, err := os.OpenFile(lockFile(dir), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock data directory %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			pid, _ := readPID(dir)
			return nil, fmt.Errorf("another k8s-master (pid %d) is running on %s; stop it first", pid, dir)
		}
		return nil, fmt.Errorf("lock data directory %s: %w", dir, err)
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return &Lock{f: f}, nil
}

// Release gives the lock up.
func (l *Lock) Release() {
	if l == nil || l.f == nil {
		return
	}
	syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	l.f.Close()
	l.f = nil
}

func readPID(dir string) (int, error) {
	data, err := os.ReadFile(lockFile(dir))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(data)))
}

// Running returns the pid of the master holding the lock, if any.
func Running(dir string) (int, bool) {
	f, err := os.OpenFile(lockFile(dir), os.O_RDWR, 0)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		return 0, false
	}
	pid, err := readPID(dir)
	return pid, err == nil
}

// StopRunning sends SIGTERM to the master running on dir and waits until it
// has released the lock.
func StopRunning(dir string, timeout time.Duration) error {
	pid, ok := Running(dir)
	if !ok {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop the master (pid %d): %w", pid, err)
	}
	return poll.Until(context.Background(), 100*time.Millisecond, timeout, func(context.Context) (bool, error) {
		_, running := Running(dir)
		return !running, nil
	}, func() error { return fmt.Errorf("the master (pid %d) did not stop within %s", pid, timeout) })
}
