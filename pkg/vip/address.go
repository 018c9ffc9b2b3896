// Package vip owns the cluster's virtual IP on one master: the address on
// an interface with a finite lifetime (so a crashed holder's address expires
// by itself), its announcement to the LAN, and the checks before a claim.
// The election of the holder builds on this.
package vip

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/k8s-master/k8s-master/pkg/config"
)

// Address is the VIP on one interface of this host.
type Address struct {
	h        *netlink.Handle
	link     netlink.Link
	vip      net.IP
	lifetime time.Duration
	// sendFD is the packet socket announcements go out on, -1 until the
	// first.
	sendFD int

	// handOffWindow is how long a release passes on the frames that still
	// reach this host for the VIP (0: not at all); handOff is the running
	// one. See handoff.go.
	handOffWindow time.Duration
	handOff       *handOff
	log           klog.Logger
	// closed: Close ran (a VIP moved by vip set closes its old handle
	// before the master's stop would).
	closed bool
}

// Open checks that the interface exists and is up, that the VIP lies in one
// of its subnets and is not one of this host's own addresses. lifetime is
// the address's valid lifetime: the holder must refresh it sooner.
func Open(h *netlink.Handle, iface string, vip net.IP, lifetime time.Duration) (*Address, error) {
	if vip == nil || vip.IsUnspecified() || vip.IsLoopback() || vip.IsMulticast() {
		return nil, &config.SettingError{Setting: "vip", Value: vip, Problem: "must be a unicast address"}
	}
	if lifetime < time.Second {
		return nil, fmt.Errorf("VIP lifetime %s is under a second", lifetime)
	}
	link, err := h.LinkByName(iface)
	if err != nil {
		return nil, fmt.Errorf("interface %s not found (%v); %w with one of: %s", iface, err, config.Hint("pass {iface}"), linkNames(h))
	}
	if link.Attrs().Flags&net.FlagUp == 0 || link.Attrs().OperState == netlink.OperDown {
		return nil, fmt.Errorf("interface %s is down; %w", iface, config.Hint("bring it up or pass another {iface}"))
	}
	a := &Address{h: h, link: link, vip: vip, lifetime: lifetime, sendFD: -1, handOffWindow: handOffWindow, log: klog.Background().WithName("vip")}
	addrs, err := h.AddrList(link, a.family())
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", iface, err)
	}
	var subnets []string
	inSubnet := false
	for _, ad := range addrs {
		if a.isOurs(ad) {
			continue // left by an earlier run of this master
		}
		if ad.IP.Equal(vip) {
			return nil, &config.SettingError{Setting: "vip", Value: vip, Problem: fmt.Sprintf("is an address of this host on %s; the VIP must be a free address of that subnet", iface)}
		}
		subnets = append(subnets, ad.IPNet.String())
		if ad.IPNet.Contains(vip) && ad.Scope == int(netlink.SCOPE_UNIVERSE) {
			inSubnet = true
		}
	}
	if !inSubnet {
		if len(subnets) == 0 {
			subnets = []string{"none"}
		}
		return nil, &config.SettingError{Setting: "vip", Value: vip, Problem: fmt.Sprintf("is in none of the subnets of %s (%s); pick an address of that LAN or another {iface}", iface, strings.Join(subnets, ", ")), Others: []string{"iface"}}
	}
	return a, nil
}

func linkNames(h *netlink.Handle) string {
	links, err := h.LinkList()
	if err != nil {
		return "?"
	}
	var n []string
	for _, l := range links {
		n = append(n, l.Attrs().Name)
	}
	return strings.Join(n, ", ")
}

