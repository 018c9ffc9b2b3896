// Package systemd speaks the little of systemd that a packaged master
// needs: the sd_notify protocol (READY, STOPPING, STATUS) and systemctl.
package systemd

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
)

// Notify sends state (newline-separated VAR=value lines, e.g. "READY=1")
// to the service manager at $NOTIFY_SOCKET. Without that variable (not
// started by systemd as a notify service) it does nothing and reports false.
func Notify(state string) (bool, error) {
	claimed.Lock()
	socket, ok := claimed.socket, claimed.done
	claimed.Unlock()
	if !ok {
		socket = os.Getenv("NOTIFY_SOCKET")
	}
	return notifySocket(socket, state)
}

var claimed struct {
	sync.Mutex
	socket string
	done   bool
}

// Claim takes $NOTIFY_SOCKET out of the environment, keeping it for Notify,
// and reports whether there is one. Libraries in this process read it too:
// embedded etcd sends its own READY=1 as soon as its member is up, long
// before the control plane is; after Claim only this package notifies.
func Claim() bool {
	claimed.Lock()
	defer claimed.Unlock()
	if !claimed.done {
		claimed.socket, claimed.done = os.Getenv("NOTIFY_SOCKET"), true
		os.Unsetenv("NOTIFY_SOCKET")
	}
	return claimed.socket != ""
}

func notifySocket(socket, state string) (bool, error) {
	if socket == "" {
		return false, nil
	}
	if socket[0] == '@' {
		// An abstract socket: the name starts with a NUL byte.
		socket = "\x00" + socket[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		return false, err
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, err
	}
	return true, nil
}

// StatusWriter passes what is written to it on to w and sends each
// complete line to the service manager as STATUS=, so `systemctl status`
// shows the latest progress line.
type StatusWriter struct {
	W    interface{ Write([]byte) (int, error) }
	mu   sync.Mutex
	part []byte
}

func (s *StatusWriter) Write(p []byte) (int, error) {
	n, err := s.W.Write(p)
	s.mu.Lock()
	s.part = append(s.part, p...)
	var lines []string
	for {
		i := bytes.IndexByte(s.part, '\n')
		if i < 0 {
			break
		}
		if line := strings.TrimSpace(string(s.part[:i])); line != "" {
			lines = append(lines, line)
		}
		s.part = s.part[i+1:]
	}
	s.mu.Unlock()
	for _, l := range lines {
		_, _ = Notify("STATUS=" + l)
	}
	return n, err
}

// Booted reports whether this host runs systemd as its service manager
// (sd_booted: /run/systemd/system exists) with systemctl available.
func Booted() bool {
	if fi, err := os.Stat("/run/systemd/system"); err != nil || !fi.IsDir() {
		return false
	}
	_, err := exec.LookPath("systemctl")
	return err == nil
}
