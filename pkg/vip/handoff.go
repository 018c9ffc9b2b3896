package vip

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// A hand-off passes on the frames that still reach this host for the VIP
// after it gave the VIP up. Neighbours keep sending to this host's MAC until
// the next holder's gratuitous ARP (or NA) reaches them; the kernel drops
// those frames, since the address is gone, and a dropped SYN costs its
// client TCP's one-second retransmission: in a planned hand-over, with the
// next holder a few milliseconds away, that second would be all the outage
// a client sees. So for a short window after a release this host captures
// the frames addressed to the VIP and to its own MAC, holds them until
// another host announces the VIP, then sends them on to that host's MAC,
// unchanged but for the Ethernet addresses (as a bridge would: the next
// holder owns the VIP and answers the client directly). A claim ends the
// hand-off before the address returns, so this host never forwards what it
// should answer itself.

const (
	// handOffWindow bounds a hand-off: long enough for a standby to take
	// over and announce, short enough that an idle hand-off costs nothing.
	handOffWindow = 2 * time.Second
	// handOffQueue bounds the frames held while no other host has announced
	// the VIP yet; handOffMaxAge drops held frames their sender has
	// retransmitted by now anyway.
	handOffQueue  = 256
	handOffMaxAge = time.Second
	// handOffSnap is the largest frame captured whole: a GRO-merged or
	// offloaded super-frame cannot be sent on as one anyway.
	handOffSnap = 0x10000
)

// handOff is one running hand-off.
type handOff struct {
	fd      int
	ifindex int
	self    net.HardwareAddr
	vip     net.IP
	log     klog.Logger
	done    chan struct{}

	// mu orders a claim's stop against a send: once stop returns, nothing
	// more is forwarded.
	mu      sync.Mutex
	stopped bool

	queued    atomic.Int64
	forwarded atomic.Int64
	dropped   atomic.Int64
}

