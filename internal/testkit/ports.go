package testkit

import (
	"net"
	"testing"
)

// FreePort asks the kernel for an unused loopback TCP port.
func FreePort(t testing.TB) int {
	t.Helper()
	return FreePorts(t, 1)[0]
}

// FreePorts asks the kernel for n distinct unused loopback TCP ports. All n
// listeners stay open until the last is made, so the kernel cannot hand out
// the same port twice; another process may still take one before the
// caller binds it, as with any such helper.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}
