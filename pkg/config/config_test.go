package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func valid() Config {
	c := Default()
	c.DataDir = "/var/lib/k8s-master"
	c.Name = "m1"
	c.AdvertiseAddress = "192.0.2.10"
	return c
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*Config)
		want   []string // substrings of the error; none means valid
	}{
		{"defaults", func(*Config) {}, nil},
		{"ipv6 advertise", func(c *Config) { c.AdvertiseAddress = "2001:db8::10" }, nil},
		{"ipv6 service range", func(c *Config) { c.ServiceCIDR = "fd00:10:96::/112" }, nil},
		{"pod range", func(c *Config) { c.PodCIDR = "10.244.0.0/16" }, nil},
		{"extra SANs", func(c *Config) { c.APIServerSANs = []string{"api.example.test", "*.example.test", "198.51.100.1"} }, nil},
		{"relative data dir", func(c *Config) { c.DataDir = "data" }, []string{"data-dir", "absolute"}},
		{"bad name", func(c *Config) { c.Name = "Master_1" }, []string{"name", "Master_1"}},
		{"not an IP", func(c *Config) { c.AdvertiseAddress = "example.com" }, []string{"advertise-address", "not an IP"}},
		{"unspecified advertise", func(c *Config) { c.AdvertiseAddress = "0.0.0.0" }, []string{"advertise-address", "concrete"}},
		{"bad bind", func(c *Config) { c.BindAddress = "any" }, []string{"bind-address"}},
		{"port out of range", func(c *Config) { c.APIServerPort = 70000 }, []string{"apiserver-port", "out of range"}},
		{"port zero", func(c *Config) { c.SchedulerPort = 0 }, []string{"scheduler-port"}},
		{"duplicate ports", func(c *Config) { c.EtcdPeerPort = c.EtcdClientPort }, []string{"etcd-client-port", "etcd-peer-port", "2379"}},
		{"service range not a CIDR", func(c *Config) { c.ServiceCIDR = "10.96.0.0" }, []string{"service-cidr", "not a CIDR"}},
		{"service range too big", func(c *Config) { c.ServiceCIDR = "10.0.0.0/8" }, []string{"service-cidr", "too large"}},
		{"service range too small", func(c *Config) { c.ServiceCIDR = "10.96.0.0/31" }, []string{"service-cidr", "too small"}},
		{"overlapping pod range", func(c *Config) { c.PodCIDR = "10.96.0.0/16" }, []string{"pod-cidr", "overlaps"}},
		{"bad SAN", func(c *Config) { c.APIServerSANs = []string{"not a name"} }, []string{"apiserver-san", "not a name"}},
		{"bad domain", func(c *Config) { c.ClusterDomain = "-bad" }, []string{"cluster-domain"}},
		{"verbosity", func(c *Config) { c.LogVerbosity = 11 }, []string{"v 11"}},
		{"vip", func(c *Config) { c.VIP = "192.0.2.50" }, nil},
		{"ipv6 vip", func(c *Config) { c.VIP = "2001:db8::50" }, nil},
		{"vip not an IP", func(c *Config) { c.VIP = "vip.example" }, []string{"vip", "not an IP"}},
		{"vip is the node", func(c *Config) { c.VIP = "192.0.2.10" }, []string{"vip 192.0.2.10", "own address"}},
		{"vip loopback", func(c *Config) { c.VIP = "127.0.0.5" }, []string{"vip", "routable unicast"}},
		{"vip in service range", func(c *Config) { c.VIP = "10.96.0.50" }, []string{"vip 10.96.0.50", "service-cidr"}},
		{"vip ttl short", func(c *Config) { c.VIP = "192.0.2.50"; c.VIPLeaseTTL = 1 }, []string{"vip-lease-ttl 1"}},
		{"vip ttl ignored without vip", func(c *Config) { c.VIPLeaseTTL = 0 }, nil},
		{"several at once", func(c *Config) { c.APIServerPort = -1; c.Name = "" }, []string{"apiserver-port", "name"}},
		{"snapshots off", func(c *Config) { c.SnapshotInterval = 0 }, nil},
		{"mirror with port and path", func(c *Config) { c.ImageRepository = "mirror.example:5000/k8s" }, nil},
		{"repository with scheme", func(c *Config) { c.ImageRepository = "https://mirror.example" }, []string{"image-repository", "no scheme"}},
		{"repository empty", func(c *Config) { c.ImageRepository = "" }, []string{"image-repository"}},
		{"add-ons disabled", func(c *Config) { c.DisabledAddons = []string{"kube-proxy", "coredns"} }, nil},
		{"unknown add-on", func(c *Config) { c.DisabledAddons = []string{"kube-dns"} }, []string{"disable-addon", "kube-dns", "kube-proxy, coredns, node-agent"}},
		{"cluster dns", func(c *Config) { c.ClusterDNS = "10.96.0.53" }, nil},
		{"cluster dns outside", func(c *Config) { c.ClusterDNS = "10.0.0.10" }, []string{"cluster-dns 10.0.0.10", "outside", "service-cidr"}},
		{"cluster dns not an IP", func(c *Config) { c.ClusterDNS = "dns" }, []string{"cluster-dns", "not an IP"}},
		{"cluster dns is kubernetes", func(c *Config) { c.ClusterDNS = "10.96.0.1" }, []string{"cluster-dns 10.96.0.1", "kubernetes Service"}},
		{"snapshots too often", func(c *Config) { c.SnapshotInterval = 5 * time.Second }, []string{"snapshot-interval 5s", "shorter than 10s"}},
		{"snapshots none kept", func(c *Config) { c.SnapshotRetention = 0 }, []string{"snapshot-retention 0"}},
		{"snapshots relative dir", func(c *Config) { c.SnapshotDir = "snaps" }, []string{"snapshot-dir", "absolute"}},
		{"snapshots inside the data dir", func(c *Config) { c.DataDir = "/var/lib/k8s-master"; c.SnapshotDir = "/var/lib/k8s-master/snaps" }, []string{"snapshot-dir", "inside the data directory"}},
		{"etcd quota for tests", func(c *Config) { c.EtcdQuota = "32Mi" }, nil},
		{"etcd quota in bytes", func(c *Config) { c.EtcdQuota = "8589934592" }, nil},
		{"etcd quota too small", func(c *Config) { c.EtcdQuota = "1Mi" }, []string{"etcd-quota-bytes 1Mi is out of range 16Mi-8Gi"}},
		{"etcd quota too big", func(c *Config) { c.EtcdQuota = "9G" }, []string{"etcd-quota-bytes 9G", "16Mi-8Gi"}},
		{"etcd quota not a size", func(c *Config) { c.EtcdQuota = "lots" }, []string{`etcd-quota-bytes "lots" is not a size`, "32Mi"}},
		{"snapshots beside the data dir", func(c *Config) { c.DataDir = "/var/lib/k8s-master"; c.SnapshotDir = "/var/lib/k8s-master-snapshots" }, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.mutate(&c)
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want one mentioning %v", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestIfaceNeedsVIP(t *testing.T) {
	c := valid()
	c.VIPInterface = "eth0"
	if err := c.Validate(); err != nil {
		t.Fatalf("--iface alone must pass Validate (a joiner learns the VIP later): %v", err)
	}
	if err := c.CheckIfaceHasVIP(); err == nil || !strings.Contains(err.Error(), `iface eth0 is set`) {
		t.Errorf("CheckIfaceHasVIP without a VIP: %v", err)
	}
	c.VIP = "192.0.2.50"
	if err := c.CheckIfaceHasVIP(); err != nil {
		t.Error(err)
	}
	if got := c.APIServerURL(); got != "https://192.0.2.50:6443" {
		t.Errorf("APIServerURL with a VIP = %s", got)
	}
}

func TestFirstServiceIP(t *testing.T) {
	for cidr, want := range map[string]string{
		"10.96.0.0/12":     "10.96.0.1",
		"10.96.0.5/24":     "10.96.0.1",
		"172.16.255.0/24":  "172.16.255.1",
		"fd00:10:96::/112": "fd00:10:96::1",
	} {
		c := valid()
		c.ServiceCIDR = cidr
		ip, err := c.FirstServiceIP()
		if err != nil || ip.String() != want {
			t.Errorf("FirstServiceIP(%s) = %v, %v; want %s", cidr, ip, err, want)
		}
	}
}

func TestCompleteMakesDataDirAbsolute(t *testing.T) {
	c := Default()
	c.DataDir = "rel/dir"
	c.Name, c.AdvertiseAddress = "m1", "192.0.2.1"
	if err := c.Complete(); err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	if c.DataDir != filepath.Join(wd, "rel/dir") {
		t.Errorf("DataDir = %s", c.DataDir)
	}
	if c.LogFile != filepath.Join(wd, "rel/dir/k8s-master.log") {
		t.Errorf("LogFile = %s", c.LogFile)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("completed config invalid: %v", err)
	}
}

func TestCompleteDetectsHostDefaults(t *testing.T) {
	c := Default()
	if err := c.Complete(); err != nil {
		t.Fatal(err)
	}
	if c.Name == "" || c.AdvertiseAddress == "" {
		t.Fatalf("Complete left name %q, address %q empty", c.Name, c.AdvertiseAddress)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("defaults of this host do not validate: %v", err)
	}
}

func TestDefaultRouteInterface(t *testing.T) {
	dir := t.TempDir()
	route := filepath.Join(dir, "route")
	os.WriteFile(route, []byte("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"+
		"eth1\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"+
		"eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"), 0o644)
	got, err := defaultRouteInterface(route)
	if err != nil || got != "eth0" {
		t.Fatalf("defaultRouteInterface = %q, %v; want eth0", got, err)
	}
	os.WriteFile(route, []byte("Iface\tDestination\n"), 0o644)
	if _, err := defaultRouteInterface(route); err == nil {
		t.Fatal("found a default route in a table without one")
	}
}

func TestStateRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	if _, err := ReadState(path); !errors.Is(err, ErrNoState) {
		t.Fatalf("missing state: err = %v, want ErrNoState", err)
	}
	in := &State{ClusterID: "abc", CAPin: "sha256:00", EtcdClusterID: "1234", Config: valid()}
	if err := WriteState(path, in); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("state mode %o, want 600", st.Mode().Perm())
	}
	out, err := ReadState(path)
	if err != nil {
		t.Fatal(err)
	}
	if out.ClusterID != "abc" || out.Config.Name != "m1" || out.Config.AdvertiseAddress != "192.0.2.10" || out.Config.APIServerPort != 6443 {
		t.Fatalf("round trip lost data: %+v", out)
	}

	for name, content := range map[string]string{
		"corrupt":     "{not json",
		"new version": `{"version": 99, "clusterID": "x", "caPin": "y"}`,
		"no identity": `{"version": 1}`,
	} {
		os.WriteFile(path, []byte(content), 0o600)
		if _, err := ReadState(path); err == nil || errors.Is(err, ErrNoState) {
			t.Errorf("%s state: err = %v, want a clear error", name, err)
		}
	}
}

