package vip

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// The IPv6 counterparts of arp.go: an unsolicited Neighbour Advertisement
// (RFC 4861 §7.2.6) moves neighbours' caches to the new holder, and
// duplicate address detection (RFC 4862 §5.4) finds another host already
// using the VIP.
//
// Both go out as whole Ethernet frames on an AF_PACKET socket, as ARP does,
// rather than through an AF_INET6 ICMPv6 socket: the DAD probe must come
// from ::, which an AF_INET6 socket replaces with one of the host's
// addresses; and the advertisement then needs neither the VIP assigned (nor
// out of its tentative state) to be its source, nor multicast socket
// options to leave with hop limit 255.

const (
	ipv6HeaderLen = 40
	ndpMsgLen     = 24 // type, code, checksum, flags or reserved, target
	icmpv6NS      = 135
	icmpv6NA      = 136
	ndpOptTarget  = 2    // target link-layer address option
	naRouter      = 0x80 // flag bits in the NA's fifth byte
	naSolicited   = 0x40
	naOverride    = 0x20
	// ndpHopLimit is required on every ND message: receivers drop others,
	// as a hop limit below 255 shows the message was routed from afar.
	ndpHopLimit = 255
	// dadProbes are spread over the wait, like Probe's, so one lost frame
	// does not hide the owner.
	dadProbes = 3
)

var allNodes = net.ParseIP("ff02::1")

// checkNDP refuses what NDP over Ethernet cannot carry.
func checkNDP(mac net.HardwareAddr, ip net.IP) error {
	if ip.To4() != nil || len(ip) != net.IPv6len {
		return fmt.Errorf("neighbour discovery is for IPv6, not %v; AnnounceAny and ProbeAny pick ARP or NDP by address family", ip)
	}
	if ip.IsUnspecified() || ip.IsMulticast() {
		return fmt.Errorf("%s is not a unicast address; pass the VIP", ip)
	}
	if len(mac) != 6 {
		return fmt.Errorf("hardware address %v is not a 6-byte Ethernet address; NDP is sent on Ethernet interfaces only", mac)
	}
	return nil
}

// ethMulticast is the Ethernet group of an IPv6 multicast address: 33:33
// and its last four bytes (RFC 2464 §7).
func ethMulticast(group net.IP) net.HardwareAddr {
	g := group.To16()
	return net.HardwareAddr{0x33, 0x33, g[12], g[13], g[14], g[15]}
}

// solicitedNode is the multicast group ip's owner listens on for
// solicitations: ff02::1:ff and ip's last three bytes (RFC 4291 §2.7.1).
func solicitedNode(ip net.IP) net.IP {
	g := net.ParseIP("ff02::1:ff00:0")
	copy(g[13:], ip.To16()[13:])
	return g
}

