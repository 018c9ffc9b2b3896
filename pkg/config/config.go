// Package config holds the settings of one master: what the CLI parses, what
// init records in the data directory and what every other package reads.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/k8s-master/k8s-master/pkg/addons"
	"github.com/k8s-master/k8s-master/pkg/layout"
)

// DefaultDataDir is where a packaged master keeps its state.
const DefaultDataDir = "/var/lib/k8s-master"

// Config is everything one master needs to run. Cluster-wide fields
// (ServiceCIDR, PodCIDR, ClusterDomain) are fixed at init; node-local ones
// describe this master.
type Config struct {
	DataDir string `json:"-"`

	// Name is this master's node and etcd member name.
	Name string `json:"name"`
	// AdvertiseAddress is the address other masters and clients reach this
	// master on (etcd peer URL, apiserver endpoint).
	AdvertiseAddress string `json:"advertiseAddress"`
	// BindAddress is where the apiserver listens.
	BindAddress string `json:"bindAddress"`

	APIServerPort         int `json:"apiServerPort"`
	EtcdClientPort        int `json:"etcdClientPort"`
	EtcdPeerPort          int `json:"etcdPeerPort"`
	EtcdMetricsPort       int `json:"etcdMetricsPort"`
	ControllerManagerPort int `json:"controllerManagerPort"`
	SchedulerPort         int `json:"schedulerPort"`
	JoinPort              int `json:"joinPort"`

	ServiceCIDR   string `json:"serviceCIDR"`
	PodCIDR       string `json:"podCIDR,omitempty"`
	ClusterDomain string `json:"clusterDomain"`

	// VIP is the cluster's virtual IP: one healthy master holds it on its
	// VIPInterface; clients and kubeconfigs use it. Cluster-wide.
	VIP string `json:"vip,omitempty"`
	// VIPInterface is this master's interface for the VIP; empty means the
	// interface whose subnet holds the VIP. Node-local.
	VIPInterface string `json:"vipInterface,omitempty"`
	// VIPLeaseTTL is the election session's TTL in seconds: how long a dead
	// holder can keep the VIP at worst. Cluster-wide.
	VIPLeaseTTL int `json:"vipLeaseTTL,omitempty"`

	// APIServerSANs are extra names or addresses for the apiserver
	// certificate (a DNS name of a load balancer, say).
	APIServerSANs []string `json:"apiServerSANs,omitempty"`

	// Scheduled snapshots of this master (pkg/snapshot): every
	// SnapshotInterval (0: none), the newest SnapshotRetention kept in
	// SnapshotDir. Node-local and not recorded: each start takes them
	// from its flags and the configuration file.
	SnapshotDir       string        `json:"-"`
	SnapshotInterval  time.Duration `json:"-"`
	SnapshotRetention int           `json:"-"`

	// EtcdQuota is the etcd member's backend quota (QuotaBackendBytes) in
	// Kubernetes quantity syntax; past it etcd raises its NOSPACE alarm and
	// refuses writes (pkg/etcdspace recovers from that). Node-local and not
	// recorded: each start takes it from its flags and the configuration
	// file, so it may change on a restart.
	EtcdQuota ByteSize `json:"-"`

	// The add-ons (pkg/addons) the leader among the masters applies, from
	// its own settings: give every master the same ones (the
	// configuration file). Node-local and not recorded, so that a restart
	// with other values re-applies the add-ons. ImageRepository is where
	// their images come from, DisabledAddons the ones the cluster does not
	// run, ClusterDNS the DNS Service's address ("": the 10th address of
	// the service range), which kubelet-config announces.
	ImageRepository string   `json:"-"`
	DisabledAddons  []string `json:"-"`
	ClusterDNS      string   `json:"-"`

	// LogFile receives the components' logs; "-" means standard error.
	LogFile      string `json:"-"`
	LogVerbosity int    `json:"-"`
}

// The range of VIPLeaseTTL: etcd cannot keep a shorter lease reliably, and
// a longer one leaves the cluster without its address too long.
const (
	MinVIPLeaseTTL = 2
	MaxVIPLeaseTTL = 60
)

