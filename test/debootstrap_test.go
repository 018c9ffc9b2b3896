package test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const (
	debSuite   = "bookworm"
	debVariant = "minbase"
)

// aptMirror is the Debian mirror this machine's apt uses (sources.list or
// deb822 .sources files), for the suite's main archive.
func aptMirror() (string, error) {
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	lists, _ := filepath.Glob("/etc/apt/sources.list.d/*.list")
	files = append(append([]string{"/etc/apt/sources.list"}, lists...), files...)
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		var uris, suites []string
		found := ""
		check := func() {
			for _, s := range suites {
				if s == debSuite && len(uris) > 0 && found == "" {
					found = uris[0]
				}
			}
			uris, suites = nil, nil
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			switch {
			case line == "":
				check() // end of a deb822 stanza
			case strings.HasPrefix(line, "#"):
			case strings.HasPrefix(line, "URIs:"):
				uris = strings.Fields(strings.TrimPrefix(line, "URIs:"))
			case strings.HasPrefix(line, "Suites:"):
				suites = strings.Fields(strings.TrimPrefix(line, "Suites:"))
			case strings.HasPrefix(line, "deb "):
				// deb [options] URI suite components...
				fs := strings.Fields(strings.TrimPrefix(line, "deb "))
				if len(fs) > 0 && strings.HasPrefix(fs[0], "[") {
					for len(fs) > 0 && !strings.HasSuffix(fs[0], "]") {
						fs = fs[1:]
					}
					fs = fs[1:]
				}
				if len(fs) >= 2 {
					uris, suites = fs[:1], fs[1:2]
					check()
				}
			}
		}
		check()
		f.Close()
		if found != "" {
			return found, nil
		}
	}
	return "", fmt.Errorf("no %s mirror in /etc/apt/sources.list or /etc/apt/sources.list.d", debSuite)
}