// onesSum is the folded 16-bit one's complement sum of parts, each taken
// as its own run of 16-bit words (all but the last are of even length).
func onesSum(parts ...[]byte) uint16 {
	var sum uint32
	for _, part := range parts {
		for i := 0; i < len(part); i += 2 {
			w := uint32(part[i]) << 8
			if i+1 < len(part) {
				w |= uint32(part[i+1])
			}
			sum += w
		}
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

// icmpv6Checksum is the RFC 4443 §2.3 checksum of msg over the IPv6
// pseudo-header. With the checksum field zero it is the value to write;
// over a received message it is zero when the message is intact.
func icmpv6Checksum(src, dst net.IP, msg []byte) uint16 {
	var pseudo [8]byte // upper-layer length, three zero bytes, next header
	binary.BigEndian.PutUint32(pseudo[0:4], uint32(len(msg)))
	pseudo[7] = unix.IPPROTO_ICMPV6
	return ^onesSum(src.To16(), dst.To16(), pseudo[:], msg)
}

// ndpFrame wraps an ND message in IPv6 and Ethernet, filling in its
// checksum.
func ndpFrame(srcMAC, dstMAC net.HardwareAddr, src, dst net.IP, msg []byte) []byte {
	f := make([]byte, ethHeaderLen+ipv6HeaderLen+len(msg))
	copy(f[0:6], dstMAC)
	copy(f[6:12], srcMAC)
	binary.BigEndian.PutUint16(f[12:14], unix.ETH_P_IPV6)
	h := f[ethHeaderLen:]
	h[0] = 6 << 4 // version 6; traffic class and flow label zero
	binary.BigEndian.PutUint16(h[4:6], uint16(len(msg)))
	h[6] = unix.IPPROTO_ICMPV6
	h[7] = ndpHopLimit
	copy(h[8:24], src.To16())
	copy(h[24:40], dst.To16())
	m := h[ipv6HeaderLen:]
	copy(m, msg)
	binary.BigEndian.PutUint16(m[2:4], icmpv6Checksum(src, dst, m))
	return f
}

// naMessage is an unsolicited advertisement of target at mac: Override set
// so neighbours replace the old holder's address, Solicited clear as nobody
// asked, Router clear.
func naMessage(target net.IP, mac net.HardwareAddr) []byte {
	m := make([]byte, ndpMsgLen+8)
	m[0] = icmpv6NA
	m[4] = naOverride
	copy(m[8:24], target.To16())
	m[24], m[25] = ndpOptTarget, 1 // option length counts 8-byte units
	copy(m[26:32], mac)
	return m
}

// nsMessage is a DAD probe for target. It carries no source link-layer
// option: RFC 4861 §7.1.1 forbids one from ::.
func nsMessage(target net.IP) []byte {
	m := make([]byte, ndpMsgLen)
	m[0] = icmpv6NS
	copy(m[8:24], target.To16())
	return m
}

// naFilter passes only ICMPv6 neighbour advertisements (ND messages carry
// no extension headers), so a busy host's IPv6 traffic cannot fill the
// socket's queue and crowd out the answer during a probe.
var naFilter = []unix.SockFilter{
	{Code: unix.BPF_LD | unix.BPF_H | unix.BPF_ABS, K: 12}, // EtherType
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jf: 5, K: unix.ETH_P_IPV6},
	{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: ethHeaderLen + 6}, // next header
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jf: 3, K: unix.IPPROTO_ICMPV6},
	{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: ethHeaderLen + ipv6HeaderLen}, // ICMPv6 type
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jf: 1, K: icmpv6NA},
	{Code: unix.BPF_RET | unix.BPF_K, K: 0xffff},
	{Code: unix.BPF_RET | unix.BPF_K, K: 0},
}

// ndpSocket opens a packet socket in the calling thread's network
// namespace. It sends only, unless listen: then it receives the neighbour
// advertisements arriving on ifindex.
func ndpSocket(ifindex int, listen bool) (int, error) {
	// Protocol 0 receives nothing until bind names one, so the filter is in
	// place before the first frame is queued.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open packet socket for NDP: %w (needs CAP_NET_RAW)", err)
	}
	if !listen {
		return fd, nil
	}
	prog := unix.SockFprog{Len: uint16(len(naFilter)), Filter: &naFilter[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("attach the neighbour advertisement filter: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IPV6), Ifindex: ifindex}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind NDP socket to interface %d: %w (does it still exist?)", ifindex, err)
	}
	return fd, nil
}

// sendFrame sends frame, addressed to dst, out of ifindex.
func sendFrame(fd, ifindex int, dst net.HardwareAddr, frame []byte) error {
	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IPV6), Ifindex: ifindex, Halen: 6}
	copy(to.Addr[:], dst)
	if err := unix.Sendto(fd, frame, 0, to); err != nil {
		return fmt.Errorf("%w (is interface %d up?)", err, ifindex)
	}
	return nil
}

// AnnounceNA sends an unsolicited neighbour advertisement for ip at mac to
// all nodes on ifindex, from ip itself: the IPv6 form of Announce.
func AnnounceNA(ifindex int, mac net.HardwareAddr, ip net.IP) error {
	if err := checkNDP(mac, ip); err != nil {
		return err
	}
	fd, err := ndpSocket(ifindex, false)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return sendNA(fd, ifindex, mac, ip)
}

// sendNA sends AnnounceNA's advertisement on fd, a send-only packet socket.
func sendNA(fd, ifindex int, mac net.HardwareAddr, ip net.IP) error {
	dst := ethMulticast(allNodes)
	if err := sendFrame(fd, ifindex, dst, ndpFrame(mac, dst, ip, allNodes, naMessage(ip, mac))); err != nil {
		return fmt.Errorf("send neighbour advertisement for %s: %w", ip, err)
	}
	return nil
}

