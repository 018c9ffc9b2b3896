package config

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

func flag(key string) string {
	if len(key) == 1 {
		return "-" + key
	}
	return "--" + key
}

// Worded as flags, validation says what it said before settings had their
// own error type: the command line's messages are unchanged.
func TestSettingErrorsWordedAsFlags(t *testing.T) {
	cases := []struct {
		mutate func(*Config)
		keys   []string
		want   string
	}{
		{func(c *Config) { c.DataDir = "" }, []string{"data-dir"}, "--data-dir must not be empty"},
		{func(c *Config) { c.DataDir = "data" }, []string{"data-dir"}, `--data-dir "data" must be an absolute path`},
		{func(c *Config) { c.AdvertiseAddress = "0.0.0.0" }, []string{"advertise-address"}, "--advertise-address must be a concrete address, not 0.0.0.0"},
		{func(c *Config) { c.APIServerPort = 70000 }, []string{"apiserver-port"}, "--apiserver-port 70000 is out of range 1-65535"},
		{func(c *Config) { c.EtcdPeerPort = c.EtcdClientPort }, []string{"etcd-client-port"}, "--etcd-client-port and --etcd-peer-port are both 2379; give each its own port"},
		{func(c *Config) { c.ServiceCIDR = "10.0.0.0/8" }, []string{"service-cidr"}, "--service-cidr 10.0.0.0/8 is too large (more than 20 host bits); use a /12 or smaller"},
		{func(c *Config) { c.PodCIDR = "10.96.0.0/16" }, []string{"pod-cidr"}, "--pod-cidr 10.96.0.0/16 overlaps --service-cidr 10.96.0.0/12"},
		{func(c *Config) { c.VIP = "192.0.2.10" }, []string{"vip"}, "--vip 192.0.2.10 is this master's own address (--advertise-address); pick a free address of the same subnet"},
		{func(c *Config) { c.VIP = "10.96.0.50" }, []string{"vip"}, "--vip 10.96.0.50 lies in --service-cidr 10.96.0.0/12; pick an address of the masters' LAN"},
		{func(c *Config) { c.VIP = "192.0.2.50"; c.VIPLeaseTTL = 1 }, []string{"vip-lease-ttl"}, "--vip-lease-ttl 1 is out of range 2-60 seconds (etcd cannot keep a shorter lease reliably)"},
		{func(c *Config) { c.LogVerbosity = 11 }, []string{"v"}, "-v 11 is out of range 0-10"},
		{func(c *Config) { c.APIServerPort = -1; c.Name = "" }, []string{"name", "apiserver-port"}, `--name "" is not a valid node name: `},
	}
	for _, tc := range cases {
		c := valid()
		tc.mutate(&c)
		err := c.Validate()
		ses := SettingErrors(err)
		var keys, msgs []string
		for _, se := range ses {
			keys = append(keys, se.Setting)
			msgs = append(msgs, se.Format(flag))
		}
		if !slices.Equal(keys, tc.keys) {
			t.Errorf("%v: settings %q, want %q", err, keys, tc.keys)
		}
		if !strings.HasPrefix(strings.Join(msgs, "\n"), tc.want) {
			t.Errorf("worded as flags:\n%s\nwant:\n%s", strings.Join(msgs, "\n"), tc.want)
		}
		if strings.Contains(err.Error(), "--") {
			t.Errorf("the library's own wording names a flag: %v", err)
		}
	}
}

func TestSettingErrorWrappedAndJoined(t *testing.T) {
	inner := &SettingError{Setting: "service-cidr", Value: "x", Problem: "is not a CIDR", Err: errors.New("bad")}
	err := fmt.Errorf("the cluster's settings: %w", errors.Join(inner, &SettingError{Setting: "iface", Value: "eth0", Problem: "is set but the cluster has no VIP (init {vip} sets one); drop {iface}", Others: []string{"vip", "iface"}}))
	if got := err.Error(); got != "the cluster's settings: service-cidr \"x\" is not a CIDR: bad\niface \"eth0\" is set but the cluster has no VIP (init vip sets one); drop iface" {
		t.Errorf("got %q", got)
	}
	ses := SettingErrors(err)
	if len(ses) != 2 || ses[0] != inner {
		t.Fatalf("found %v", ses)
	}
	if got := ses[1].Format(flag); got != `--iface "eth0" is set but the cluster has no VIP (init --vip sets one); drop --iface` {
		t.Errorf("got %q", got)
	}
	var se *SettingError
	if !errors.As(err, &se) || se.Setting != "service-cidr" {
		t.Errorf("errors.As: %v", se)
	}
}

// A hint is the whole message, each setting it names worded alike; the
// first is the setting the error is about.
func TestHint(t *testing.T) {
	h := Hint("check {advertise-address}/{bind-address}, not {advertise-address} alone")
	if h.Setting != "advertise-address" || !slices.Equal(h.Others, []string{"bind-address"}) {
		t.Errorf("Hint: setting %q, others %q", h.Setting, h.Others)
	}
	if got, want := h.Error(), "check advertise-address/bind-address, not advertise-address alone"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got, want := h.Format(flag), "check --advertise-address/--bind-address, not --advertise-address alone"; got != want {
		t.Errorf("Format = %q, want %q", got, want)
	}
	err := fmt.Errorf("cannot read x: %w; %w", os.ErrPermission, Hint("pass {log-file}"))
	if !errors.Is(err, os.ErrPermission) || len(SettingErrors(err)) != 1 || SettingErrors(err)[0].Setting != "log-file" {
		t.Errorf("%v: cause or setting lost", err)
	}
}
