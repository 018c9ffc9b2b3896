// Command nfpm builds the k8s-master .deb and .rpm from the built binary
// with nFPM's Go API: nothing is downloaded but Go modules.
//
//	go run ./nfpm -bin ../bin/k8s-master -version v1.0.0 -out ../dist
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager
)

func main() {
	bin := flag.String("bin", "../bin/k8s-master", "the static k8s-master binary")
	version := flag.String("version", "", "package version (v1.2.3 or git describe output)")
	out := flag.String("out", "../dist", "where the packages go")
	dir := flag.String("dir", ".", "the packaging directory (unit, scripts)")
	license := flag.String("license", "../LICENSE", "licence file")
	formats := flag.String("formats", "deb,rpm", "package formats")
	flag.Parse()
	if err := run(*bin, *version, *out, *dir, *license, strings.Split(*formats, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "package:", err)
		os.Exit(1)
	}
}

func run(bin, version, out, dir, license string, formats []string) error {
	tmp, err := os.MkdirTemp("", "k8s-master-pkg-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	// Generated from the binary itself, so they always match it.
	generated := map[string][]string{
		"config.yaml":     {"config", "defaults"},
		"k8s-master.bash": {"completion", "bash"},
		"_k8s-master":     {"completion", "zsh"},
		"k8s-master.fish": {"completion", "fish"},
	}
	for name, args := range generated {
		data, err := exec.Command(bin, args...).Output()
		if err != nil {
			return fmt.Errorf("%s %s: %w", bin, strings.Join(args, " "), err)
		}
		if err := os.WriteFile(filepath.Join(tmp, name), data, 0o644); err != nil {
			return err
		}
	}
	info := packageInfo(bin, version, dir, license, tmp)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for _, format := range formats {
		if err := build(format, info, out); err != nil {
			return fmt.Errorf("%s: %w", format, err)
		}
	}
	return nil
}

func build(format string, base *nfpm.Info, out string) error {
	pkgr, err := nfpm.Get(format)
	if err != nil {
		return err
	}
	info := *base
	info.Contents = append(files.Contents(nil), base.Contents...)
	info.Target = ""
	if err := nfpm.PrepareForPackager(nfpm.WithDefaults(&info), format); err != nil {
		return err
	}
	path := filepath.Join(out, pkgr.ConventionalFileName(&info))
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pkgr.Package(&info, f); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Println(path)
	return nil
}

var semverRE = regexp.MustCompile(`^v?[0-9]+\.[0-9]+\.[0-9]+`)

// packageVersion turns a release tag into the package version and anything
// else (a commit, "dev") into 0.0.0~git<commit>, which sorts below 0.0.0
// for both dpkg and rpm.
func packageVersion(v string) (version, prerelease string) {
	if semverRE.MatchString(v) {
		return v, ""
	}
	clean := regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(v, ".")
	return "0.0.0", "git" + strings.Trim(clean, ".")
}

func packageInfo(bin, version, dir, license, gen string) *nfpm.Info {
	v, pre := packageVersion(version)
	file := func(src, dst string, mode os.FileMode) *files.Content {
		return &files.Content{Source: src, Destination: dst, FileInfo: &files.ContentFileInfo{Mode: mode}}
	}
	config := file(filepath.Join(gen, "config.yaml"), "/etc/k8s-master/config.yaml", 0o644)
	config.Type = files.TypeConfigNoReplace
	deb := func(c *files.Content) *files.Content { c.Packager = "deb"; return c }
	rpm := func(c *files.Content) *files.Content { c.Packager = "rpm"; return c }
	contents := files.Contents{
		file(bin, "/usr/bin/k8s-master", 0o755),
		file(filepath.Join(dir, "k8s-master.service"), "/usr/lib/systemd/system/k8s-master.service", 0o644),
		config,
		file(filepath.Join(gen, "k8s-master.bash"), "/usr/share/bash-completion/completions/k8s-master", 0o644),
		deb(file(filepath.Join(gen, "_k8s-master"), "/usr/share/zsh/vendor-completions/_k8s-master", 0o644)),
		rpm(file(filepath.Join(gen, "_k8s-master"), "/usr/share/zsh/site-functions/_k8s-master", 0o644)),
		file(filepath.Join(gen, "k8s-master.fish"), "/usr/share/fish/vendor_completions.d/k8s-master.fish", 0o644),
		deb(file(license, "/usr/share/doc/k8s-master/copyright", 0o644)),
		rpm(file(license, "/usr/share/licenses/k8s-master/LICENSE", 0o644)),
	}
	contents[len(contents)-1].Type = files.TypeRPMLicense
	return &nfpm.Info{
		Name:          "k8s-master",
		Arch:          "amd64",
		Platform:      "linux",
		Version:       v,
		VersionSchema: "semver",
		Prerelease:    pre,
		Section:       "admin",
		Priority:      "optional",
		Maintainer:    "k8s-master maintainers <k8s-master@users.noreply.github.com>",
		Vendor:        "k8s-master",
		Homepage:      "https://github.com/k8s-master/k8s-master",
		License:       "Apache-2.0",
		Description: "Kubernetes control plane in one static binary\n" +
			"etcd, kube-apiserver, kube-controller-manager and kube-scheduler in one\n" +
			"process, run as the k8s-master systemd service.",
		MTime: time.Now().UTC().Truncate(time.Second),
		Overridables: nfpm.Overridables{
			Contents: contents,
			Scripts: nfpm.Scripts{
				PostInstall: filepath.Join(dir, "scripts", "postinstall.sh"),
				PreRemove:   filepath.Join(dir, "scripts", "preremove.sh"),
				PostRemove:  filepath.Join(dir, "scripts", "postremove.sh"),
			},
			RPM: nfpm.RPM{Group: "System Environment/Daemons", Summary: "Kubernetes control plane in one static binary"},
		},
	}
}
