package control

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/k8s-master/k8s-master/pkg/datadir"
)

// fakeMaster records the requests; Stop releases the data directory's
// lock as a master's stop does.
type fakeMaster struct {
	mu        sync.Mutex
	leaving   bool
	leaveErr  error
	stops     int
	renewals  int
	lock      *datadir.Lock
	keepsLock bool
}

func (f *fakeMaster) PrepareLeave(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.leaveErr != nil {
		return f.leaveErr
	}
	f.leaving = true
	return nil
}

func (f *fakeMaster) RenewCertificates(context.Context) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.renewals++
	return 12, nil
}

func (f *fakeMaster) CancelLeave() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leaving = false
}

func (f *fakeMaster) Stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stops++
	if !f.keepsLock {
		f.lock.Release()
	}
}

// serve runs a fake master on a new data directory: lock held, socket
// served.
func serve(t *testing.T) (string, *fakeMaster, *Server) {
	t.Helper()
	return serveIn(t, t.TempDir())
}

func serveIn(t *testing.T, dir string) (string, *fakeMaster, *Server) {
	t.Helper()
	lock, err := datadir.Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lock.Release)
	f := &fakeMaster{lock: lock}
	s := NewServer(SocketPath(dir), f)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(context.Background()) })
	return dir, f, s
}

func TestLeaveAndStop(t *testing.T) {
	dir, f, _ := serve(t)
	ctx := context.Background()
	c, err := Dial(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if c.PID() != os.Getpid() {
		t.Errorf("pid %d, want %d", c.PID(), os.Getpid())
	}
	if err := c.PrepareLeave(ctx); err != nil || !f.leaving {
		t.Fatalf("PrepareLeave: %v, leaving %v", err, f.leaving)
	}
	if err := c.CancelLeave(ctx); err != nil || f.leaving {
		t.Fatalf("CancelLeave: %v, leaving %v", err, f.leaving)
	}
	if n, err := c.RenewCertificates(ctx); err != nil || n != 12 || f.renewals != 1 {
		t.Fatalf("RenewCertificates: %d, %v; %d renewals", n, err, f.renewals)
	}
	f.leaveErr = errors.New("no VIP manager yet")
	if err := c.PrepareLeave(ctx); err == nil || !strings.Contains(err.Error(), "no VIP manager yet") {
		t.Errorf("a refused PrepareLeave: %v", err)
	}
	if err := c.StopMaster(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, running := datadir.Running(dir); running || f.stops != 1 {
		t.Errorf("after StopMaster: running %v, %d stops", running, f.stops)
	}
}

func TestStopMasterTimeout(t *testing.T) {
	dir, f, _ := serve(t)
	f.keepsLock = true
	c, err := Dial(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	err = c.StopMaster(context.Background(), 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "did not stop") || !strings.Contains(err.Error(), "kill") {
		t.Errorf("a master that does not stop: %v", err)
	}
}

// A master that stopped by itself (its member removed) before it was asked
// to: nothing to wait for.
func TestStopMasterAlreadyGone(t *testing.T) {
	dir, f, s := serve(t)
	c, err := Dial(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	s.Stop(context.Background())
	f.lock.Release()
	if err := c.StopMaster(context.Background(), time.Second); err != nil {
		t.Error(err)
	}
	if f.stops != 0 {
		t.Errorf("%d stops sent to a stopped master", f.stops)
	}
}

func TestDialErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := Dial(context.Background(), dir)
	if !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "no master is running on "+dir) {
		t.Errorf("no master: %v", err)
	}
	// Lock held, nothing on the socket: a master that does not answer.
	lock, err := datadir.Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Release()
	_, err = Dial(context.Background(), dir)
	if err == nil || !strings.Contains(err.Error(), "does not answer on its control socket") || !strings.Contains(err.Error(), "pid ") {
		t.Errorf("a master without a socket: %v", err)
	}
}

func TestSocketFile(t *testing.T) {
	dir, _, s := serve(t)
	fi, err := os.Stat(SocketPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %s, want a socket with 0600", fi.Mode())
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
	// Idempotent, and the file goes.
	for range 2 {
		if err := s.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(SocketPath(dir)); !os.IsNotExist(err) {
		t.Errorf("socket file after Stop: %v", err)
	}
	if err := s.Start(context.Background()); err == nil {
		t.Error("a stopped server started again")
	}
	// Stop of a server never started.
	if err := NewServer(SocketPath(dir), &fakeMaster{}).Stop(context.Background()); err != nil {
		t.Error(err)
	}
}

func TestStaleSocket(t *testing.T) {
	dir := t.TempDir()
	path := SocketPath(dir)
	// What a crashed master leaves: a socket file nobody listens on.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	s := NewServer(path, &fakeMaster{})
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	defer s.Stop(context.Background())
	if _, err := Dial(context.Background(), dir); err != nil {
		t.Error(err)
	}

	// Anything but a socket is left alone.
	other := t.TempDir()
	if err := os.WriteFile(SocketPath(other), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = NewServer(SocketPath(other), &fakeMaster{}).Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "regular file is in the way") {
		t.Errorf("over a regular file: %v", err)
	}
}

// A data directory whose socket path is longer than a sockaddr_un holds
// still gets its control socket.
func TestLongDataDirPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if n := len(SocketPath(dir)); n <= maxSocketPath {
		t.Fatalf("socket path only %d long", n)
	}
	dir, f, _ := serveIn(t, dir)
	if fi, err := os.Stat(SocketPath(dir)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket at its real path: %v %v", fi, err)
	}
	c, err := Dial(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.PrepareLeave(context.Background()); err != nil || !f.leaving {
		t.Fatalf("PrepareLeave: %v, leaving %v", err, f.leaving)
	}
}
