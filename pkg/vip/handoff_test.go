package vip

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/k8s-master/k8s-master/internal/testkit"
)

// hostLAN is three hosts on one bridge: a client c and two masters a and b.
type hostLAN struct {
	sw, c, a, b string
	vip         net.IP
	family      string // -4 or -6
}

func newLAN(t *testing.T, v6 bool) hostLAN {
	t.Helper()
	id := testkit.NetnsID(t)
	l := hostLAN{sw: "hosw-" + id, c: "hoc-" + id, a: "hoa-" + id, b: "hob-" + id, vip: net.ParseIP("10.95.0.50"), family: "-4"}
	addrs := map[string]string{l.c: "10.95.0.9/24", l.a: "10.95.0.1/24", l.b: "10.95.0.2/24"}
	if v6 {
		l.vip, l.family = net.ParseIP("fd95::50"), "-6"
		addrs = map[string]string{l.c: "fd95::9/64", l.a: "fd95::1/64", l.b: "fd95::2/64"}
	}
	testkit.Netns(t, l.sw, l.c, l.a, l.b)
	testkit.Bridge(t, l.sw, "br0", l.c, l.a, l.b)
	for _, host := range []string{l.c, l.a, l.b} {
		testkit.IP(t, "-n", host, "addr", "add", addrs[host], "dev", "eth0", "nodad")
		testkit.IP(t, "-n", host, "link", "set", "eth0", "up")
		testkit.IP(t, "-n", host, "link", "set", "lo", "up")
	}
	return l
}

// pinNeighbour makes the client send to the VIP at mac whatever anyone
// announces: a neighbour that has not heard the new holder yet.
func (l hostLAN) pinNeighbour(t *testing.T, mac string) {
	t.Helper()
	testkit.IP(t, "-n", l.c, l.family, "neigh", "replace", l.vip.String(), "lladdr", mac, "dev", "eth0", "nud", "permanent")
}

// openVIP opens the VIP on host's eth0, with a hand-off of window.
func openVIP(t *testing.T, h *netlink.Handle, vip net.IP, window time.Duration) *Address {
	t.Helper()
	a, err := Open(h, "eth0", vip, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	a.handOffWindow = window
	return a
}

// echoServer accepts on port in ns and answers one line per connection
// with "name: " and the line, so a client sees which host answered. It
// returns how many connections it accepted.
func echoServer(t *testing.T, ns, name string, port int) *atomic.Int32 {
	t.Helper()
	ready := make(chan net.Listener)
	go testkit.In(t, ns, func(*netlink.Handle) {
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
		if err != nil {
			t.Error(err)
			close(ready)
			return
		}
		ready <- ln
	})
	ln := <-ready
	if ln == nil {
		t.FailNow()
	}
	t.Cleanup(func() { ln.Close() })
	var accepted atomic.Int32
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				defer conn.Close()
				line, err := bufio.NewReader(conn).ReadString('\n')
				if err == nil {
					fmt.Fprintf(conn, "%s: %s", name, line)
				}
			}()
		}
	}()
	return &accepted
}

type dialResult struct {
	reply string
	err   error
}

// dialEcho connects from ns to addr, sends a line and reads the echo.
func dialEcho(t *testing.T, ns, addr string, timeout time.Duration) <-chan dialResult {
	out := make(chan dialResult, 1)
	go testkit.In(t, ns, func(*netlink.Handle) {
		conn, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			out <- dialResult{err: err}
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(timeout))
		if _, err := fmt.Fprintf(conn, "ping\n"); err != nil {
			out <- dialResult{err: err}
			return
		}
		reply, err := bufio.NewReader(conn).ReadString('\n')
		out <- dialResult{reply: reply, err: err}
	})
	return out
}

