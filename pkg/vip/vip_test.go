package vip

import (
	"net"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/k8s-master/k8s-master/internal/testkit"
)

// pair is two hosts, a (10.97.0.1/24) and b (10.97.0.2/24), joined by a
// veth pair, each in a network namespace of its own.
type pair struct{ a, b string }

func newPair(t *testing.T) pair {
	t.Helper()
	id := testkit.NetnsID(t)
	p := pair{a: "vipa-" + id, b: "vipb-" + id}
	testkit.Netns(t, p.a, p.b)
	testkit.Veth(t, p.a, "eth0", p.b, "eth0")
	for _, cmd := range [][]string{
		{"-n", p.a, "addr", "add", "10.97.0.1/24", "dev", "eth0"},
		{"-n", p.b, "addr", "add", "10.97.0.2/24", "dev", "eth0"},
		{"-n", p.a, "link", "set", "eth0", "up"}, {"-n", p.b, "link", "set", "eth0", "up"},
		{"-n", p.a, "link", "add", "down0", "type", "veth", "peer", "name", "down1"},
		{"-n", p.a, "addr", "add", "10.96.9.1/24", "dev", "down0"},
	} {
		testkit.IP(t, cmd...)
	}
	return p
}

// finiteLifetime matches ip's report of an address claimed for 3 s: the
// kernel counts down whole seconds, so a slow reader may see 2 or 1.
var finiteLifetime = regexp.MustCompile(`valid_lft [123]sec`)

func TestOpenValidates(t *testing.T) {
	p := newPair(t)
	testkit.In(t, p.a, func(h *netlink.Handle) {
		cases := map[string]struct {
			iface, vip, want string
		}{
			"missing interface": {"eth9", "10.97.0.50", "interface eth9 not found"},
			"interface down":    {"down0", "10.96.9.50", "interface down0 is down"},
			"outside subnets":   {"eth0", "10.98.0.50", "none of the subnets of eth0 (10.97.0.1/24)"},
			"a node address":    {"eth0", "10.97.0.1", "is an address of this host"},
			"loopback":          {"eth0", "127.0.0.1", "unicast"},
		}
		for name, tc := range cases {
			_, err := Open(h, tc.iface, net.ParseIP(tc.vip), 5*time.Second)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: err = %v, want %q", name, err, tc.want)
			}
		}
		if _, err := Open(h, "eth0", net.ParseIP("10.97.0.50"), 5*time.Second); err != nil {
			t.Errorf("valid VIP refused: %v", err)
		}
	})
}