// ProbeDAD asks the LAN whether another host uses ip, as duplicate address
// detection does (from ::, so no neighbour cache learns anything from it),
// and returns the hardware address of a host that answers within wait, or
// nil: the IPv6 form of Probe.
func ProbeDAD(ifindex int, mac net.HardwareAddr, ip net.IP, wait time.Duration) (net.HardwareAddr, error) {
	if err := checkNDP(mac, ip); err != nil {
		return nil, err
	}
	fd, err := ndpSocket(ifindex, true)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	group := solicitedNode(ip)
	dst := ethMulticast(group)
	probe := ndpFrame(mac, dst, net.IPv6unspecified, group, nsMessage(ip))
	start := time.Now()
	deadline := start.Add(wait)
	buf := make([]byte, 1500)
	for sent := 0; ; {
		now := time.Now()
		next := start.Add(time.Duration(sent) * wait / dadProbes)
		if sent < dadProbes && !now.Before(next) {
			if err := sendFrame(fd, ifindex, dst, probe); err != nil {
				return nil, fmt.Errorf("send DAD probe for %s: %w", ip, err)
			}
			sent++
			next = start.Add(time.Duration(sent) * wait / dadProbes)
		}
		if !now.Before(deadline) {
			return nil, nil
		}
		until := deadline
		if sent < dadProbes && next.Before(until) {
			until = next
		}
		timeout := int((until.Sub(now) + time.Millisecond - 1) / time.Millisecond)
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, timeout); err != nil && !errors.Is(err, unix.EINTR) {
			return nil, fmt.Errorf("wait for neighbour advertisements: %w", err)
		}
		if fds[0].Revents&unix.POLLIN == 0 {
			continue
		}
		owner, err := readNA(fd, buf, ip, mac)
		if owner != nil || err != nil {
			return owner, err
		}
	}
}

// readNA reads one queued frame from fd and returns the owner of target it
// names, as naFrom. Nothing queued, or a signal, is nil, nil: the caller
// polls again.
func readNA(fd int, buf []byte, target net.IP, self net.HardwareAddr) (net.HardwareAddr, error) {
	n, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read neighbour advertisements: %w", err)
	}
	return naFrom(buf[:n], target, self), nil
}

// naFrom returns the hardware address of another host that frame shows
// advertising target: from the target link-layer option, else the frame's
// source. It is nil for anything else, including our own frames.
func naFrom(frame []byte, target net.IP, self net.HardwareAddr) net.HardwareAddr {
	if len(frame) < ethHeaderLen+ipv6HeaderLen+ndpMsgLen || binary.BigEndian.Uint16(frame[12:14]) != unix.ETH_P_IPV6 {
		return nil
	}
	owner := net.HardwareAddr(frame[6:12])
	h := frame[ethHeaderLen:]
	plen := int(binary.BigEndian.Uint16(h[4:6]))
	if h[0]>>4 != 6 || h[6] != unix.IPPROTO_ICMPV6 || h[7] != ndpHopLimit || plen < ndpMsgLen || len(h) < ipv6HeaderLen+plen {
		return nil
	}
	m := h[ipv6HeaderLen : ipv6HeaderLen+plen]
	if m[0] != icmpv6NA || m[1] != 0 || !net.IP(m[8:24]).Equal(target) || icmpv6Checksum(h[8:24], h[24:40], m) != 0 {
		return nil
	}
	for o := m[ndpMsgLen:]; len(o) >= 8 && o[1] > 0 && len(o) >= 8*int(o[1]); o = o[8*int(o[1]):] {
		if o[0] == ndpOptTarget && o[1] == 1 {
			owner = net.HardwareAddr(o[2:8])
		}
	}
	if bytes.Equal(owner, self) || bytes.Equal(frame[6:12], self) {
		return nil
	}
	return append(net.HardwareAddr(nil), owner...)
}

// AnnounceAny announces ip at mac on ifindex: gratuitous ARP for IPv4, an
// unsolicited neighbour advertisement for IPv6.
func AnnounceAny(ifindex int, mac net.HardwareAddr, ip net.IP) error {
	if ip.To4() != nil {
		return Announce(ifindex, mac, ip)
	}
	return AnnounceNA(ifindex, mac, ip)
}

// ProbeAny asks whether another host uses ip: an ARP probe for IPv4,
// duplicate address detection for IPv6.
func ProbeAny(ifindex int, mac net.HardwareAddr, ip net.IP, wait time.Duration) (net.HardwareAddr, error) {
	if ip.To4() != nil {
		return Probe(ifindex, mac, ip, wait)
	}
	return ProbeDAD(ifindex, mac, ip, wait)
}
