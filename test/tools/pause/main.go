// Command pause is the sandbox ("pause") container of the worker lab: it
// holds a pod's namespaces, reaps children it inherits as PID 1, and exits on
// SIGTERM or SIGINT. scripts/worker-parts.sh builds it statically and packs
// it into the lab's pause image; no registry is involved.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			return
		}
		// A shared PID namespace makes this process every orphan's parent.
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
