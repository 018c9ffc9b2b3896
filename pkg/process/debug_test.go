package process

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

func TestServeDebugRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:6060", "10.0.0.1:6060", "localhost6060", ":6060"} {
		t.Setenv(DebugAddrEnv, addr)
		if stop, err := ServeDebug(); err == nil {
			stop()
			t.Errorf("%s=%q accepted, want refused", DebugAddrEnv, addr)
		}
	}
}

func TestServeDebugServesProfiles(t *testing.T) {
	// A free loopback port, released for ServeDebug to bind.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	t.Setenv(DebugAddrEnv, addr)
	stop, err := ServeDebug()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get("http://" + addr + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine") {
		t.Errorf("GET /debug/pprof/: %s %.200s", resp.Status, body)
	}
	t.Setenv(DebugAddrEnv, "")
	if stop, err := ServeDebug(); err != nil {
		t.Errorf("unset: %v", err)
	} else {
		stop()
	}
}
