package vip

import (
	"bytes"
	"encoding/hex"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/k8s-master/k8s-master/internal/testkit"
)

// newPair6 is newPair with IPv6 on the link: fd97::1/64 on a, fd97::2/64
// on b.
func newPair6(t *testing.T) pair {
	t.Helper()
	p := newPair(t)
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		t.Skip("needs a kernel with IPv6")
	}
	testkit.IP(t, "-n", p.a, "addr", "add", "fd97::1/64", "dev", "eth0", "nodad")
	testkit.IP(t, "-n", p.b, "addr", "add", "fd97::2/64", "dev", "eth0", "nodad")
	return p
}

// macOf is the MAC of eth0 in namespace ns.
func macOf(t *testing.T, ns string) string {
	t.Helper()
	return strings.Fields(testkit.IP(t, "-n", ns, "-br", "link", "show", "eth0"))[2]
}

// eth0 is the index and MAC of eth0 in the namespace of h, or 0 after
// reporting an error (t.Fatal must not run off the test's goroutine).
func eth0(t *testing.T, h *netlink.Handle) (int, net.HardwareAddr) {
	t.Helper()
	link, err := h.LinkByName("eth0")
	if err != nil {
		t.Error(err)
		return 0, nil
	}
	return link.Attrs().Index, link.Attrs().HardwareAddr
}

