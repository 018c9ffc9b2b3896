package process

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
)

// DebugAddrEnv names the environment variable that, when set to a loopback
// address (127.0.0.1:6060), serves Go's profiles of this whole process
// (/debug/pprof/: heap, CPU, goroutines) there without authentication. It
// is the tool for finding where memory and CPU go under load; the
// components' own --profiling stays off. Loopback only, so a profile never
// leaves the machine.
const DebugAddrEnv = "K8S_MASTER_DEBUG_ADDR"

// ServeDebug starts the profile server when DebugAddrEnv is set and returns
// a function that stops it. An address that is not loopback, or one that
// cannot be bound, is an error, so a mistyped setting is not silently
// ignored.
func ServeDebug() (stop func(), err error) {
	addr := os.Getenv(DebugAddrEnv)
	if addr == "" {
		return func() {}, nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("%s=%q: want host:port, for example 127.0.0.1:6060: %w", DebugAddrEnv, addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("%s=%q: profiles are served on a loopback address only (127.0.0.1 or ::1); unset it or use one", DebugAddrEnv, addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w; choose a free port or unset it", DebugAddrEnv, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "warning: profile server:", err)
		}
	}()
	return func() { srv.Close() }, nil
}