// A connection opened while the VIP moves, by a client still sending to
// the old holder's MAC, reaches the new holder: its SYN is held by the old
// holder until the new one announces itself, then passed on with the rest
// of the client's frames. Once the hand-off ends, that client's frames are
// dropped again, which shows it was the hand-off that carried them.
//
// It asserts what the client sees, not how many frames were passed on: the
// kernel may merge segments (GRO) or a loaded machine time them so that
// fewer, larger frames carry the same connection. Deadlines are generous
// for the same reason; a fast run does not wait for them.
func TestHandOffForwardsToNextHolder(t *testing.T) {
	// Longer than the product's 2 s so that the connections asserted to
	// go through the hand-off still fall within it on a loaded machine.
	const window = 5 * time.Second
	for _, v6 := range []bool{false, true} {
		t.Run(map[bool]string{false: "IPv4", true: "IPv6"}[v6], func(t *testing.T) {
			l := newLAN(t, v6)
			// Both masters serve the port; only the VIP's holder gets the
			// VIP's traffic, and the reply says which one answered.
			oldAccepted := echoServer(t, l.a, "a", 7443)
			echoServer(t, l.b, "b", 7443)
			vipPort := net.JoinHostPort(l.vip.String(), "7443")
			var old *Address
			testkit.In(t, l.a, func(h *netlink.Handle) {
				old = openVIP(t, h, l.vip, window)
				if err := old.Claim(); err != nil {
					t.Fatal(err)
				}
			})
			l.pinNeighbour(t, old.Link().Attrs().HardwareAddr.String())

			testkit.In(t, l.a, func(*netlink.Handle) {
				if err := old.Release(); err != nil {
					t.Fatal(err)
				}
			})
			ho := old.handOff
			if ho == nil {
				t.Fatal("no hand-off after releasing a held VIP")
			}
			// The client connects while nobody holds the VIP.
			first := dialEcho(t, l.c, vipPort, window)
			for deadline := time.Now().Add(window / 2); ho.queued.Load() == 0; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the old holder held no frame while the VIP was free")
				}
			}
			testkit.In(t, l.b, func(h *netlink.Handle) {
				next := openVIP(t, h, l.vip, 0)
				if err := next.Claim(); err != nil {
					t.Fatal(err)
				}
				if err := next.Announce(); err != nil {
					t.Fatal(err)
				}
			})
			r := <-first
			if r.err != nil || r.reply != "b: ping\n" {
				t.Fatalf("connection opened during the hand-over: reply %q, err %v; want the new holder b's echo", r.reply, r.err)
			}
			if ho.forwarded.Load() == 0 {
				t.Error("the connection got through, but not by the hand-off")
			}
			// A later connection within the window goes the same way. If
			// the window ran out first (a very slow machine), its failure
			// says nothing about the hand-off.
			r = <-dialEcho(t, l.c, vipPort, window)
			select {
			case <-ho.done:
				if r.err != nil {
					t.Logf("the hand-off window ended before the second connection: %v", r.err)
				}
			default:
				if r.err != nil || r.reply != "b: ping\n" {
					t.Errorf("connection after the new holder announced: reply %q, err %v; want the new holder b's echo", r.reply, r.err)
				}
			}
			<-ho.done
			if r := <-dialEcho(t, l.c, vipPort, 700*time.Millisecond); r.err == nil {
				t.Errorf("a client pinned to the old holder still got through after the hand-off ended: reply %q", r.reply)
			}
			if n := oldAccepted.Load(); n != 0 {
				t.Errorf("the old holder accepted %d connections after it released the VIP", n)
			}
			testkit.In(t, l.a, func(*netlink.Handle) { old.Close() })
		})
	}
}

// A claim ends the hand-off at once: the host answers for the VIP itself
// and passes nothing on, even with another host's announcement heard.
func TestClaimEndsHandOff(t *testing.T) {
	l := newLAN(t, false)
	echoServer(t, l.a, "a", 7443)
	var a *Address
	testkit.In(t, l.a, func(h *netlink.Handle) {
		a = openVIP(t, h, l.vip, 5*time.Second)
		if err := a.Claim(); err != nil {
			t.Fatal(err)
		}
		if err := a.Release(); err != nil {
			t.Fatal(err)
		}
	})
	ho := a.handOff
	if ho == nil {
		t.Fatal("no hand-off after releasing a held VIP")
	}
	// Another host announces the VIP (without taking it): the hand-off now
	// knows where to send frames.
	testkit.In(t, l.b, func(h *netlink.Handle) {
		link, err := h.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		if err := AnnounceAny(link.Attrs().Index, link.Attrs().HardwareAddr, l.vip); err != nil {
			t.Fatal(err)
		}
	})
	time.Sleep(100 * time.Millisecond)
	testkit.In(t, l.a, func(*netlink.Handle) {
		if err := a.Claim(); err != nil {
			t.Fatal(err)
		}
	})
	if a.handOff != nil {
		t.Error("claim left the hand-off in place")
	}
	l.pinNeighbour(t, a.Link().Attrs().HardwareAddr.String())
	if r := <-dialEcho(t, l.c, net.JoinHostPort(l.vip.String(), "7443"), 5*time.Second); r.err != nil || r.reply != "a: ping\n" {
		t.Fatalf("connection to the re-claimed VIP: reply %q, err %v", r.reply, r.err)
	}
	if f := ho.forwarded.Load(); f != 0 {
		t.Errorf("the stopped hand-off forwarded %d frames", f)
	}
	select {
	case <-ho.done:
	case <-time.After(5 * time.Second): // it wakes every 100 ms; generous for a loaded machine
		t.Error("the stopped hand-off's goroutine is still running")
	}
	testkit.In(t, l.a, func(*netlink.Handle) {
		a.Release()
		a.Close()
	})
}