func TestClaimExpiresRefreshRelease(t *testing.T) {
	p := newPair(t)
	testkit.In(t, p.a, func(h *netlink.Handle) {
		a, err := Open(h, "eth0", net.ParseIP("10.97.0.50"), 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Claim(); err != nil {
			t.Fatal(err)
		}
		out := testkit.IP(t, "-n", p.a, "addr", "show", "dev", "eth0")
		if !strings.Contains(out, "10.97.0.50/32") || !strings.Contains(out, "eth0:vip") || !finiteLifetime.MatchString(out) {
			t.Fatalf("claimed address not as expected:\n%s", out)
		}
		// A reopen after a crash accepts its own leftover address.
		if _, err := Open(h, "eth0", net.ParseIP("10.97.0.50"), 3*time.Second); err != nil {
			t.Errorf("reopen with our address present: %v", err)
		}
		// Refreshed: it outlives its first lifetime. Each refresh comes 2 s
		// before the address would go, ample for a loaded machine.
		for range 4 {
			time.Sleep(time.Second)
			if err := a.Refresh(); err != nil {
				t.Fatal(err)
			}
		}
		if held, _ := a.Held(); !held {
			t.Fatal("a refreshed VIP expired")
		}
		// Not refreshed (the holder crashed): the kernel removes it.
		deadline := time.Now().Add(6 * time.Second)
		for {
			held, err := a.Held()
			if err != nil {
				t.Fatal(err)
			}
			if !held {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the VIP outlived its lifetime without refresh")
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err := a.Claim(); err != nil {
			t.Fatal(err)
		}
		if err := a.Release(); err != nil {
			t.Fatal(err)
		}
		if held, _ := a.Held(); held {
			t.Fatal("released VIP still there")
		}
		if err := a.Release(); err != nil {
			t.Errorf("releasing twice: %v", err)
		}
	})
}

func TestAnnounceAndProbe(t *testing.T) {
	p := newPair(t)
	// b learns addresses from gratuitous ARP only with arp_accept.
	if out, err := exec.Command("ip", "netns", "exec", p.b, "sysctl", "-qw", "net.ipv4.conf.eth0.arp_accept=1").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	testkit.IP(t, "-n", p.b, "addr", "add", "10.97.0.60/24", "dev", "eth0")
	testkit.In(t, p.a, func(h *netlink.Handle) {
		link, err := h.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		mac, idx := link.Attrs().HardwareAddr, link.Attrs().Index
		if err := Announce(idx, mac, net.ParseIP("10.97.0.50")); err != nil {
			t.Fatal(err)
		}
		if out := neighbourHas(t, p.b, "10.97.0.50", mac.String()); !strings.Contains(out, mac.String()) {
			t.Errorf("b's neighbour table lacks the announced VIP at %s:\n%s", mac, out)
		}

		// The same through an Address, twice on its kept socket.
		addr, err := Open(h, "eth0", net.ParseIP("10.97.0.51"), 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer addr.Close()
		for range 2 {
			if err := addr.Announce(); err != nil {
				t.Fatal(err)
			}
		}
		if out := neighbourHas(t, p.b, "10.97.0.51", mac.String()); !strings.Contains(out, mac.String()) {
			t.Errorf("b's neighbour table lacks the VIP announced by Address.Announce at %s:\n%s", mac, out)
		}

		bLink := strings.Fields(testkit.IP(t, "-n", p.b, "-br", "link", "show", "eth0"))
		owner, err := Probe(idx, mac, net.ParseIP("10.97.0.60"), 5*time.Second) // b answers at once; read late on a loaded machine
		if err != nil {
			t.Fatal(err)
		}
		if owner == nil || owner.String() != bLink[2] {
			t.Errorf("probe of b's address found %v, want b's MAC %s", owner, bLink[2])
		}
		free, err := Probe(idx, mac, net.ParseIP("10.97.0.61"), 600*time.Millisecond)
		if err != nil || free != nil {
			t.Errorf("probe of a free address: %v, %v", free, err)
		}
	})
}

// neighbourHas waits (at most 5 s, for a loaded machine) until ns's
// neighbour entry for ip names mac, and returns the entry as last seen.
func neighbourHas(t *testing.T, ns, ip, mac string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		out := testkit.IP(t, "-n", ns, "neigh", "show", ip)
		if strings.Contains(out, mac) || time.Now().After(deadline) {
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// An IPv6 VIP: a /128 with a finite lifetime, found by its subnet when no
// interface is named, announced with a neighbour advertisement.
func TestIPv6Address(t *testing.T) {
	p := newPair(t)
	testkit.IP(t, "-n", p.a, "addr", "add", "fd97::1/64", "dev", "eth0", "nodad")
	testkit.IP(t, "-n", p.b, "addr", "add", "fd97::2/64", "dev", "eth0", "nodad")
	testkit.IP(t, "-n", p.b, "neigh", "replace", "fd97::50", "lladdr", "02:00:00:00:00:99", "dev", "eth0", "nud", "stale")
	testkit.In(t, p.a, func(h *netlink.Handle) {
		iface, err := interfaceFor(h, net.ParseIP("fd97::50"))
		if err != nil || iface != "eth0" {
			t.Fatalf("interface for fd97::50: %q, %v", iface, err)
		}
		a, err := Open(h, iface, net.ParseIP("fd97::50"), 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Claim(); err != nil {
			t.Fatal(err)
		}
		out := testkit.IP(t, "-n", p.a, "-6", "addr", "show", "dev", "eth0")
		if !strings.Contains(out, "fd97::50/128") || !finiteLifetime.MatchString(out) {
			t.Fatalf("claimed IPv6 VIP not as expected:\n%s", out)
		}
		if err := a.Announce(); err != nil {
			t.Fatal(err)
		}
		mac := a.Link().Attrs().HardwareAddr.String()
		if out := neighbourHas(t, p.b, "fd97::50", mac); !strings.Contains(out, mac) {
			t.Fatalf("b's entry for fd97::50 does not point at a's %s:\n%s", mac, out)
		}
		if err := a.Release(); err != nil {
			t.Fatal(err)
		}
		if held, _ := a.Held(); held {
			t.Error("released IPv6 VIP still there")
		}
		a.Close()
	})
}
