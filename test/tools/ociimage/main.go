// Command ociimage writes a one-layer linux/amd64 container image as an
// OCI-layout tar archive, the form `ctr images import` reads, from files on
// this machine: the worker lab makes its pause, busybox and add-on images
// with it instead of pulling them from a registry.
//
//	ociimage -name NAME -o OUT.tar -file /in/image=/host/path ... [-symlink /in/image=target ...] -entrypoint /bin/sh [-cmd ARG ...]
package main

import (
	"flag"
	"fmt"
	"os"
	"path"
	"strings"

	"github.com/k8s-master/k8s-master/pkg/ociimage"
)

type pairs []string

func (p *pairs) String() string     { return strings.Join(*p, ",") }
func (p *pairs) Set(v string) error { *p = append(*p, v); return nil }

func main() {
	var files, links, cmd pairs
	name := flag.String("name", "", "image reference, e.g. localhost/lab/pause:1")
	out := flag.String("o", "", "output archive")
	entrypoint := flag.String("entrypoint", "", "the image's entrypoint")
	flag.Var(&files, "file", "IMAGEPATH=HOSTPATH, repeatable")
	flag.Var(&links, "symlink", "IMAGEPATH=TARGET, repeatable")
	flag.Var(&cmd, "cmd", "an argument of the image's default command, repeatable")
	flag.Parse()
	if *name == "" || *out == "" || len(files) == 0 {
		fmt.Fprintln(os.Stderr, "usage: ociimage -name NAME -o OUT.tar -file IMAGEPATH=HOSTPATH ... [-symlink IMAGEPATH=TARGET ...] [-entrypoint PATH] [-cmd ARG ...]")
		os.Exit(2)
	}
	img := ociimage.Image{Name: *name, Cmd: cmd}
	if *entrypoint != "" {
		img.Entrypoint = []string{*entrypoint}
	}
	for _, f := range files {
		dst, src, ok := strings.Cut(f, "=")
		if !ok || !path.IsAbs(dst) {
			fail(fmt.Errorf("-file %q: want /path/in/image=/path/on/host", f))
		}
		data, err := os.ReadFile(src)
		if err != nil {
			fail(fmt.Errorf("read %s for %s: %w", src, dst, err))
		}
		img.Files = append(img.Files, ociimage.File{Path: dst, Data: data})
	}
	for _, l := range links {
		dst, target, ok := strings.Cut(l, "=")
		if !ok || !path.IsAbs(dst) {
			fail(fmt.Errorf("-symlink %q: want /path/in/image=target", l))
		}
		img.Symlinks = append(img.Symlinks, ociimage.Symlink{Path: dst, Target: target})
	}
	if err := img.WriteFile(*out); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "ociimage:", err)
	os.Exit(1)
}