// Releasing a VIP that is not there starts no hand-off.
func TestReleaseOfAbsentVIPNoHandOff(t *testing.T) {
	p := newPair(t)
	testkit.In(t, p.a, func(h *netlink.Handle) {
		a := openVIP(t, h, net.ParseIP("10.97.0.50"), time.Second)
		defer a.Close()
		if err := a.Release(); err != nil {
			t.Fatal(err)
		}
		if a.handOff != nil {
			t.Error("a hand-off for a VIP this host did not hold")
		}
	})
}

// checksumOK verifies a transport checksum the long way: the sum of all
// 16-bit words, pseudo-header included, is 0 modulo 0xffff.
func checksumOK(pseudo, seg []byte) bool {
	b := append(append([]byte(nil), pseudo...), seg...)
	if len(b)%2 == 1 {
		b = append(b, 0)
	}
	var sum uint64
	for i := 0; i < len(b); i += 2 {
		sum += uint64(binary.BigEndian.Uint16(b[i:]))
	}
	return sum%0xffff == 0
}

func TestForwardableCompletesChecksums(t *testing.T) {
	vip4, vip6 := net.ParseIP("10.95.0.50"), net.ParseIP("fd95::50")
	client4, client6 := net.ParseIP("10.95.0.9"), net.ParseIP("fd95::9")

	tcp := make([]byte, 20+5) // header and an odd-length payload
	binary.BigEndian.PutUint16(tcp[0:2], 40000)
	binary.BigEndian.PutUint16(tcp[2:4], 6443)
	tcp[12] = 5 << 4
	tcp[13] = 0x18
	copy(tcp[20:], "hello")
	binary.BigEndian.PutUint16(tcp[16:18], 0x1234) // partial, as a veth leaves it

	ip4 := make([]byte, 20)
	ip4[0] = 0x45
	binary.BigEndian.PutUint16(ip4[2:4], uint16(20+len(tcp)))
	ip4[8], ip4[9] = 64, unix.IPPROTO_TCP
	copy(ip4[12:16], client4.To4())
	copy(ip4[16:20], vip4.To4())
	frame4 := append(append(make([]byte, ethHeaderLen), ip4...), tcp...)
	binary.BigEndian.PutUint16(frame4[12:14], unix.ETH_P_IP)

	udp := make([]byte, 8+3)
	binary.BigEndian.PutUint16(udp[4:6], uint16(len(udp)))
	copy(udp[8:], "abc")
	ip6 := make([]byte, ipv6HeaderLen)
	ip6[0] = 6 << 4
	binary.BigEndian.PutUint16(ip6[4:6], uint16(len(udp)))
	ip6[6], ip6[7] = unix.IPPROTO_UDP, 64
	copy(ip6[8:24], client6)
	copy(ip6[24:40], vip6)
	frame6 := append(append(make([]byte, ethHeaderLen), ip6...), udp...)
	binary.BigEndian.PutUint16(frame6[12:14], unix.ETH_P_IPV6)

	out, ok := forwardable(frame4, vip4, true)
	if !ok {
		t.Fatal("IPv4 TCP frame refused")
	}
	pseudo4 := append(append(append([]byte(nil), client4.To4()...), vip4.To4()...), 0, unix.IPPROTO_TCP, 0, byte(len(tcp)))
	if !checksumOK(pseudo4, out[ethHeaderLen+20:]) {
		t.Errorf("IPv4 TCP checksum not completed: % x", out[ethHeaderLen+20+16:ethHeaderLen+20+18])
	}
	if string(out[len(out)-5:]) != "hello" || string(frame4[len(frame4)-5:]) != "hello" {
		t.Error("payload changed")
	}
	if binary.BigEndian.Uint16(frame4[ethHeaderLen+20+16:]) != 0x1234 {
		t.Error("forwardable changed the captured frame instead of a copy")
	}

	out, ok = forwardable(frame6, vip6, true)
	if !ok {
		t.Fatal("IPv6 UDP frame refused")
	}
	pseudo6 := append(append(append([]byte(nil), client6...), vip6...), 0, 0, 0, byte(len(udp)), 0, 0, 0, unix.IPPROTO_UDP)
	if !checksumOK(pseudo6, out[ethHeaderLen+ipv6HeaderLen:]) {
		t.Error("IPv6 UDP checksum not completed")
	}

	// Checksums already on the wire are left alone, even wrong ones: the
	// next holder must see a corrupt frame as corrupt.
	if out, ok := forwardable(frame4, vip4, false); !ok || binary.BigEndian.Uint16(out[ethHeaderLen+20+16:]) != 0x1234 {
		t.Error("a frame with its checksum in place was changed or refused")
	}
	for name, tc := range map[string]struct {
		frame []byte
		vip   net.IP
	}{
		"other destination": {frame4, net.ParseIP("10.95.0.51")},
		"wrong family":      {frame4, vip6},
		"truncated":         {frame4[:ethHeaderLen+30], vip4},
		"IPv6 to another":   {frame6, net.ParseIP("fd95::51")},
	} {
		if _, ok := forwardable(tc.frame, tc.vip, true); ok {
			t.Errorf("%s: forwarded", name)
		}
	}
}

