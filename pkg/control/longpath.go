package control

import (
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// maxSocketPath is what fits a sockaddr_un's sun_path with its NUL.
const maxSocketPath = 107

// reachable returns a name for path that fits a socket address: path
// itself when it is short enough, else the same file through an O_PATH
// handle of its directory (/proc/self/fd/N/NAME), so that a data directory
// with a long path still gets its control socket. release closes the
// handle once the socket is bound or connected.
func reachable(path string) (name string, release func(), err error) {
	if len(path) <= maxSocketPath {
		return path, func() {}, nil
	}
	fd, err := unix.Open(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", nil, fmt.Errorf("open the directory of %s: %w", path, err)
	}
	name = fmt.Sprintf("/proc/self/fd/%d/%s", fd, filepath.Base(path))
	if len(name) > maxSocketPath {
		unix.Close(fd)
		return "", nil, fmt.Errorf("socket name %s is too long for a unix socket", filepath.Base(path))
	}
	return name, func() { unix.Close(fd) }, nil
}