// VIPLease is VIPLeaseTTL as a duration, converted here only: the election
// session's TTL and the VIP address's lifetime both derive from it.
func (c *Config) VIPLease() time.Duration { return time.Duration(c.VIPLeaseTTL) * time.Second }

// Default returns a Config with every default filled in except the ones that
// depend on the host (Name, AdvertiseAddress): see Complete.
func Default() Config {
	return Config{
		DataDir:               DefaultDataDir,
		BindAddress:           "0.0.0.0",
		APIServerPort:         6443,
		EtcdClientPort:        2379,
		EtcdPeerPort:          2380,
		EtcdMetricsPort:       2381,
		ControllerManagerPort: 10257,
		SchedulerPort:         10259,
		JoinPort:              9443,
		ServiceCIDR:           "10.96.0.0/12",
		ClusterDomain:         "cluster.local",
		VIPLeaseTTL:           3,
		SnapshotDir:           DefaultSnapshotDir,
		SnapshotInterval:      time.Hour,
		SnapshotRetention:     24,
		EtcdQuota:             DefaultEtcdQuota,
		ImageRepository:       addons.DefaultImageRepository,
	}
}

// DefaultSnapshotDir is outside the data directory, so that `reset` keeps
// the snapshots.
const DefaultSnapshotDir = "/var/lib/k8s-master-snapshots"

// MinSnapshotInterval bounds how often a master may snapshot itself.
const MinSnapshotInterval = 10 * time.Second

// Complete fills the host-dependent defaults: the node name from the
// hostname and the advertise address from the default route.
func (c *Config) Complete() error {
	if c.DataDir != "" {
		abs, err := filepath.Abs(c.DataDir)
		if err != nil {
			return &SettingError{Setting: "data-dir", Value: c.DataDir, Err: err}
		}
		c.DataDir = abs
	}
	if c.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("cannot read the hostname for the node name: %w; %w", err, Hint("pass {name}"))
		}
		c.Name = strings.ToLower(h)
	}
	if c.AdvertiseAddress == "" {
		ip, err := DetectAdvertiseAddress()
		if err != nil {
			return err
		}
		c.AdvertiseAddress = ip.String()
	}
	if c.LogFile == "" {
		c.LogFile = c.Layout().Log()
	}
	if c.SnapshotDir != "" {
		abs, err := filepath.Abs(c.SnapshotDir)
		if err != nil {
			return &SettingError{Setting: "snapshot-dir", Value: c.SnapshotDir, Err: err}
		}
		c.SnapshotDir = abs
	}
	return nil
}