// The capture filter passes what the hand-off needs and little else; the
// netns tests above show the kernel accepts and applies it.
func TestHandOffFilter(t *testing.T) {
	vip := net.ParseIP("10.95.0.50")
	arpFromVIP := arpFrame(arpReply, net.HardwareAddr{2, 0, 0, 0, 0, 2}, vip, broadcast, vip, broadcast)
	arpFromOther := arpFrame(arpReply, net.HardwareAddr{2, 0, 0, 0, 0, 2}, net.ParseIP("10.95.0.2"), broadcast, vip, broadcast)
	ipTo := func(dst net.IP) []byte {
		f := make([]byte, ethHeaderLen+20)
		binary.BigEndian.PutUint16(f[12:14], unix.ETH_P_IP)
		f[ethHeaderLen] = 0x45
		copy(f[ethHeaderLen+16:], dst.To4())
		return f
	}
	prog := handOffFilter(vip)
	for name, tc := range map[string]struct {
		frame []byte
		pass  bool
	}{
		"ARP from the VIP":    {arpFromVIP, true},
		"ARP for the VIP":     {arpFromOther, false},
		"IPv4 to the VIP":     {ipTo(vip), true},
		"IPv4 to another":     {ipTo(net.ParseIP("10.95.0.2")), false},
		"IPv6 NA for another": {ndpFrame(net.HardwareAddr{2, 0, 0, 0, 0, 2}, broadcast, net.ParseIP("fd95::2"), allNodes, naMessage(net.ParseIP("fd95::2"), net.HardwareAddr{2, 0, 0, 0, 0, 2})), false},
	} {
		if got := runFilter(t, prog, tc.frame) > 0; got != tc.pass {
			t.Errorf("%s: passed %v, want %v", name, got, tc.pass)
		}
	}
	vip6 := net.ParseIP("fd95::50")
	prog6 := handOffFilter(vip6)
	na := ndpFrame(net.HardwareAddr{2, 0, 0, 0, 0, 2}, broadcast, vip6, allNodes, naMessage(vip6, net.HardwareAddr{2, 0, 0, 0, 0, 2}))
	naOther := ndpFrame(net.HardwareAddr{2, 0, 0, 0, 0, 2}, broadcast, net.ParseIP("fd95::2"), allNodes, naMessage(net.ParseIP("fd95::2"), net.HardwareAddr{2, 0, 0, 0, 0, 2}))
	to6 := func(dst net.IP) []byte {
		f := make([]byte, ethHeaderLen+ipv6HeaderLen+20)
		binary.BigEndian.PutUint16(f[12:14], unix.ETH_P_IPV6)
		f[ethHeaderLen] = 6 << 4
		f[ethHeaderLen+6] = unix.IPPROTO_TCP
		copy(f[ethHeaderLen+24:], dst)
		return f
	}
	for name, tc := range map[string]struct {
		frame []byte
		pass  bool
	}{
		"NA for the VIP":  {na, true},
		"NA for another":  {naOther, false},
		"TCP to the VIP":  {to6(vip6), true},
		"TCP to another":  {to6(net.ParseIP("fd95::2")), false},
		"IPv4 ARP frames": {arpFromVIP, false},
	} {
		if got := runFilter(t, prog6, tc.frame) > 0; got != tc.pass {
			t.Errorf("IPv6 %s: passed %v, want %v", name, got, tc.pass)
		}
	}
}

// runFilter interprets the classic BPF subset handOffFilter uses.
func runFilter(t *testing.T, prog []unix.SockFilter, pkt []byte) uint32 {
	t.Helper()
	var acc uint32
	for pc := 0; pc < len(prog); pc++ {
		ins := prog[pc]
		switch ins.Code {
		case unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, unix.BPF_LD | unix.BPF_H | unix.BPF_ABS, unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			size := map[uint16]int{unix.BPF_B: 1, unix.BPF_H: 2, unix.BPF_W: 4}[ins.Code&0x18]
			if int(ins.K)+size > len(pkt) {
				return 0 // the kernel drops a frame read past its end
			}
			acc = 0
			for _, b := range pkt[ins.K : int(ins.K)+size] {
				acc = acc<<8 | uint32(b)
			}
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K:
			if acc == ins.K {
				pc += int(ins.Jt)
			} else {
				pc += int(ins.Jf)
			}
		case unix.BPF_RET | unix.BPF_K:
			return ins.K
		default:
			t.Fatalf("instruction %d: unexpected opcode %#x", pc, ins.Code)
		}
	}
	t.Fatal("the filter ran off its end")
	return 0
}