func TestConflicts(t *testing.T) {
	recorded := valid()
	given := valid()
	given.ServiceCIDR = "10.100.0.0/16"
	given.APIServerPort = 7443
	if err := Conflicts(&recorded, &given, map[string]bool{}); err != nil {
		t.Errorf("flags not given explicitly were reported: %v", err)
	}
	err := Conflicts(&recorded, &given, map[string]bool{"service-cidr": true, "apiserver-port": true, "name": true})
	var keys []string
	for _, se := range SettingErrors(err) {
		keys = append(keys, se.Setting)
	}
	want := `apiserver-port is "7443" here but "6443" in the cluster; service-cidr is "10.100.0.0/16" here but "10.96.0.0/12" in the cluster`
	if err == nil || err.Error() != want || !slices.Equal(keys, []string{"apiserver-port", "service-cidr"}) {
		t.Errorf("Conflicts = %v (settings %q), want %s", err, keys, want)
	}
}

// vip set checks only the VIP, on a recorded configuration whose host
// settings (snapshot directory and such) are not part of it.
func TestValidateVIPAlone(t *testing.T) {
	c := Config{AdvertiseAddress: "192.0.2.10", ServiceCIDR: "10.96.0.0/12", VIPLeaseTTL: 3}
	for vip, want := range map[string]string{
		"192.0.2.50": "",
		"10.96.0.9":  "service-cidr",
		"192.0.2.10": "own address",
		"224.0.0.1":  "unicast",
		"nonsense":   "not an IP",
	} {
		c.VIP = vip
		err := c.ValidateVIP()
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("ValidateVIP(%s) = %v, want %q", vip, err, want)
		}
	}
}