// Validate reports every problem at once (errors.Join), each a
// *SettingError naming the setting to fix.
func (c *Config) Validate() error {
	var errs []error
	add := func(e *SettingError) { errs = append(errs, e) }

	if c.DataDir == "" {
		add(&SettingError{Setting: "data-dir", Problem: "must not be empty"})
	} else if !filepath.IsAbs(c.DataDir) {
		add(&SettingError{Setting: "data-dir", Value: c.DataDir, Problem: "must be an absolute path"})
	}
	if msgs := validation.IsDNS1123Subdomain(c.Name); len(msgs) > 0 {
		add(&SettingError{Setting: "name", Value: c.Name, Problem: "is not a valid node name", Err: errors.New(strings.Join(msgs, "; "))})
	}
	adv := net.ParseIP(c.AdvertiseAddress)
	switch {
	case adv == nil:
		add(&SettingError{Setting: "advertise-address", Value: c.AdvertiseAddress, Problem: "is not an IP address"})
	case adv.IsUnspecified():
		add(&SettingError{Setting: "advertise-address", Problem: "must be a concrete address, not " + c.AdvertiseAddress})
	}
	if ip := net.ParseIP(c.BindAddress); ip == nil {
		add(&SettingError{Setting: "bind-address", Value: c.BindAddress, Problem: "is not an IP address"})
	}

	ports := []struct {
		key string
		v   int
	}{
		{"apiserver-port", c.APIServerPort},
		{"etcd-client-port", c.EtcdClientPort},
		{"etcd-peer-port", c.EtcdPeerPort},
		{"etcd-metrics-port", c.EtcdMetricsPort},
		{"controller-manager-port", c.ControllerManagerPort},
		{"scheduler-port", c.SchedulerPort},
		{"join-port", c.JoinPort},
	}
	seen := map[int]string{}
	for _, p := range ports {
		if p.v < 1 || p.v > 65535 {
			add(&SettingError{Setting: p.key, Value: p.v, Problem: "is out of range 1-65535"})
			continue
		}
		if other, dup := seen[p.v]; dup {
			add(&SettingError{Setting: other, Problem: fmt.Sprintf("and {%s} are both %d; give each its own port", p.key, p.v), Others: []string{p.key}})
		}
		seen[p.v] = p.key
	}

	svc, err := ParseServiceCIDR(c.ServiceCIDR)
	if err != nil {
		errs = append(errs, err)
	}
	if c.PodCIDR != "" {
		_, pod, err := net.ParseCIDR(c.PodCIDR)
		if err != nil {
			add(&SettingError{Setting: "pod-cidr", Value: c.PodCIDR, Problem: "is not a CIDR", Err: err})
		} else if svc != nil && (pod.Contains(svc.IP) || svc.Contains(pod.IP)) {
			add(&SettingError{Setting: "pod-cidr", Value: Bare(c.PodCIDR), Problem: "overlaps {service-cidr} " + svc.String(), Others: []string{"service-cidr"}})
		}
	}
	if msgs := validation.IsDNS1123Subdomain(c.ClusterDomain); len(msgs) > 0 {
		add(&SettingError{Setting: "cluster-domain", Value: c.ClusterDomain, Problem: "is invalid", Err: errors.New(strings.Join(msgs, "; "))})
	}
	for _, san := range c.APIServerSANs {
		if net.ParseIP(san) != nil {
			continue
		}
		if msgs := validation.IsDNS1123Subdomain(strings.TrimPrefix(san, "*.")); len(msgs) > 0 {
			add(&SettingError{Setting: "apiserver-san", Value: san, Problem: "is neither an IP address nor a DNS name"})
		}
	}
	errs = append(errs, c.validateVIP(adv, svc)...)
	errs = append(errs, c.validateAddons(svc)...)
	if c.LogVerbosity < 0 || c.LogVerbosity > 10 {
		add(&SettingError{Setting: "v", Value: c.LogVerbosity, Problem: "is out of range 0-10"})
	}
	if c.SnapshotInterval != 0 && c.SnapshotInterval < MinSnapshotInterval {
		add(&SettingError{Setting: "snapshot-interval", Value: c.SnapshotInterval, Problem: fmt.Sprintf("is shorter than %s (0 turns scheduled snapshots off)", MinSnapshotInterval)})
	}
	if c.SnapshotRetention < 1 {
		add(&SettingError{Setting: "snapshot-retention", Value: c.SnapshotRetention, Problem: "must keep at least 1 snapshot"})
	}
	if _, err := c.EtcdQuota.Bytes(); err != nil {
		errs = append(errs, err)
	}
	if !filepath.IsAbs(c.SnapshotDir) {
		add(&SettingError{Setting: "snapshot-dir", Value: c.SnapshotDir, Problem: "must be an absolute path"})
	} else if c.DataDir != "" && (c.SnapshotDir == c.DataDir || strings.HasPrefix(c.SnapshotDir, c.DataDir+string(filepath.Separator))) {
		add(&SettingError{Setting: "snapshot-dir", Value: c.SnapshotDir, Problem: "is inside the data directory, where reset would take the snapshots with it; use a directory outside it"})
	}
	return errors.Join(errs...)
}

