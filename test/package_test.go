package test

import (
	"bufio"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The package tests check what `make package` put in dist/.

func distFile(t *testing.T, pattern string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join("..", "dist", pattern))
	switch len(m) {
	case 0:
		t.Skipf("no dist/%s: run make package (make test does)", pattern)
	case 1:
	default:
		t.Fatalf("several dist/%s: %v; run make package to rebuild", pattern, m)
	}
	abs, err := filepath.Abs(m[0])
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (.ci/run installs it)", tool)
		}
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// packaged are the files both packages install, with their modes.
var packaged = map[string]string{
	"/usr/bin/k8s-master":                                  "-rwxr-xr-x",
	"/usr/lib/systemd/system/k8s-master.service":           "-rw-r--r--",
	"/etc/k8s-master/config.yaml":                          "-rw-r--r--",
	"/usr/share/bash-completion/completions/k8s-master":    "-rw-r--r--",
	"/usr/share/fish/vendor_completions.d/k8s-master.fish": "-rw-r--r--",
}

// withPackaged adds the files both packages have to a format's own.
func withPackaged(m map[string]string) map[string]string {
	for k, v := range packaged {
		m[k] = v
	}
	return m
}

func checkStatic(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s is dynamically linked", path)
		}
	}
}

func TestDebContents(t *testing.T) {
	need(t, "dpkg-deb")
	deb := distFile(t, "k8s-master_*_amd64.deb")
	want := withPackaged(map[string]string{
		"/usr/share/zsh/vendor-completions/_k8s-master": "-rw-r--r--",
		"/usr/share/doc/k8s-master/copyright":           "-rw-r--r--",
	})
	got := map[string]string{}
	for _, line := range strings.Split(run(t, "dpkg-deb", "-c", deb), "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 {
			got[strings.TrimPrefix(f[5], ".")] = f[0] + " " + f[1]
		}
	}
	for path, mode := range want {
		if got[path] != mode+" root/root" {
			t.Errorf("%s: %q, want %q root/root", path, got[path], mode)
		}
	}
	for path := range got {
		if strings.HasPrefix(path, "/var/") {
			t.Errorf("the package owns %s: removing it could remove cluster data", path)
		}
	}
	ctrl := t.TempDir()
	run(t, "dpkg-deb", "-e", deb, ctrl)
	if b, _ := os.ReadFile(filepath.Join(ctrl, "conffiles")); strings.TrimSpace(string(b)) != "/etc/k8s-master/config.yaml" {
		t.Errorf("conffiles = %q", b)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		fi, err := os.Stat(filepath.Join(ctrl, s))
		if err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: %v %v", s, fi, err)
		}
	}
	fields := run(t, "dpkg-deb", "-f", deb, "Package", "Architecture")
	if !strings.Contains(fields, "Package: k8s-master") || !strings.Contains(fields, "Architecture: amd64") {
		t.Errorf("control fields:\n%s", fields)
	}
	root := t.TempDir()
	run(t, "dpkg-deb", "-x", deb, root)
	checkStatic(t, filepath.Join(root, "usr/bin/k8s-master"))
	license, _ := os.ReadFile(filepath.Join(root, "usr/share/doc/k8s-master/copyright"))
	if !strings.Contains(string(license), "Apache License") {
		t.Error("no Apache licence in the package")
	}
}

// The unit passes systemd-analyze verify, in a root made of the package's
// files and the host's systemd units (which the unit refers to).
func TestUnitVerify(t *testing.T) {
	need(t, "systemd-analyze", "dpkg-deb")
	deb := distFile(t, "k8s-master_*_amd64.deb")
	root := t.TempDir()
	run(t, "dpkg-deb", "-x", deb, root)
	units := filepath.Join(root, "usr/lib/systemd/system")
	for _, host := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		if _, err := os.Stat(filepath.Join(host, "multi-user.target")); err == nil {
			run(t, "cp", "-an", host+"/.", units+"/")
			break
		}
	}
	unit := filepath.Join(units, "k8s-master.service")
	out, err := exec.Command("systemd-analyze", "verify", "--root="+root, unit).CombinedOutput()
	// verify reports problems it merely ignores on stderr with status 0.
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(unit)
	for _, want := range []string{"Type=notify\n", "NotifyAccess=main\n", "Restart=on-failure\n", "RestartPreventExitStatus=78\n", "LimitNOFILE=1048576\n", "TimeoutStopSec=30s\n", "KillMode=mixed\n", "ExecStart=/usr/bin/k8s-master start\n", "WantedBy=multi-user.target\n"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("unit lacks %q", want)
		}
	}
}

