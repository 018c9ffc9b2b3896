package datadir

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/k8s-master/k8s-master/pkg/layout"
)

// lockFile is held (flock) by the master running on a data directory and
// holds its pid, so that a second master on the same directory is refused
// and other commands can tell whether a master runs on it.
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
