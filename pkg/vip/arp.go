package vip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// ARP over a raw AF_PACKET socket (no cgo): gratuitous ARP to move
// neighbours' caches to the new holder, and the RFC 5227 probe that finds
// another host already using the VIP before the first claim.

const (
	ethHeaderLen = 14
	arpLen       = 28
	arpRequest   = 1
	arpReply     = 2
)

var broadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// arpSocket opens a packet socket for ARP on interface ifindex. It lives in
// the network namespace of the calling thread.
func arpSocket(ifindex int) (int, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
	if err != nil {
		return -1, fmt.Errorf("open ARP socket: %w (needs CAP_NET_RAW)", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifindex}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind ARP socket: %w", err)
	}
	return fd, nil
}

// arpFrame builds an Ethernet frame with one ARP packet.
func arpFrame(op uint16, srcMAC net.HardwareAddr, senderIP net.IP, targetMAC net.HardwareAddr, targetIP net.IP, dst net.HardwareAddr) []byte {
	f := make([]byte, ethHeaderLen+arpLen)
	copy(f[0:6], dst)
	copy(f[6:12], srcMAC)
	binary.BigEndian.PutUint16(f[12:14], unix.ETH_P_ARP)
	a := f[ethHeaderLen:]
	binary.BigEndian.PutUint16(a[0:2], 1)      // Ethernet
	binary.BigEndian.PutUint16(a[2:4], 0x0800) // IPv4
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], op)
	copy(a[8:14], srcMAC)
	copy(a[14:18], senderIP.To4())
	copy(a[18:24], targetMAC)
	copy(a[24:28], targetIP.To4())
	return f
}

// Announce sends gratuitous ARP for ip from mac on ifindex: one request and
// one reply, as both kinds are honoured by different neighbours.
func Announce(ifindex int, mac net.HardwareAddr, ip net.IP) error {
	if ip.To4() == nil {
		return errors.New("gratuitous ARP is for IPv4")
	}
	fd, err := arpSocket(ifindex)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return sendGratuitousARP(fd, ifindex, mac, ip)
}

// sendGratuitousARP sends the two gratuitous ARPs of Announce on fd, any
// packet socket (it need not be bound).
func sendGratuitousARP(fd, ifindex int, mac net.HardwareAddr, ip net.IP) error {
	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifindex, Halen: 6}
	copy(to.Addr[:], broadcast)
	for _, op := range []uint16{arpRequest, arpReply} {
		target := net.HardwareAddr{0, 0, 0, 0, 0, 0}
		if op == arpReply {
			target = broadcast
		}
		if err := unix.Sendto(fd, arpFrame(op, mac, ip, target, ip, broadcast), 0, to); err != nil {
			return fmt.Errorf("send gratuitous ARP for %s: %w", ip, err)
		}
	}
	return nil
}

// Probe asks the LAN whether another host uses ip (RFC 5227: sender address
// 0.0.0.0, so no neighbour cache learns anything from it) and returns the
// hardware address of a host that answers within wait, or nil.
func Probe(ifindex int, mac net.HardwareAddr, ip net.IP, wait time.Duration) (net.HardwareAddr, error) {
	if ip.To4() == nil {
		return nil, errors.New("ARP probes are for IPv4")
	}
	fd, err := arpSocket(ifindex)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifindex, Halen: 6}
	copy(to.Addr[:], broadcast)
	probe := arpFrame(arpRequest, mac, net.IPv4zero, net.HardwareAddr{0, 0, 0, 0, 0, 0}, ip, broadcast)
	deadline := time.Now().Add(wait)
	buf := make([]byte, 1500)
	// Three probes spread over the wait, as RFC 5227 suggests.
	for i := range 3 {
		if err := unix.Sendto(fd, probe, 0, to); err != nil {
			return nil, fmt.Errorf("send ARP probe for %s: %w", ip, err)
		}
		until := time.Now().Add(wait / 3)
		if i == 2 {
			until = deadline
		}
		for time.Now().Before(until) {
			tv := unix.NsecToTimeval(max(time.Until(until), time.Millisecond).Nanoseconds())
			if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
				return nil, err
			}
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
					continue
				}
				return nil, fmt.Errorf("read ARP: %w", err)
			}
			if owner := answerFor(buf[:n], ip, mac); owner != nil {
				return owner, nil
			}
		}
	}
	return nil, nil
}

// answerFor returns the sender's hardware address if frame is an ARP packet
// from another host claiming ip.
func answerFor(frame []byte, ip net.IP, self net.HardwareAddr) net.HardwareAddr {
	if len(frame) < ethHeaderLen+arpLen || binary.BigEndian.Uint16(frame[12:14]) != unix.ETH_P_ARP {
		return nil
	}
	a := frame[ethHeaderLen:]
	if binary.BigEndian.Uint16(a[2:4]) != 0x0800 || a[4] != 6 || a[5] != 4 {
		return nil
	}
	sha := net.HardwareAddr(append([]byte(nil), a[8:14]...))
	if sha.String() == self.String() {
		return nil
	}
	if net.IP(a[14:18]).Equal(ip.To4()) {
		return sha
	}
	return nil
}