// startHandOff opens the capture socket (the filter is in place before it
// binds, so it queues nothing else) and starts passing frames on.
func startHandOff(ifindex int, self net.HardwareAddr, vip net.IP, window time.Duration, log klog.Logger) (*handOff, error) {
	if len(self) != 6 {
		return nil, errors.New("hand-off needs an Ethernet interface")
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	filter := handOffFilter(vip)
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// Auxiliary data says whether a frame's checksum is still to be filled
	// in (one from a local sender through a veth).
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// Not our own forwarded frames (older kernels lack it: those frames are
	// PACKET_OUTGOING and skipped anyway).
	_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	h := &handOff{
		fd: fd, ifindex: ifindex, self: append(net.HardwareAddr(nil), self...),
		vip: vip, log: log, done: make(chan struct{}),
	}
	go h.run(time.Now().Add(window))
	return h, nil
}

// stop ends forwarding now; the capture goroutine exits on its next wake-up.
func (h *handOff) stop() {
	h.mu.Lock()
	h.stopped = true
	h.mu.Unlock()
}

type heldFrame struct {
	frame []byte
	at    time.Time
}

func (h *handOff) run(deadline time.Time) {
	defer close(h.done)
	// Closing a packet socket waits for an RCU grace period: it happens
	// here, off the claim and release paths.
	defer unix.Close(h.fd)
	var next net.HardwareAddr
	var held []heldFrame
	buf := make([]byte, handOffSnap)
	oob := make([]byte, unix.CmsgSpace(tpacketAuxdataLen))
	for {
		now := time.Now()
		h.mu.Lock()
		stopped := h.stopped
		h.mu.Unlock()
		if stopped || !now.Before(deadline) {
			break
		}
		wait := min(deadline.Sub(now), 100*time.Millisecond)
		fds := []unix.PollFd{{Fd: int32(h.fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, int(wait/time.Millisecond)+1); err != nil && !errors.Is(err, unix.EINTR) {
			h.log.Error(err, "VIP hand-off: cannot wait for frames")
			break
		}
		if fds[0].Revents&unix.POLLIN == 0 {
			continue
		}
		n, oobn, _, from, err := unix.Recvmsg(h.fd, buf, oob, unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			h.log.Error(err, "VIP hand-off: cannot read frames")
			break
		}
		ll, _ := from.(*unix.SockaddrLinklayer)
		if ll == nil {
			continue
		}
		frame := buf[:n]
		if mac := h.announcer(frame); mac != nil {
			if !bytes.Equal(mac, next) {
				h.log.V(2).Info("VIP hand-off: the next holder announced itself", "mac", mac.String(), "held", len(held))
			}
			next = mac
			for _, f := range held {
				if time.Since(f.at) < handOffMaxAge {
					h.send(f.frame, next)
				} else {
					h.dropped.Add(1)
				}
			}
			held = nil
			continue
		}
		// Only frames sent to this host's MAC: a stale neighbour entry.
		if ll.Pkttype != unix.PACKET_HOST {
			continue
		}
		status := auxStatus(oob[:oobn])
		if status&unix.TP_STATUS_VLAN_VALID != 0 {
			continue // a VLAN's frame, not this interface's
		}
		out, ok := forwardable(frame, h.vip, status&unix.TP_STATUS_CSUMNOTREADY != 0)
		if !ok {
			h.dropped.Add(1)
			continue
		}
		if next != nil {
			h.send(out, next)
			continue
		}
		if len(held) >= handOffQueue {
			h.dropped.Add(1)
			continue
		}
		h.queued.Add(1)
		held = append(held, heldFrame{frame: out, at: time.Now()})
	}
	h.dropped.Add(int64(len(held)))
	if q, f, d := h.queued.Load(), h.forwarded.Load(), h.dropped.Load(); q+f+d > 0 {
		h.log.Info("VIP hand-off done", "forwarded", f, "heldUntilAnnounced", q, "dropped", d)
	}
	handOffFrames.WithLabelValues("forwarded").Add(float64(h.forwarded.Load()))
	handOffFrames.WithLabelValues("dropped").Add(float64(h.dropped.Load()))
}

// send passes frame on to mac, unless a claim stopped the hand-off.
func (h *handOff) send(frame []byte, mac net.HardwareAddr) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		h.dropped.Add(1)
		return
	}
	copy(frame[0:6], mac)
	copy(frame[6:12], h.self)
	to := &unix.SockaddrLinklayer{Protocol: htons(binary.BigEndian.Uint16(frame[12:14])), Ifindex: h.ifindex, Halen: 6}
	copy(to.Addr[:], mac)
	if err := unix.Sendto(h.fd, frame, 0, to); err != nil {
		// Too big for the link (a merged segment), say: its sender
		// retransmits, by then to the new holder.
		h.dropped.Add(1)
		h.log.V(2).Info("VIP hand-off: could not pass a frame on", "len", len(frame), "err", err.Error())
		return
	}
	h.forwarded.Add(1)
}

// announcer returns the MAC of another host announcing the VIP in frame
// (ARP from the VIP, or a neighbour advertisement for it), else nil.
func (h *handOff) announcer(frame []byte) net.HardwareAddr {
	if len(frame) < ethHeaderLen {
		return nil
	}
	switch binary.BigEndian.Uint16(frame[12:14]) {
	case unix.ETH_P_ARP:
		return answerFor(frame, h.vip, h.self)
	case unix.ETH_P_IPV6:
		if h.vip.To4() == nil {
			return naFrom(frame, h.vip, h.self)
		}
	}
	return nil
}

// forwardable checks that frame is an IP packet for vip and returns a copy
// to send on, its transport checksum completed when the sender left that
// to hardware (csumPending): the next holder's kernel checks it.
func forwardable(frame []byte, vip net.IP, csumPending bool) ([]byte, bool) {
	if len(frame) < ethHeaderLen {
		return nil, false
	}
	out := append([]byte(nil), frame...)
	p := out[ethHeaderLen:]
	var proto byte
	var pseudo []byte
	var l4 []byte
	switch binary.BigEndian.Uint16(out[12:14]) {
	case unix.ETH_P_IP:
		if vip.To4() == nil || len(p) < 20 || p[0]>>4 != 4 {
			return nil, false
		}
		ihl := int(p[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(p[2:4]))
		if ihl < 20 || total < ihl || len(p) < total || !net.IP(p[16:20]).Equal(vip) {
			return nil, false
		}
		if !csumPending {
			return out, true
		}
		if binary.BigEndian.Uint16(p[6:8])&0x3fff != 0 {
			return nil, false // a fragment: its checksum is not ours to finish
		}
		proto = p[9]
		l4 = p[ihl:total]
		pseudo = make([]byte, 12)
		copy(pseudo[0:8], p[12:20])
		pseudo[9] = proto
		binary.BigEndian.PutUint16(pseudo[10:12], uint16(len(l4)))
	case unix.ETH_P_IPV6:
		if vip.To4() != nil || len(p) < ipv6HeaderLen || p[0]>>4 != 6 {
			return nil, false
		}
		plen := int(binary.BigEndian.Uint16(p[4:6]))
		if len(p) < ipv6HeaderLen+plen || !net.IP(p[24:40]).Equal(vip) {
			return nil, false
		}
		if !csumPending {
			return out, true
		}
		proto = p[6]
		l4 = p[ipv6HeaderLen : ipv6HeaderLen+plen]
		pseudo = make([]byte, 40)
		copy(pseudo[0:32], p[8:40])
		binary.BigEndian.PutUint32(pseudo[32:36], uint32(len(l4)))
		pseudo[39] = proto
	default:
		return nil, false
	}
	var at int
	switch proto {
	case unix.IPPROTO_TCP:
		at = 16
	case unix.IPPROTO_UDP:
		at = 6
	default:
		return nil, false
	}
	if len(l4) < at+2 {
		return nil, false
	}
	l4[at], l4[at+1] = 0, 0
	sum := ^onesSum(pseudo, l4)
	if proto == unix.IPPROTO_UDP && sum == 0 {
		sum = 0xffff // zero means "no checksum" in UDP
	}
	binary.BigEndian.PutUint16(l4[at:at+2], sum)
	return out, true
}

// tpacketAuxdataLen is sizeof(struct tpacket_auxdata).
const tpacketAuxdataLen = 20

// auxStatus is tp_status from a frame's PACKET_AUXDATA, 0 without one.
func auxStatus(oob []byte) uint32 {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_PACKET && m.Header.Type == unix.PACKET_AUXDATA && len(m.Data) >= 4 {
			return binary.NativeEndian.Uint32(m.Data[0:4])
		}
	}
	return 0
}

// handOffFilter passes ARP from the VIP and IP packets to it; for an IPv6
// VIP, also neighbour advertisements (sent to all nodes, so not "to" it).
// It only thins the traffic: every frame is checked again in Go.
func handOffFilter(vip net.IP) []unix.SockFilter {
	type cond struct {
		size uint16 // BPF_B, BPF_H or BPF_W
		off  uint32
		val  uint32
	}
	words := func(ip net.IP, off uint32) []cond {
		var c []cond
		for i := 0; i < len(ip); i += 4 {
			c = append(c, cond{unix.BPF_W, off + uint32(i), binary.BigEndian.Uint32(ip[i : i+4])})
		}
		return c
	}
	var alts [][]cond
	if v4 := vip.To4(); v4 != nil {
		alts = [][]cond{
			append([]cond{{unix.BPF_H, 12, unix.ETH_P_ARP}}, words(v4, ethHeaderLen+14)...), // ARP sender IP
			append([]cond{{unix.BPF_H, 12, unix.ETH_P_IP}}, words(v4, ethHeaderLen+16)...),  // IPv4 destination
		}
	} else {
		v6 := vip.To16()
		alts = [][]cond{
			append([]cond{{unix.BPF_H, 12, unix.ETH_P_IPV6}}, words(v6, ethHeaderLen+24)...), // IPv6 destination
			append([]cond{
				{unix.BPF_H, 12, unix.ETH_P_IPV6},
				{unix.BPF_B, ethHeaderLen + 6, unix.IPPROTO_ICMPV6},
				{unix.BPF_B, ethHeaderLen + ipv6HeaderLen, icmpv6NA},
			}, words(v6, ethHeaderLen+ipv6HeaderLen+8)...), // NA target
		}
	}
	var prog []unix.SockFilter
	for _, alt := range alts {
		// Each condition is a load and a jump; a mismatch skips the rest of
		// this alternative, its accept included.
		left := 2*len(alt) + 1
		for _, c := range alt {
			left -= 2
			prog = append(prog,
				unix.SockFilter{Code: unix.BPF_LD | c.size | unix.BPF_ABS, K: c.off},
				unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jf: uint8(left), K: c.val})
		}
		prog = append(prog, unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: handOffSnap})
	}
	return append(prog, unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: 0})
}
