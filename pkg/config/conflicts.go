package config

import (
	"fmt"
	"strconv"
	"strings"
)

// RecordedFlags are the settings init records in the data directory, by
// flag name. Later runs take them from there, not from flags.
var RecordedFlags = []struct {
	Flag string
	Get  func(*Config) string
}{
	{"name", func(c *Config) string { return c.Name }},
	{"advertise-address", func(c *Config) string { return c.AdvertiseAddress }},
	{"bind-address", func(c *Config) string { return c.BindAddress }},
	{"apiserver-port", func(c *Config) string { return strconv.Itoa(c.APIServerPort) }},
	{"etcd-client-port", func(c *Config) string { return strconv.Itoa(c.EtcdClientPort) }},
	{"etcd-peer-port", func(c *Config) string { return strconv.Itoa(c.EtcdPeerPort) }},
	{"etcd-metrics-port", func(c *Config) string { return strconv.Itoa(c.EtcdMetricsPort) }},
	{"controller-manager-port", func(c *Config) string { return strconv.Itoa(c.ControllerManagerPort) }},
	{"scheduler-port", func(c *Config) string { return strconv.Itoa(c.SchedulerPort) }},
	{"join-port", func(c *Config) string { return strconv.Itoa(c.JoinPort) }},
	{"service-cidr", func(c *Config) string { return c.ServiceCIDR }},
	{"pod-cidr", func(c *Config) string { return c.PodCIDR }},
	{"cluster-domain", func(c *Config) string { return c.ClusterDomain }},
	{"vip", func(c *Config) string { return c.VIP }},
	{"iface", func(c *Config) string { return c.VIPInterface }},
	{"vip-lease-ttl", func(c *Config) string { return strconv.Itoa(c.VIPLeaseTTL) }},
	{"apiserver-san", func(c *Config) string { return strings.Join(c.APIServerSANs, ",") }},
}

// Conflicts lists, for each flag the user set explicitly, where it
// contradicts the recorded configuration. Silently ignoring such a flag
// would run a different master than the one asked for.
func Conflicts(recorded, given *Config, explicit map[string]bool) []string {
	var diffs []string
	for _, f := range RecordedFlags {
		if !explicit[f.Flag] {
			continue
		}
		if want, got := f.Get(recorded), f.Get(given); want != got {
			diffs = append(diffs, fmt.Sprintf("--%s is %q here but %q in the cluster", f.Flag, got, want))
		}
	}
	return diffs
}