func (a *Address) family() int {
	if a.vip.To4() != nil {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// label marks the address as the VIP (IPv4 labels must start with the
// interface name and fit in 15 characters).
func (a *Address) label() string {
	if a.family() != netlink.FAMILY_V4 {
		return ""
	}
	l := a.link.Attrs().Name + ":vip"
	if len(l) > 15 {
		return ""
	}
	return l
}

// isOurs tells our VIP from a node address: same IP, host prefix and a
// finite lifetime.
func (a *Address) isOurs(ad netlink.Addr) bool {
	ones, bits := ad.Mask.Size()
	return ad.IP.Equal(a.vip) && ones == bits && ad.ValidLft > 0 && ad.ValidLft != int(^uint32(0))
}

func (a *Address) addr() *netlink.Addr {
	bits := 32
	if a.family() == netlink.FAMILY_V6 {
		bits = 128
	}
	secs := int(a.lifetime / time.Second)
	return &netlink.Addr{
		IPNet: &net.IPNet{IP: a.vip, Mask: net.CIDRMask(bits, bits)},
		Label: a.label(),
		// IFA_F_NODAD: the holder was elected and has probed; the kernel
		// must not hold the address tentative for a second.
		Flags:       unix.IFA_F_NODAD,
		ValidLft:    secs,
		PreferedLft: secs,
	}
}

// SetLogger names where the address logs (its hand-offs).
func (a *Address) SetLogger(log klog.Logger) { a.log = log }

// Claim adds the VIP, or renews its lifetime when it is already there. It
// first ends a hand-off still running from a release: from now on this
// host answers for the VIP itself.
func (a *Address) Claim() error {
	if a.handOff != nil {
		a.handOff.stop()
		a.handOff = nil
	}
	if err := a.h.AddrReplace(a.link, a.addr()); err != nil {
		return fmt.Errorf("add VIP %s to %s: %w", a.vip, a.link.Attrs().Name, err)
	}
	return nil
}

// Refresh renews the lifetime; Claim does the same.
func (a *Address) Refresh() error { return a.Claim() }

// Release removes the VIP; a VIP already gone is fine. When it was there,
// a hand-off passes the frames that still come for it to the next holder
// for a short while (capture starts before the address goes, so none
// slips through); it outlives Close, ending by itself.
func (a *Address) Release() error {
	var ho *handOff
	if a.handOffWindow > 0 && a.handOff == nil {
		attrs := a.link.Attrs()
		var err error
		if ho, err = startHandOff(attrs.Index, attrs.HardwareAddr, a.vip, a.handOffWindow, a.log); err != nil {
			// Only a convenience: without it, clients with a stale
			// neighbour entry wait for a retransmission.
			a.log.V(2).Info("No VIP hand-off", "err", err.Error())
		}
	}
	err := a.h.AddrDel(a.link, a.addr())
	if err != nil {
		if ho != nil {
			ho.stop()
		}
		if errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("remove VIP %s from %s: %w", a.vip, a.link.Attrs().Name, err)
	}
	if ho != nil {
		a.handOff = ho
	}
	return nil
}

// Held tells whether the VIP is on the interface now.
func (a *Address) Held() (bool, error) {
	addrs, err := a.h.AddrList(a.link, a.family())
	if err != nil {
		return false, err
	}
	for _, ad := range addrs {
		if ad.IP.Equal(a.vip) {
			return true, nil
		}
	}
	return false, nil
}

// Link is the interface the VIP lives on.
func (a *Address) Link() netlink.Link { return a.link }

// IP is the VIP.
func (a *Address) IP() net.IP { return a.vip }

// Announce tells the LAN that this host holds the VIP now: gratuitous ARP
// or an unsolicited neighbour advertisement. Its send-only packet socket
// stays open: closing one waits for an RCU grace period (tens of
// milliseconds), which a takeover should not pay.
func (a *Address) Announce() error {
	attrs := a.link.Attrs()
	if a.sendFD < 0 {
		// Protocol 0: it receives nothing.
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open packet socket to announce the VIP: %w (needs CAP_NET_RAW)", err)
		}
		a.sendFD = fd
	}
	if a.family() == netlink.FAMILY_V4 {
		return sendGratuitousARP(a.sendFD, attrs.Index, attrs.HardwareAddr, a.vip)
	}
	if err := checkNDP(attrs.HardwareAddr, a.vip); err != nil {
		return err
	}
	return sendNA(a.sendFD, attrs.Index, attrs.HardwareAddr, a.vip)
}

// OpenOn is Open in this process's network namespace, on iface or, when
// iface is "", on the one interface with a subnet that holds vip.
func OpenOn(iface string, vip net.IP, lifetime time.Duration) (*Address, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	if iface == "" {
		if iface, err = interfaceFor(h, vip); err != nil {
			h.Close()
			return nil, err
		}
	}
	a, err := Open(h, iface, vip, lifetime)
	if err != nil {
		h.Close()
		return nil, err
	}
	return a, nil
}

// interfaceFor finds the interface whose subnet holds vip.
func interfaceFor(h *netlink.Handle, vip net.IP) (string, error) {
	links, err := h.LinkList()
	if err != nil {
		return "", fmt.Errorf("list interfaces: %w", err)
	}
	var found []string
	for _, l := range links {
		addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			continue
		}
		for _, ad := range addrs {
			ones, bits := ad.Mask.Size()
			if ones < bits && ad.Scope == int(netlink.SCOPE_UNIVERSE) && ad.IPNet.Contains(vip) {
				found = append(found, l.Attrs().Name)
				break
			}
		}
	}
	switch len(found) {
	case 0:
		return "", &config.SettingError{Setting: "vip", Value: vip, Problem: fmt.Sprintf("is in no subnet of this host's interfaces (%s); pick an address of the masters' LAN, or pass {iface}", linkNames(h)), Others: []string{"iface"}}
	case 1:
		return found[0], nil
	default:
		return "", &config.SettingError{Setting: "vip", Value: vip, Problem: fmt.Sprintf("is in the subnets of several interfaces (%s); pass {iface}", strings.Join(found, ", ")), Others: []string{"iface"}}
	}
}

// CheckFree asks the LAN whether another host answers for the VIP (ARP
// probe or IPv6 duplicate address detection) and refuses naming its MAC.
func (a *Address) CheckFree(wait time.Duration) error {
	attrs := a.link.Attrs()
	mac, err := ProbeAny(attrs.Index, attrs.HardwareAddr, a.vip, wait)
	if err != nil {
		return fmt.Errorf("probe the LAN for VIP %s: %w", a.vip, err)
	}
	if mac != nil {
		return &config.SettingError{Setting: "vip", Value: a.vip, Problem: fmt.Sprintf("is already in use on %s by the host with MAC %s; pick a free address or take it off that host", attrs.Name, mac)}
	}
	return nil
}

// Close releases the netlink handle and socket (not the VIP).
func (a *Address) Close() {
	if a.closed {
		return
	}
	a.closed = true
	a.h.Close()
	if a.sendFD >= 0 {
		unix.Close(a.sendFD)
		a.sendFD = -1
	}
}