func TestAnnounceNAOverridesNeighbour(t *testing.T) {
	p := newPair6(t)
	const vip = "fd97::50"
	// b still has the old holder's MAC for the VIP. The entry is STALE, so
	// only the advertisement's Override flag makes Linux replace the MAC,
	// and only a clear Solicited flag lets a multicast advertisement in.
	testkit.IP(t, "-n", p.b, "neigh", "replace", vip, "lladdr", "02:00:00:00:00:99", "dev", "eth0", "nud", "stale")
	aMAC := macOf(t, p.a)
	testkit.In(t, p.a, func(h *netlink.Handle) {
		if idx, mac := eth0(t, h); idx != 0 {
			if err := AnnounceNA(idx, mac, net.ParseIP(vip)); err != nil {
				t.Error(err)
			}
		}
	})
	// Generous for a loaded machine; the loop ends as soon as it is there.
	deadline := time.Now().Add(5 * time.Second)
	for {
		out := testkit.IP(t, "-n", p.b, "neigh", "show", vip, "dev", "eth0")
		if strings.Contains(out, aMAC) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("5 s after a's advertisement, b's entry for %s still lacks a's MAC %s:\n%s", vip, aMAC, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestProbeDADAndDispatch(t *testing.T) {
	p := newPair6(t)
	testkit.IP(t, "-n", p.b, "addr", "add", "fd97::60/64", "dev", "eth0", "nodad")
	bMAC := macOf(t, p.b)
	// wait is how long a free address is probed; an owner answers at
	// once, but a loaded machine may read the answer late, so probes that
	// expect one get longer.
	const wait, answered = 600 * time.Millisecond, 5 * time.Second
	testkit.In(t, p.a, func(h *netlink.Handle) {
		idx, mac := eth0(t, h)
		if idx == 0 {
			return
		}
		owner, err := ProbeDAD(idx, mac, net.ParseIP("fd97::60"), answered)
		if err != nil || owner.String() != bMAC {
			t.Errorf("DAD for b's address found %v, %v; want b's MAC %s", owner, err, bMAC)
		}
		start := time.Now()
		free, err := ProbeDAD(idx, mac, net.ParseIP("fd97::61"), wait)
		if err != nil || free != nil {
			t.Errorf("DAD for a free address: %v, %v", free, err)
		}
		if took := time.Since(start); took < wait {
			t.Errorf("DAD for a free address gave up after %s, before the %s wait", took, wait)
		}
		// The dispatchers pick ARP or NDP: b answers both ways.
		for _, ip := range []string{"fd97::60", "10.97.0.2"} {
			owner, err := ProbeAny(idx, mac, net.ParseIP(ip), answered)
			if err != nil || owner.String() != bMAC {
				t.Errorf("ProbeAny(%s) = %v, %v; want b's MAC %s", ip, owner, err, bMAC)
			}
			if err := AnnounceAny(idx, mac, net.ParseIP(ip)); err != nil {
				t.Errorf("AnnounceAny(%s): %v", ip, err)
			}
		}
	})
}

// The expected frames were built by a separate Python implementation
// (struct packing, RFC 1071 sum over the RFC 8200 §8.1 pseudo-header).
const (
	wantNA = "333300000001020000000001" + "86dd" +
		"6000000000203aff" + "fd97000000000000000000aabb123456" + "ff020000000000000000000000000001" +
		"88007949" + "20000000" + "fd97000000000000000000aabb123456" + "0201020000000001"
	wantNS = "3333ff123456020000000001" + "86dd" +
		"6000000000183aff" + "00000000000000000000000000000000" + "ff0200000000000000000001ff123456" +
		"87005895" + "00000000" + "fd97000000000000000000aabb123456"
)

func TestNDPEncoding(t *testing.T) {
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	target := net.ParseIP("fd97::aa:bb12:3456")

	na := ndpFrame(mac, ethMulticast(allNodes), target, allNodes, naMessage(target, mac))
	if got := hex.EncodeToString(na); got != wantNA {
		t.Errorf("advertisement frame\n got %s\nwant %s", got, wantNA)
	}
	if flags := na[ethHeaderLen+ipv6HeaderLen+4]; flags&naOverride == 0 || flags&(naSolicited|naRouter) != 0 {
		t.Errorf("advertisement flags %#x: want Override only", flags)
	}
	group := solicitedNode(target)
	ns := ndpFrame(mac, ethMulticast(group), net.IPv6unspecified, group, nsMessage(target))
	if got := hex.EncodeToString(ns); got != wantNS {
		t.Errorf("solicitation frame\n got %s\nwant %s", got, wantNS)
	}
	// Checked over a received message, an intact checksum sums to zero.
	m := na[ethHeaderLen+ipv6HeaderLen:]
	if c := icmpv6Checksum(target, allNodes, m); c != 0 {
		t.Errorf("checksum over an intact advertisement = %#x, want 0", c)
	}
	// An odd length pads with a zero byte.
	if c, want := icmpv6Checksum(net.IPv6zero, net.IPv6zero, []byte{0xab}), ^uint16(0xab00+58+1); c != want {
		t.Errorf("checksum over one byte = %#x, want %#x", c, want)
	}
}

func TestNAFrom(t *testing.T) {
	self := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	other := net.HardwareAddr{2, 0, 0, 0, 0, 2}
	option := net.HardwareAddr{2, 0, 0, 0, 0, 3}
	target := net.ParseIP("fd97::60")
	dst := ethMulticast(allNodes)
	advert := func(src net.HardwareAddr, msg []byte) []byte {
		return ndpFrame(src, dst, target, allNodes, msg)
	}
	tampered := func(f []byte, at int) []byte {
		f = bytes.Clone(f)
		f[at]--
		return f
	}
	withOption := advert(other, naMessage(target, option))
	cases := map[string]struct {
		frame []byte
		want  net.HardwareAddr
	}{
		"option names the owner":     {withOption, option},
		"no option: frame's source":  {advert(other, naMessage(target, option)[:ndpMsgLen]), other},
		"our own advertisement":      {advert(self, naMessage(target, self)), nil},
		"another host names our MAC": {advert(other, naMessage(target, self)), nil},
		"another target":             {advert(other, naMessage(net.ParseIP("fd97::61"), other)), nil},
		"a solicitation":             {advert(other, nsMessage(target)), nil},
		"hop limit 254 (routed)":     {tampered(withOption, ethHeaderLen+7), nil},
		"bad checksum":               {tampered(withOption, ethHeaderLen+ipv6HeaderLen+2), nil},
		"truncated":                  {withOption[:ethHeaderLen+ipv6HeaderLen+ndpMsgLen-1], nil},
		"payload beyond the frame":   {withOption[:len(withOption)-8], nil},
	}
	for name, tc := range cases {
		if got := naFrom(tc.frame, target, self); !bytes.Equal(got, tc.want) {
			t.Errorf("%s: naFrom = %v, want %v", name, got, tc.want)
		}
	}
}

func TestNDPRefuses(t *testing.T) {
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	for _, tc := range []struct {
		ip   net.IP
		mac  net.HardwareAddr
		want string
	}{
		{net.ParseIP("10.97.0.50"), mac, "for IPv6"},
		{nil, mac, "for IPv6"},
		{net.ParseIP("ff02::1"), mac, "not a unicast address"},
		{net.IPv6unspecified, mac, "not a unicast address"},
		{net.ParseIP("fd97::50"), net.HardwareAddr{1, 2, 3, 4, 5, 6, 7, 8}, "6-byte Ethernet"},
	} {
		errA := AnnounceNA(1, tc.mac, tc.ip)
		_, errP := ProbeDAD(1, tc.mac, tc.ip, time.Millisecond)
		for _, err := range []error{errA, errP} {
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v from %v: err = %v, want %q", tc.ip, tc.mac, err, tc.want)
			}
		}
	}
	if err := AnnounceAny(1, mac, nil); err == nil {
		t.Error("AnnounceAny accepted no address")
	}
}