// ValidateVIP checks only the VIP settings, as Validate does: for `vip
// set`, on a running cluster whose other settings were checked at init.
func (c *Config) ValidateVIP() error {
	svc, _ := ParseServiceCIDR(c.ServiceCIDR)
	return errors.Join(c.validateVIP(net.ParseIP(c.AdvertiseAddress), svc)...)
}

// validateVIP checks the VIP settings that need no look at the host (the
// interface checks happen in pkg/vip before anything starts).
func (c *Config) validateVIP(adv net.IP, svc *net.IPNet) []error {
	var errs []error
	// --iface without --vip is fine here: a joiner learns the VIP from the
	// cluster (see CheckIfaceHasVIP).
	if c.VIP == "" {
		return errs
	}
	// A parsed address is shown as is, an unparsable one quoted.
	vip := net.ParseIP(c.VIP)
	switch {
	case vip == nil:
		errs = append(errs, &SettingError{Setting: "vip", Value: c.VIP, Problem: "is not an IP address"})
	case vip.IsUnspecified() || vip.IsLoopback() || vip.IsMulticast() || vip.IsLinkLocalUnicast():
		errs = append(errs, &SettingError{Setting: "vip", Value: Bare(c.VIP), Problem: "must be a routable unicast address of the masters' LAN"})
	case adv != nil && vip.Equal(adv):
		errs = append(errs, &SettingError{Setting: "vip", Value: Bare(c.VIP), Problem: "is this master's own address ({advertise-address}); pick a free address of the same subnet", Others: []string{"advertise-address"}})
	case svc != nil && svc.Contains(vip):
		errs = append(errs, &SettingError{Setting: "vip", Value: Bare(c.VIP), Problem: "lies in {service-cidr} " + c.ServiceCIDR + "; pick an address of the masters' LAN", Others: []string{"service-cidr"}})
	}
	if c.VIPLeaseTTL < MinVIPLeaseTTL || c.VIPLeaseTTL > MaxVIPLeaseTTL {
		errs = append(errs, &SettingError{Setting: "vip-lease-ttl", Value: c.VIPLeaseTTL, Problem: fmt.Sprintf("is out of range %d-%d seconds (etcd cannot keep a shorter lease reliably)", MinVIPLeaseTTL, MaxVIPLeaseTTL)})
	}
	return errs
}

