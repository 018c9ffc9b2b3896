package config

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// testFlags mirrors the shapes of the CLI's flags: string, int, list,
// shorthand, and one flag that is not a file key.
func testFlags(c *Config) *pflag.FlagSet {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "data directory")
	fs.StringVar(&c.Name, "name", c.Name, "node name")
	fs.IntVar(&c.APIServerPort, "apiserver-port", c.APIServerPort, "apiserver port")
	fs.StringSliceVar(&c.APIServerSANs, "apiserver-san", c.APIServerSANs, "extra SANs")
	fs.IntVarP(&c.LogVerbosity, "v", "v", c.LogVerbosity, "log verbosity")
	fs.String("config", DefaultConfigFile, "config file")
	return fs
}

func TestApplyYAMLGoodFile(t *testing.T) {
	c := Default()
	fs := testFlags(&c)
	set, err := ApplyYAML(fs, nil, []byte(`# a comment
data-dir: /srv/k8s
name: m1
apiserver-port: 7443
apiserver-san:
  - lb.example.com
  - 192.0.2.7
v: 2
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/srv/k8s" || c.Name != "m1" || c.APIServerPort != 7443 || c.LogVerbosity != 2 {
		t.Errorf("settings not applied: %+v", c)
	}
	if strings.Join(c.APIServerSANs, ",") != "lb.example.com,192.0.2.7" {
		t.Errorf("apiserver-san = %v", c.APIServerSANs)
	}
	if strings.Join(set, ",") != "data-dir,name,apiserver-port,apiserver-san,v" {
		t.Errorf("set = %v", set)
	}
	// Keys from the file count as given, for the conflict check.
	for _, k := range set {
		if !fs.Changed(k) {
			t.Errorf("%s not marked as given", k)
		}
	}
	if fs.Changed("config") {
		t.Error("config marked as given")
	}
	// A valid key this command has no flag for is left alone.
	c3 := Default()
	fs3 := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs3.StringVar(&c3.Name, "name", "", "")
	if set, err := ApplyYAML(fs3, []string{"name", "pod-cidr"}, []byte("name: a\npod-cidr: 10.0.0.0/16\n")); err != nil || c3.Name != "a" || strings.Join(set, ",") != "name" {
		t.Errorf("key without a flag: set %v, err %v", set, err)
	}
	// Only the keys asked for.
	c2 := Default()
	if _, err := ApplyYAML(testFlags(&c2), []string{"name"}, []byte("name: a\nv: 1\n")); err == nil || !strings.Contains(err.Error(), `line 2: key "v": unknown key (known keys: name)`) {
		t.Errorf("restricted keys: %v", err)
	}
}

func TestApplyYAMLFlagsOverrideFile(t *testing.T) {
	c := Default()
	fs := testFlags(&c)
	if err := fs.Parse([]string{"--apiserver-port", "8443", "--apiserver-san", "cli.example.com"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ApplyYAML(fs, nil, []byte("apiserver-port: 7443\nname: m2\napiserver-san: [file.example.com]\n")); err != nil {
		t.Fatal(err)
	}
	if c.APIServerPort != 8443 {
		t.Errorf("apiserver-port = %d, want the flag's 8443", c.APIServerPort)
	}
	if strings.Join(c.APIServerSANs, ",") != "cli.example.com" {
		t.Errorf("apiserver-san = %v, want the flag's", c.APIServerSANs)
	}
	if c.Name != "m2" {
		t.Errorf("name = %q, want the file's m2", c.Name)
	}
}

func TestApplyYAMLErrorsNameKeyAndLine(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"unknown key", "name: m1\napiserver-prot: 6443\n", []string{`line 2: key "apiserver-prot": unknown key`}},
		{"not a file key", "config: /x.yaml\n", []string{`line 1: key "config": unknown key`}},
		{"int given text", "name: m1\n\napiserver-port: high\n", []string{`line 3: key "apiserver-port": wrong type: "high" is not a valid integer`}},
		{"string given a number", "name: 12\n", []string{`line 1: key "name": wrong type: 12 is not a string`}},
		{"list for a scalar", "apiserver-port: [1, 2]\n", []string{`line 1: key "apiserver-port": wrong type: a list`}},
		{"mapping for a list", "apiserver-san:\n  a: b\n", []string{`line 1: key "apiserver-san": wrong type: a mapping`}},
		{"no value", "name:\n", []string{`line 1: key "name": wrong type: no value`}},
		{"twice", "v: 1\nv: 2\n", []string{`line 2: key "v": set twice (first on line 1)`}},
		{"all at once", "bogus: 1\nv: x\n", []string{`line 1: key "bogus"`, `line 2: key "v": wrong type`}},
		{"not a mapping", "- a\n- b\n", []string{"line 1: expected a mapping"}},
		{"bad yaml", "name: [m1\n", []string{"not valid YAML"}},
		{"two documents", "name: a\n---\nname: b\n", []string{"line 2: only one YAML document"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			_, err := ApplyYAML(testFlags(&c), nil, []byte(tc.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestApplyFileMissing(t *testing.T) {
	c := Default()
	missing := filepath.Join(t.TempDir(), "none.yaml")
	if set, err := ApplyFile(testFlags(&c), nil, missing, false); err != nil || set != nil {
		t.Errorf("optional missing file: %v, %v", set, err)
	}
	if _, err := ApplyFile(testFlags(&c), nil, missing, true); err == nil {
		t.Error("required missing file: no error")
	}
}

// The file `config defaults` prints parses, sets nothing, and names every
// key with its default.
func TestWriteDefaultsRoundTrip(t *testing.T) {
	c := Default()
	c.APIServerSANs = []string{"a.example.com"}
	var b bytes.Buffer
	if err := WriteDefaults(&b, testFlags(&c)); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, w := range []string{"#data-dir: /var/lib/k8s-master\n", "#name: \"\"\n", "#apiserver-port: 6443\n", "#apiserver-san:\n#  - a.example.com\n", "#v: 0\n", "# node name\n"} {
		if !strings.Contains(out, w) {
			t.Errorf("defaults lack %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "config:") {
		t.Error("defaults list the config key")
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	c2 := Default()
	if set, err := ApplyFile(testFlags(&c2), nil, path, true); err != nil || len(set) != 0 {
		t.Fatalf("defaults file: set %v, err %v", set, err)
	}
	// Uncommenting every key gives a valid file that sets them all.
	uncommented := strings.NewReplacer("\n#data-dir", "\ndata-dir", "\n#name", "\nname", "\n#apiserver-port", "\napiserver-port",
		"\n#apiserver-san:\n#  -", "\napiserver-san:\n  -", "\n#v:", "\nv:").Replace(out)
	c3 := Default()
	set, err := ApplyYAML(testFlags(&c3), nil, []byte(uncommented))
	if err != nil || len(set) != 5 {
		t.Fatalf("uncommented defaults: set %v, err %v\n%s", set, err, uncommented)
	}
}

func FuzzApplyYAML(f *testing.F) {
	f.Add([]byte("name: m1\napiserver-port: 1\napiserver-san: [a, b]\n"))
	f.Add([]byte("v: [x]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := Default()
		_, _ = ApplyYAML(testFlags(&c), nil, data)
	})
}

// The etcd quota is a quantity: a file may give it as text or as a bare
// number of bytes (a YAML integer), and a default file shows it as is.
func TestEtcdQuotaInFile(t *testing.T) {
	for _, doc := range []string{"etcd-quota-bytes: 32Mi\n", "etcd-quota-bytes: 33554432\n"} {
		c := Default()
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		fs.Var(&c.EtcdQuota, "etcd-quota-bytes", "etcd quota")
		if _, err := ApplyYAML(fs, nil, []byte(doc)); err != nil {
			t.Fatalf("%q: %v", doc, err)
		}
		if n, err := c.EtcdQuota.Bytes(); err != nil || n != 32<<20 {
			t.Errorf("%q: %d, %v", doc, n, err)
		}
	}
	d := Default()
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.Var(&d.EtcdQuota, "etcd-quota-bytes", "etcd quota")
	var b bytes.Buffer
	if err := WriteDefaults(&b, fs); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "#etcd-quota-bytes: 4Gi\n") {
		t.Errorf("defaults file:\n%s", b.String())
	}
	if n, err := ByteSize("").Bytes(); err != nil || n != 4<<30 {
		t.Errorf("empty quota: %d, %v; want the 4Gi default", n, err)
	}
}
