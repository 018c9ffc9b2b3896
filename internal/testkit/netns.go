package testkit

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// NetnsID skips the test unless it can make network namespaces (root and
// ip from iproute2), and returns a random suffix for their names so that
// concurrent tests and leftovers of killed runs do not collide.
func NetnsID(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces (CI runs as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (iproute2)")
	}
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Netns makes the named network namespaces and deletes them (and with
// them their interfaces) when the test ends.
func Netns(t testing.TB, names ...string) {
	t.Helper()
	for _, ns := range names {
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		IP(t, "netns", "add", ns)
	}
}

// IP runs ip(8) with args and returns its output; a failure fails the test.
func IP(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %v: %v %s", args, err, out)
	}
	return string(out)
}

// Veth joins interface ifA in namespace nsA and ifB in nsB with a veth
// pair, both down.
func Veth(t testing.TB, nsA, ifA, nsB, ifB string) {
	t.Helper()
	IP(t, "-n", nsA, "link", "add", ifA, "type", "veth", "peer", "name", ifB, "netns", nsB)
}

// Bridge makes bridge br, up, in namespace sw and plugs each host's eth0
// into it through a veth whose bridge end is named port0, port1, ...; the
// hosts' ends stay down and unaddressed.
func Bridge(t testing.TB, sw, br string, hosts ...string) {
	t.Helper()
	IP(t, "-n", sw, "link", "add", br, "type", "bridge")
	IP(t, "-n", sw, "link", "set", br, "up")
	for i, host := range hosts {
		port := "port" + strconv.Itoa(i)
		Veth(t, host, "eth0", sw, port)
		IP(t, "-n", sw, "link", "set", port, "master", br, "up")
	}
}

// In runs fn on a thread switched to network namespace ns, with a netlink
// handle there; sockets fn opens belong to ns. fn runs on a goroutine of
// its own (the thread must not go back to the scheduler switched); a
// t.Fatal in fn ends fn there and the test when In returns.
func In(t testing.TB, ns string, fn func(h *netlink.Handle)) {
	t.Helper()
	done := make(chan struct{})
	returned := false
	defer func() {
		if !returned && t.Failed() {
			t.FailNow()
		}
	}()
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		target, err := netns.GetFromName(ns)
		if err != nil {
			t.Error(err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			t.Error(err)
			return
		}
		h, err := netlink.NewHandleAt(target)
		if err != nil {
			t.Error(err)
			return
		}
		defer h.Close()
		fn(h)
		returned = true
	}()
	<-done
}