func TestRPMContents(t *testing.T) {
	need(t, "rpm")
	pkg := distFile(t, "k8s-master-*.x86_64.rpm")
	want := withPackaged(map[string]string{
		"/usr/share/zsh/site-functions/_k8s-master": "-rw-r--r--",
		"/usr/share/licenses/k8s-master/LICENSE":    "-rw-r--r--",
	})
	got := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(run(t, "rpm", "-qp", "--qf", "[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]", pkg)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 4 {
			got[f[3]] = f[0] + " " + f[1] + " " + f[2]
		} else if len(f) == 3 { // no flags
			got[f[2]] = f[0] + " " + f[1] + " -"
		}
	}
	for path, mode := range want {
		flags := "-"
		switch path {
		case "/etc/k8s-master/config.yaml":
			flags = "cn" // %config(noreplace)
		case "/usr/share/licenses/k8s-master/LICENSE":
			flags = "l"
		}
		if got[path] != mode+" root "+flags {
			t.Errorf("%s: %q, want %q", path, got[path], mode+" root "+flags)
		}
	}
	scripts := run(t, "rpm", "-qp", "--scripts", pkg)
	for _, want := range []string{"postinstall scriptlet", "daemon-reload", "preuninstall scriptlet", "disable --now k8s-master.service", "postuninstall scriptlet"} {
		if !strings.Contains(scripts, want) {
			t.Errorf("rpm scripts lack %q:\n%s", want, scripts)
		}
	}
}

// The .rpm installs into an empty rpm root (no shell there, so without its
// scriptlets, which TestDebInstall runs), and the binary runs.
func TestRPMInstall(t *testing.T) {
	need(t, "rpm")
	needRoot(t)
	pkg := distFile(t, "k8s-master-*.x86_64.rpm")
	root := t.TempDir()
	run(t, "rpm", "--root", root, "--initdb")
	run(t, "rpm", "--root", root, "-i", "--nodeps", "--noscripts", pkg)
	if out := run(t, "rpm", "--root", root, "-q", "k8s-master"); !strings.HasPrefix(out, "k8s-master-") {
		t.Errorf("rpm -q: %s", out)
	}
	if out := run(t, "rpm", "--root", root, "-qc", "k8s-master"); strings.TrimSpace(out) != "/etc/k8s-master/config.yaml" {
		t.Errorf("config files: %q", out)
	}
	for path, mode := range packaged {
		fi, err := os.Stat(filepath.Join(root, path))
		if err != nil {
			t.Errorf("%s not installed: %v", path, err)
		} else if fi.Mode().String() != mode {
			t.Errorf("%s installed as %s, want %s", path, fi.Mode(), mode)
		}
	}
	bin := filepath.Join(root, "usr/bin/k8s-master")
	checkStatic(t, bin)
	if out := run(t, bin, "version"); !strings.Contains(out, "kubernetes: v1.37") {
		t.Errorf("version:\n%s", out)
	}
	// Removal leaves cluster data alone.
	data := filepath.Join(root, "var/lib/k8s-master")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "state.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, "rpm", "--root", root, "-e", "--noscripts", "k8s-master")
	if _, err := os.Stat(bin); !os.IsNotExist(err) {
		t.Errorf("binary still there after erase: %v", err)
	}
	if _, err := os.Stat(filepath.Join(data, "state.json")); err != nil {
		t.Errorf("erase removed cluster data: %v", err)
	}
}
