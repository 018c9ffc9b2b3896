package config

import (
	"fmt"
	"strconv"
	"strings"
)

// RecordedFlags are the settings init records in the data directory, by
// config-file key (a flag's name). Later runs take them from there, not
// from flags.
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

// Conflicts says, for each setting the user gave explicitly, where it
// contradicts the recorded configuration, one *SettingError each in one
// sentence ("; " between them); nil if none does. Silently ignoring such a
// setting would run a different master than the one asked for.
func Conflicts(recorded, given *Config, explicit map[string]bool) error {
	var diffs settingList
	for _, f := range RecordedFlags {
		if !explicit[f.Flag] {
			continue
		}
		if want, got := f.Get(recorded), f.Get(given); want != got {
			diffs = append(diffs, &SettingError{Setting: f.Flag, Problem: fmt.Sprintf("is %q here but %q in the cluster", got, want)})
		}
	}
	if len(diffs) == 0 {
		return nil
	}
	return diffs
}
