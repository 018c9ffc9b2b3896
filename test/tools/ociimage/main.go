// Command ociimage writes a one-layer linux/amd64 container image as an
// OCI-layout tar archive, the form `ctr images import` reads, from files on
// this machine: the worker lab makes its pause and busybox images with it
// instead of pulling them from a registry.
//
//	ociimage -name NAME -o OUT.tar -file /in/image=/host/path ... [-symlink /in/image=target ...] -entrypoint /bin/sh [-cmd ARG ...]
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
	"time"
)

type pairs []string

func (p *pairs) String() string     { return strings.Join(*p, ",") }
func (p *pairs) Set(v string) error { *p = append(*p, v); return nil }

// descriptor is an OCI content descriptor.
type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int               `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    map[string]string `json:"platform,omitempty"`
}

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
	if err := write(*name, *out, *entrypoint, files, links, cmd); err != nil {
		fmt.Fprintln(os.Stderr, "ociimage:", err)
		os.Exit(1)
	}
}

func write(name, out, entrypoint string, files, links, cmd []string) error {
	layer, diffID, err := buildLayer(files, links)
	if err != nil {
		return err
	}
	cfg := map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config": map[string]any{
			"Env": []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{diffID}},
	}
	c := cfg["config"].(map[string]any)
	if entrypoint != "" {
		c["Entrypoint"] = []string{entrypoint}
	}
	if len(cmd) > 0 {
		c["Cmd"] = cmd
	}
	blobs := map[string][]byte{}
	add := func(mediaType string, data []byte) descriptor {
		sum := sha256.Sum256(data)
		d := "sha256:" + hex.EncodeToString(sum[:])
		blobs[d] = data
		return descriptor{MediaType: mediaType, Digest: d, Size: len(data)}
	}
	cfgJSON, _ := json.Marshal(cfg)
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        add("application/vnd.oci.image.config.v1+json", cfgJSON),
		"layers":        []descriptor{add("application/vnd.oci.image.layer.v1.tar+gzip", layer)},
	})
	md := add("application/vnd.oci.image.manifest.v1+json", manifest)
	// ctr names the imported image after io.containerd.image.name; the OCI
	// ref.name is the tag, as containerd's own exporter writes it.
	tag := "latest"
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		tag = name[i+1:]
	}
	md.Annotations = map[string]string{"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag}
	md.Platform = map[string]string{"architecture": "amd64", "os": "linux"}
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests":     []descriptor{md},
	})

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	put := func(p string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: p, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := put("index.json", index); err != nil {
		return err
	}
	digests := make([]string, 0, len(blobs))
	for d := range blobs {
		digests = append(digests, d)
	}
	sort.Strings(digests)
	for _, d := range digests {
		if err := put("blobs/sha256/"+strings.TrimPrefix(d, "sha256:"), blobs[d]); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return os.WriteFile(out, buf.Bytes(), 0o644)
}

// buildLayer returns the gzipped layer and the digest of its uncompressed
// tar (the config's diff_id), with the parent directories of every entry.
func buildLayer(files, links []string) ([]byte, string, error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	dirs := map[string]bool{}
	epoch := time.Unix(0, 0)
	mkdirs := func(p string) error {
		var parents []string
		for d := path.Dir(p); d != "/" && d != "."; d = path.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			if dirs[d] {
				continue
			}
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755, ModTime: epoch, Typeflag: tar.TypeDir}); err != nil {
				return err
			}
		}
		return nil
	}
	for _, f := range files {
		dst, src, ok := strings.Cut(f, "=")
		if !ok || !path.IsAbs(dst) {
			return nil, "", fmt.Errorf("-file %q: want /path/in/image=/path/on/host", f)
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return nil, "", fmt.Errorf("read %s for %s: %w", src, dst, err)
		}
		if err := mkdirs(dst); err != nil {
			return nil, "", err
		}
		if err := tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(dst, "/"), Mode: 0o755, Size: int64(len(data)), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
			return nil, "", err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, "", err
		}
	}
	for _, l := range links {
		dst, target, ok := strings.Cut(l, "=")
		if !ok || !path.IsAbs(dst) {
			return nil, "", fmt.Errorf("-symlink %q: want /path/in/image=target", l)
		}
		if err := mkdirs(dst); err != nil {
			return nil, "", err
		}
		if err := tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(dst, "/"), Linkname: target, Mode: 0o777, ModTime: epoch, Typeflag: tar.TypeSymlink}); err != nil {
			return nil, "", err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(raw.Bytes())
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return gz.Bytes(), "sha256:" + hex.EncodeToString(sum[:]), nil
}
