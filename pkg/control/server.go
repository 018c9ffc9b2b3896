package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
)

// Handler is what the running master does on a request.
type Handler interface {
	// PrepareLeave is called before this master's etcd member is removed
	// from the cluster: from now on the master steps down from the VIP (its
	// health check fails with vip.ErrStepDown) and treats its etcd member
	// stopping as a clean stop (exit status 0, "this master left the
	// cluster"). It returns once that is in force.
	PrepareLeave(ctx context.Context) error
	// CancelLeave undoes PrepareLeave when the removal failed: the master
	// may hold the VIP again and an etcd stop is a failure again.
	CancelLeave()
	// Stop starts a graceful stop, exactly as SIGTERM does, and returns
	// without waiting for it.
	Stop()
	// RenewCertificates re-issues every leaf certificate of the master,
	// which its parts take up without a restart; it returns how many.
	RenewCertificates(ctx context.Context) (int, error)
}

// Server serves the control socket of the running master.
type Server struct {
	path string
	h    Handler

	mu      sync.Mutex
	srv     *http.Server
	served  chan struct{} // closed when Serve returned
	stopped bool
}

// NewServer serves h on the unix socket at socketPath (SocketPath of the
// data directory) once started.
func NewServer(socketPath string, h Handler) *Server {
	return &Server{path: socketPath, h: h}
}

// Name implements component.Component.
func (s *Server) Name() string { return "control socket" }

// Start listens on the socket and serves it in the background. A socket
// file already there is a crashed master's: the caller holds the data
// directory's lock, so no live master serves it, and it is replaced.
func (s *Server) Start(_ context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("stopped")
	}
	if s.srv != nil {
		return nil
	}
	if err := removeSocket(s.path); err != nil {
		return err
	}
	// Bound under a temporary name and renamed once its mode is 0600: no
	// moment in which the socket is reachable with the umask's mode.
	tmp := s.path + ".tmp-" + strconv.Itoa(os.Getpid())
	if err := removeSocket(tmp); err != nil {
		return err
	}
	name, release, err := reachable(tmp)
	if err != nil {
		return err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: name, Net: "unix"})
	release()
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.path, err)
	}
	// The file is removed by Stop under its final name.
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err == nil {
		err = os.Rename(tmp, s.path)
	}
	if err != nil {
		ln.Close()
		os.Remove(tmp)
		return fmt.Errorf("control socket %s: %w", s.path, err)
	}
	s.srv = &http.Server{Handler: s.mux(), ReadHeaderTimeout: 5 * time.Second}
	s.served = make(chan struct{})
	go func(srv *http.Server, done chan struct{}) {
		defer close(done)
		_ = srv.Serve(ln) // ErrServerClosed once stopped
	}(s.srv, s.served)
	return nil
}

// Stop stops serving, waiting for requests in flight until ctx ends, and
// removes the socket file. It may be called more than once.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	srv, served, already := s.srv, s.served, s.stopped
	s.stopped = true
	s.mu.Unlock()
	if already || srv == nil {
		return nil
	}
	// Removed first: a command that connects now learns at once that the
	// master is going.
	rmErr := os.Remove(s.path)
	if errors.Is(rmErr, fs.ErrNotExist) {
		rmErr = nil
	}
	err := srv.Shutdown(ctx)
	if err != nil {
		srv.Close()
	}
	<-served
	return errors.Join(err, rmErr)
}

// removeSocket removes a socket file left at path; anything else there is
// not ours to remove.
func removeSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("control socket %s: a %s is in the way; remove it", path, fileKind(fi.Mode()))
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove the stale control socket %s: %w", path, err)
	}
	return nil
}

func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m.IsRegular():
		return "regular file"
	}
	return "file of mode " + m.String()
}

func (s *Server) mux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+pathStatus, func(w http.ResponseWriter, _ *http.Request) {
		reply(w, http.StatusOK, Status{PID: os.Getpid()})
	})
	mux.HandleFunc("POST "+pathLeave, func(w http.ResponseWriter, r *http.Request) {
		if err := s.h.PrepareLeave(r.Context()); err != nil {
			reply(w, http.StatusInternalServerError, errorBody{Error: err.Error()})
			return
		}
		reply(w, http.StatusOK, struct{}{})
	})
	mux.HandleFunc("DELETE "+pathLeave, func(w http.ResponseWriter, _ *http.Request) {
		s.h.CancelLeave()
		reply(w, http.StatusOK, struct{}{})
	})
	mux.HandleFunc("POST "+pathRenewCerts, func(w http.ResponseWriter, r *http.Request) {
		n, err := s.h.RenewCertificates(r.Context())
		if err != nil {
			reply(w, http.StatusInternalServerError, errorBody{Error: err.Error()})
			return
		}
		reply(w, http.StatusOK, Renewed{Certificates: n})
	})
	mux.HandleFunc("POST "+pathStop, func(w http.ResponseWriter, _ *http.Request) {
		reply(w, http.StatusAccepted, struct{}{})
		// After the reply: the stop ends this server, which waits for
		// this very request.
		go s.h.Stop()
	})
	return mux
}

func reply(w http.ResponseWriter, code int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}
