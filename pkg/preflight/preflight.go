// Package preflight checks, before anything is written or started, that the
// host can run a master: ports free and the data directory writable.
package preflight

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/k8s-master/k8s-master/pkg/config"
	"github.com/k8s-master/k8s-master/pkg/layout"
)

// Port is one listening socket a master will open.
type Port struct {
	// Name is what the port is for, as the user knows it ("apiserver").
	Name string
	// Setting is the config-file key that changes it ("apiserver-port").
	Setting string
	Host    string
	Port    int
}

// CheckPorts binds and releases each port, and for one that is taken says
// which process holds it.
func CheckPorts(ports []Port) error {
	var errs []error
	for _, p := range ports {
		addr := net.JoinHostPort(p.Host, strconv.Itoa(p.Port))
		l, err := net.Listen("tcp", addr)
		if err == nil {
			l.Close()
			continue
		}
		if errors.Is(err, syscall.EADDRINUSE) {
			owner := ""
			if pid, comm, ok := PortOwner(p.Port); ok {
				owner = fmt.Sprintf(" by pid %d (%s)", pid, comm)
			}
			errs = append(errs, fmt.Errorf("port %d (%s) on %s is in use%s; %w", p.Port, p.Name, p.Host, owner, config.Hint("stop that process or pass {"+p.Setting+"}")))
			continue
		}
		if errors.Is(err, syscall.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("cannot listen on %s for the %s: %s is not an address of this host; %w", addr, p.Name, p.Host, config.Hint("check {advertise-address}/{bind-address}")))
			continue
		}
		errs = append(errs, fmt.Errorf("cannot listen on %s for the %s: %w", addr, p.Name, err))
	}
	return errors.Join(errs...)
}

// PortOwner finds the process listening on a TCP port through /proc: the
// socket inode from /proc/net/tcp{,6}, then the process holding that inode.
// It only sees processes this user may inspect (all of them as root).
func PortOwner(port int) (pid int, comm string, ok bool) {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		for _, ino := range listeningInodes(f, port) {
			inodes[ino] = true
		}
	}
	if len(inodes) == 0 {
		return 0, "", false
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		id, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fdDir := filepath.Join("/proc", p.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			target, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil || !strings.HasPrefix(target, "socket:[") {
				continue
			}
			if inodes[strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]")] {
				c, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "comm"))
				return id, strings.TrimSpace(string(c)), true
			}
		}
	}
	return 0, "", false
}

// listeningInodes returns the inodes of sockets in LISTEN state (0A) on port.
func listeningInodes(path string, port int) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	want := fmt.Sprintf(":%04X", port)
	var out []string
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[3] != "0A" {
			continue
		}
		if strings.HasSuffix(fields[1], want) {
			out = append(out, fields[9])
		}
	}
	return out
}

// CheckDataDir makes sure dir exists (creating it, and missing parents, 0700)
// and that files can be created, synced and removed in it. It reports
// whether it created the directory, so a failed init can remove it again.
func CheckDataDir(dir string) (created bool, err error) {
	st, err := os.Stat(dir)
	switch {
	case err == nil && !st.IsDir():
		return false, fmt.Errorf("data directory %s exists but is not a directory; %w", dir, config.Hint("pass another {data-dir}"))
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return false, fmt.Errorf("cannot create data directory %s: %w; %w", dir, err, config.Hint("create it as root or pass another {data-dir}"))
		}
		created = true
	case err != nil:
		return false, fmt.Errorf("cannot use data directory %s: %w", dir, err)
	}
	probe, err := os.CreateTemp(dir, layout.WriteProbePattern)
	if err != nil {
		if created {
			os.Remove(dir)
		}
		return false, fmt.Errorf("data directory %s is not writable: %w; %w", dir, err, config.Hint("fix its permissions or mount, or pass another {data-dir}"))
	}
	name := probe.Name()
	_, werr := probe.Write([]byte("ok"))
	serr := probe.Sync()
	probe.Close()
	os.Remove(name)
	if err := errors.Join(werr, serr); err != nil {
		if created {
			os.Remove(dir)
		}
		return false, fmt.Errorf("data directory %s is not writable: %w; %w", dir, err, config.Hint("fix its permissions or mount, or pass another {data-dir}"))
	}
	// The directory holds keys: nobody else may list it.
	if err := os.Chmod(dir, 0o700); err != nil {
		return created, fmt.Errorf("cannot restrict data directory %s to 0700: %w", dir, err)
	}
	return created, nil
}