// debootstrapRoot returns a fresh copy of a minimal Debian root. The root
// itself is made once and kept in .cache/ (keyed by suite and variant);
// tests only ever change their copy.
func debootstrapRoot(t *testing.T) string {
	t.Helper()
	cache, err := filepath.Abs(filepath.Join("..", ".cache", "debootstrap", debSuite+"-"+debVariant+"-amd64"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(cache, "usr/bin/dpkg")); err != nil {
		mirror, err := aptMirror()
		if err != nil {
			t.Skip(err)
		}
		tmp := cache + ".partial"
		os.RemoveAll(tmp)
		if err := os.MkdirAll(filepath.Dir(cache), 0o755); err != nil {
			t.Fatal(err)
		}
		t.Logf("debootstrap --variant=%s %s from %s (cached in %s)", debVariant, debSuite, mirror, cache)
		cmd := exec.Command("debootstrap", "--variant="+debVariant, "--arch=amd64", debSuite, tmp, mirror)
		if out, err := cmd.CombinedOutput(); err != nil {
			os.RemoveAll(tmp)
			t.Fatalf("debootstrap: %v\n%s", err, tail(string(out), 30))
		}
		os.RemoveAll(cache)
		if err := os.Rename(tmp, cache); err != nil {
			t.Fatal(err)
		}
	}
	root := filepath.Join(t.TempDir(), "root")
	run(t, "cp", "-a", cache, root)
	return root
}

// systemdRoot is a copy of the minimal Debian root in which maintainer
// scripts believe systemd runs (/run/systemd/system and a systemctl that
// records its arguments).
type systemdRoot struct {
	t    *testing.T
	path string
}

func newSystemdRoot(t *testing.T) *systemdRoot {
	t.Helper()
	need(t, "debootstrap", "dpkg", "chroot")
	needRoot(t)
	r := &systemdRoot{t: t, path: debootstrapRoot(t)}
	if err := os.MkdirAll(filepath.Join(r.path, "run/systemd/system"), 0o755); err != nil {
		t.Fatal(err)
	}
	fake := "#!/bin/sh\necho \"$*\" >> /tmp/systemctl.log\n"
	if err := os.WriteFile(filepath.Join(r.path, "usr/local/sbin/systemctl"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	return r
}

// chroot runs a command inside the root and fails the test if it fails.
func (r *systemdRoot) chroot(args ...string) string {
	r.t.Helper()
	cmd := exec.Command("chroot", append([]string{r.path}, args...)...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C", "DEBIAN_FRONTEND=noninteractive"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("chroot %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// calls returns and forgets the systemctl calls so far.
func (r *systemdRoot) calls() string {
	log := filepath.Join(r.path, "tmp/systemctl.log")
	b, _ := os.ReadFile(log)
	os.Remove(log)
	return string(b)
}

// TestDebInstall installs the .deb with dpkg into a minimal Debian root and
// runs the binary there. A fake systemctl and /run/systemd/system make the
// maintainer scripts believe systemd runs, so what they do is recorded:
// install, upgrade, removal and purge, with config and data kept as they
// should be.
func TestDebInstall(t *testing.T) {
	deb := distFile(t, "k8s-master_*_amd64.deb")
	r := newSystemdRoot(t)
	root, chroot, calls := r.path, r.chroot, r.calls
	run(t, "cp", deb, filepath.Join(root, "tmp/k8s-master.deb"))
	exists := func(p string) bool { _, err := os.Stat(filepath.Join(root, p)); return err == nil }

	chroot("dpkg", "-i", "/tmp/k8s-master.deb")
	if c := calls(); c != "daemon-reload\n" {
		t.Errorf("install ran systemctl %q, want daemon-reload only", c)
	}
	if out := chroot("k8s-master", "version"); !strings.Contains(out, "kubernetes: v1.37") || !strings.Contains(out, "etcd:       v3.7") {
		t.Errorf("k8s-master version:\n%s", out)
	}
	defaults := chroot("k8s-master", "config", "defaults")
	shipped, _ := os.ReadFile(filepath.Join(root, "etc/k8s-master/config.yaml"))
	if defaults != string(shipped) || !strings.Contains(defaults, "#apiserver-port: 6443") {
		t.Errorf("config defaults differ from the shipped config:\n%s", defaults)
	}
	chroot("k8s-master", "config", "check")

	// The operator's config and the cluster's data survive an upgrade.
	conf := filepath.Join(root, "etc/k8s-master/config.yaml")
	if err := os.WriteFile(conf, append(shipped, "v: 2\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(root, "var/lib/k8s-master")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "state.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	chroot("dpkg", "-i", "/tmp/k8s-master.deb")
	// (the old package's postrm reloads too)
	if c := calls(); !strings.HasSuffix(c, "daemon-reload\ntry-restart k8s-master.service\n") || strings.Contains(c, "disable") || strings.Contains(c, "stop") {
		t.Errorf("upgrade ran systemctl %q, want daemon-reload and try-restart, no stop", c)
	}
	if b, _ := os.ReadFile(conf); !strings.HasSuffix(string(b), "v: 2\n") {
		t.Error("upgrade replaced the operator's config")
	}

	// Removal stops and disables the service, keeps config and data.
	chroot("dpkg", "-r", "k8s-master")
	if c := calls(); c != "disable --now k8s-master.service\ndaemon-reload\n" {
		t.Errorf("removal ran systemctl %q, want disable --now then daemon-reload", c)
	}
	if exists("usr/bin/k8s-master") || exists("usr/lib/systemd/system/k8s-master.service") {
		t.Error("binary or unit left after removal")
	}
	if !exists("etc/k8s-master/config.yaml") || !exists("var/lib/k8s-master/state.json") {
		t.Error("removal deleted config or cluster data")
	}
	// Purge deletes the config, never the data.
	chroot("dpkg", "--purge", "k8s-master")
	if exists("etc/k8s-master/config.yaml") {
		t.Error("purge left the config")
	}
	if !exists("var/lib/k8s-master/state.json") {
		t.Error("purge deleted cluster data")
	}
}

// TestRPMScriptlets runs the .rpm's scriptlets as rpm would (with the count
// of installed versions as $1) in the Debian root, where a shell exists.
func TestRPMScriptlets(t *testing.T) {
	need(t, "rpm")
	pkg := distFile(t, "k8s-master-*.x86_64.rpm")
	r := newSystemdRoot(t)
	cases := []struct{ tag, arg, want string }{
		{"POSTIN", "1", "daemon-reload\n"},                                 // install
		{"POSTIN", "2", "daemon-reload\ntry-restart k8s-master.service\n"}, // upgrade
		{"PREUN", "1", ""}, // upgrade: keep running
		{"PREUN", "0", "disable --now k8s-master.service\n"}, // removal
		{"POSTUN", "1", "daemon-reload\n"},
		{"POSTUN", "0", "daemon-reload\n"},
	}
	for _, tc := range cases {
		script := run(t, "rpm", "-qp", "--qf", "%{"+tc.tag+"}", pkg)
		path := filepath.Join(r.path, "tmp", tc.tag+".sh")
		if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		r.chroot("/bin/sh", "/tmp/"+tc.tag+".sh", tc.arg)
		if got := r.calls(); got != tc.want {
			t.Errorf("%s %s ran systemctl %q, want %q", tc.tag, tc.arg, got, tc.want)
		}
	}
}

// TestDebUpgrade installs the previous release's .deb into a minimal
// Debian root, then this build's over it, as `apt upgrade` does: the unit
// is restarted (not stopped, not disabled), the operator's config is kept
// and the data directory is not touched.
func TestDebUpgrade(t *testing.T) {
	newDeb := distFile(t, "k8s-master_*_amd64.deb")
	old, err := filepath.Glob(filepath.Join(previousReleaseDir(t), "k8s-master_*_amd64.deb"))
	if err != nil || len(old) != 1 {
		t.Fatalf("the previous release's .deb: %v %v", old, err)
	}
	r := newSystemdRoot(t)
	run(t, "cp", old[0], filepath.Join(r.path, "tmp/old.deb"))
	run(t, "cp", newDeb, filepath.Join(r.path, "tmp/new.deb"))
	r.chroot("dpkg", "-i", "/tmp/old.deb")
	r.calls()
	oldVersion := r.chroot("k8s-master", "version")
	if !strings.Contains(oldVersion, "kubernetes: v1.36.") {
		t.Fatalf("previous release's version:\n%s", oldVersion)
	}

	conf := filepath.Join(r.path, "etc/k8s-master/config.yaml")
	shipped, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	edited := append(shipped, "vip: 10.250.0.50\niface: eth0\n"...)
	if err := os.WriteFile(conf, edited, 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(r.path, "var/lib/k8s-master")
	for name, content := range map[string]string{"state.json": `{"clusterID":"c1"}`, "etcd/member/snap/db": "etcd data", "pki/ca.key": "key"} {
		path := filepath.Join(data, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	before := dataDigest(t, data)

	// As unattended upgrades do (apt-get -o Dpkg::Options::=--force-confold):
	// the operator's edited config.yaml stays, and when the shipped one
	// changed (new keys), it lands beside it as config.yaml.dpkg-dist.
	r.chroot("dpkg", "--force-confdef", "--force-confold", "-i", "/tmp/new.deb")
	if c := r.calls(); !strings.HasSuffix(c, "daemon-reload\ntry-restart k8s-master.service\n") || strings.Contains(c, "disable") || strings.Contains(c, "stop") {
		t.Errorf("upgrade ran systemctl %q, want daemon-reload and try-restart, no stop", c)
	}
	want := strings.Fields(run(t, masterBin, "version"))
	if got := strings.Fields(r.chroot("k8s-master", "version")); got[1] != want[1] || got[3] != want[3] {
		t.Errorf("after the upgrade k8s-master version says %v, want %v", got, want)
	}
	pkgVersion := strings.TrimSpace(r.chroot("dpkg-query", "-W", "-f", "${Version}", "k8s-master"))
	if !strings.Contains(filepath.Base(newDeb), "_"+pkgVersion+"_") {
		t.Errorf("installed package version %s, want the one of %s", pkgVersion, filepath.Base(newDeb))
	}
	if b, _ := os.ReadFile(conf); string(b) != string(edited) {
		t.Errorf("the upgrade changed the operator's config:\n%s", b)
	}
	newDefaults := r.chroot("k8s-master", "config", "defaults")
	if dist, err := os.ReadFile(conf + ".dpkg-dist"); newDefaults != string(shipped) && (err != nil || string(dist) != newDefaults) {
		t.Errorf("the new release's shipped config is not beside the kept one as config.yaml.dpkg-dist (%v)", err)
	}
	if after := dataDigest(t, data); after != before {
		t.Error("the upgrade changed the data directory")
	}
}