// imageRepository is a registry host (with an optional port) and path, as
// image references have them: no scheme, tag or digest.
var imageRepository = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*$`)

// validateAddons checks the add-on settings.
func (c *Config) validateAddons(svc *net.IPNet) []error {
	var errs []error
	if !imageRepository.MatchString(c.ImageRepository) {
		errs = append(errs, &SettingError{Setting: "image-repository", Value: c.ImageRepository, Problem: "is not an image repository; write it like registry.k8s.io or mirror.example:5000/k8s (no scheme, no tag)"})
	}
	for _, a := range c.DisabledAddons {
		if err := addons.CheckName(a); err != nil {
			errs = append(errs, &SettingError{Setting: "disable-addon", Value: a, Problem: "is not an add-on", Err: err})
		}
	}
	if c.ClusterDNS == "" {
		return errs
	}
	ip := net.ParseIP(c.ClusterDNS)
	switch {
	case ip == nil:
		errs = append(errs, &SettingError{Setting: "cluster-dns", Value: c.ClusterDNS, Problem: "is not an IP address"})
	case svc == nil:
	case !svc.Contains(ip):
		errs = append(errs, &SettingError{Setting: "cluster-dns", Value: Bare(c.ClusterDNS), Problem: "lies outside {service-cidr} " + svc.String() + "; pick an address of the service range (default: its 10th)", Others: []string{"service-cidr"}})
	case ip.Equal(svc.IP):
		errs = append(errs, &SettingError{Setting: "cluster-dns", Value: Bare(c.ClusterDNS), Problem: "is the network address of {service-cidr}; pick another address of the range (default: its 10th)", Others: []string{"service-cidr"}})
	default:
		if first, err := c.FirstServiceIP(); err == nil && ip.Equal(first) {
			errs = append(errs, &SettingError{Setting: "cluster-dns", Value: Bare(c.ClusterDNS), Problem: "is the kubernetes Service's address; pick another address of {service-cidr} (default: its 10th)", Others: []string{"service-cidr"}})
		}
	}
	return errs
}

// CheckIfaceHasVIP refuses an --iface on a cluster without a VIP, once the
// VIP is known (init: from the flags; join: from the cluster).
func (c *Config) CheckIfaceHasVIP() error {
	if c.VIP == "" && c.VIPInterface != "" {
		return &SettingError{Setting: "iface", Value: Bare(c.VIPInterface), Problem: "is set but the cluster has no VIP (init {vip} sets one); drop {iface}", Others: []string{"vip", "iface"}}
	}
	return nil
}

// APIServerURL is where clients reach the cluster: the VIP when there is
// one, else this master.
func (c *Config) APIServerURL() string {
	if c.VIP != "" {
		return "https://" + Host(c.VIP, c.APIServerPort)
	}
	return "https://" + Host(c.AdvertiseAddress, c.APIServerPort)
}

// ParseServiceCIDR checks the service range the way kube-apiserver will
// (at most 20 host bits for IPv4, 16 for IPv6 would be silly but legal up
// to 112 prefix bits) so that a bad value fails before anything starts.
func ParseServiceCIDR(s string) (*net.IPNet, error) {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		return nil, &SettingError{Setting: "service-cidr", Value: s, Problem: "is not a CIDR", Err: err}
	}
	ones, bits := n.Mask.Size()
	if bits-ones > 20 {
		return nil, &SettingError{Setting: "service-cidr", Value: Bare(s), Problem: "is too large (more than 20 host bits); use a /12 or smaller"}
	}
	if bits-ones < 2 {
		return nil, &SettingError{Setting: "service-cidr", Value: Bare(s), Problem: "is too small; it must hold at least the kubernetes service"}
	}
	return n, nil
}

// FirstServiceIP is the address of the kubernetes Service: the range's
// network address plus one.
func (c *Config) FirstServiceIP() (net.IP, error) {
	n, err := ParseServiceCIDR(c.ServiceCIDR)
	if err != nil {
		return nil, err
	}
	ip := make(net.IP, len(n.IP))
	copy(ip, n.IP)
	for i := len(ip) - 1; i >= 0; i-- {
		ip[i]++
		if ip[i] != 0 {
			break
		}
	}
	return ip, nil
}

// Host formats an address for a URL (brackets around IPv6).
func Host(ip string, port int) string {
	return net.JoinHostPort(ip, fmt.Sprint(port))
}

// LocalAPIServerURL is how in-process components reach their own apiserver.
func (c *Config) LocalAPIServerURL() string {
	return "https://" + Host(c.loopback(), c.APIServerPort)
}

// LocalEtcdURL is how the local apiserver reaches the local etcd member.
func (c *Config) LocalEtcdURL() string {
	return "https://" + Host(c.loopback(), c.EtcdClientPort)
}

// LocalEtcdSocketURL is how the local apiserver reaches the local etcd
// member: its unix socket in the data directory.
func (c *Config) LocalEtcdSocketURL() string {
	return "unix://" + c.Layout().EtcdSocket()
}

// loopback picks the loopback address of the advertise address's family so
// that a single-stack IPv6 host works too.
func (c *Config) loopback() string {
	if ip := net.ParseIP(c.AdvertiseAddress); ip != nil && ip.To4() == nil {
		return "::1"
	}
	return "127.0.0.1"
}

// EtcdPeerURL is what other members dial.
func (c *Config) EtcdPeerURL() string {
	return "https://" + Host(c.AdvertiseAddress, c.EtcdPeerPort)
}

// EtcdAdvertiseClientURL is what clients elsewhere dial.
func (c *Config) EtcdAdvertiseClientURL() string {
	return "https://" + Host(c.AdvertiseAddress, c.EtcdClientPort)
}

// Layout names the paths in the data directory.
func (c *Config) Layout() layout.Layout { return layout.Layout{Root: c.DataDir} }
