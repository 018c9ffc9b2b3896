package config

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
)

// DetectAdvertiseAddress returns the first global unicast address of the
// interface holding the IPv4 default route, else of any interface that is
// up, else 127.0.0.1 (a single machine with no network still works).
func DetectAdvertiseAddress() (net.IP, error) {
	if name, err := defaultRouteInterface("/proc/net/route"); err == nil {
		if ip := firstGlobalAddress(name); ip != nil {
			return ip, nil
		}
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("cannot list network interfaces to pick an advertise address: %w; %w", err, Hint("pass {advertise-address}"))
	}
	for _, iface := range ifaces {
		if iface.Flags&net.FlagUp == 0 || iface.Flags&net.FlagLoopback != 0 {
			continue
		}
		if ip := firstGlobalAddress(iface.Name); ip != nil {
			return ip, nil
		}
	}
	return net.IPv4(127, 0, 0, 1), nil
}

// defaultRouteInterface reads the kernel's IPv4 routing table
// (/proc/net/route: Iface, Destination, Gateway, Flags, ... in hex).
func defaultRouteInterface(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 8 && fields[1] == "00000000" && fields[7] == "00000000" {
			return fields[0], nil
		}
	}
	return "", errors.New("no default route")
}

func firstGlobalAddress(ifaceName string) net.IP {
	iface, err := net.InterfaceByName(ifaceName)
	if err != nil {
		return nil
	}
	addrs, err := iface.Addrs()
	if err != nil {
		return nil
	}
	var v6 net.IP
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || !ipn.IP.IsGlobalUnicast() {
			continue
		}
		if ipn.IP.To4() != nil {
			return ipn.IP
		}
		if v6 == nil {
			v6 = ipn.IP
		}
	}
	return v6
}
