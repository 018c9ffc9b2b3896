// Package ociimage writes one-layer linux/amd64 container images as
// OCI-layout tar archives, the form `ctr images import` (and `podman load`,
// `skopeo copy oci-archive:`) reads: how images reach the nodes of a
// cluster that has no registry.
package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/k8s-master/k8s-master/pkg/fsutil"
)

// Image is what goes into the archive.
type Image struct {
	// Name is the reference ctr gives the imported image
	// ("registry.example/k8s-master:v1.2.3").
	Name       string
	Entrypoint []string
	Cmd        []string
	Files      []File
	Symlinks   []Symlink
}

// File is a regular file of the image's one layer, mode 0755.
type File struct {
	Path string // absolute, in the image
	Data []byte
}

// Symlink is a symbolic link of the layer.
type Symlink struct {
	Path, Target string
}

// descriptor is an OCI content descriptor.
type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int               `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    map[string]string `json:"platform,omitempty"`
}

// Write writes the archive to w.
func (img Image) Write(w io.Writer) error {
	if img.Name == "" {
		return fmt.Errorf("an image needs a name")
	}
	layer, diffID, err := buildLayer(img.Files, img.Symlinks)
	if err != nil {
		return err
	}
	c := map[string]any{"Env": []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}}
	if len(img.Entrypoint) > 0 {
		c["Entrypoint"] = img.Entrypoint
	}
	if len(img.Cmd) > 0 {
		c["Cmd"] = img.Cmd
	}
	cfg := map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config":       c,
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{diffID}},
	}
	blobs := map[string][]byte{}
	add := func(mediaType string, data []byte) descriptor {
		sum := sha256.Sum256(data)
		d := "sha256:" + hex.EncodeToString(sum[:])
		blobs[d] = data
		return descriptor{MediaType: mediaType, Digest: d, Size: len(data)}
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        add("application/vnd.oci.image.config.v1+json", cfgJSON),
		"layers":        []descriptor{add("application/vnd.oci.image.layer.v1.tar+gzip", layer)},
	})
	if err != nil {
		return err
	}
	md := add("application/vnd.oci.image.manifest.v1+json", manifest)
	// ctr names the imported image after io.containerd.image.name; the OCI
	// ref.name is the tag, as containerd's own exporter writes it.
	tag := "latest"
	if i := strings.LastIndex(img.Name, ":"); i > strings.LastIndex(img.Name, "/") {
		tag = img.Name[i+1:]
	}
	md.Annotations = map[string]string{"io.containerd.image.name": img.Name, "org.opencontainers.image.ref.name": tag}
	md.Platform = map[string]string{"architecture": "amd64", "os": "linux"}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests":     []descriptor{md},
	})
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
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
	return tw.Close()
}

// WriteFile writes the archive to out, whole or not at all.
func (img Image) WriteFile(out string) error {
	var buf bytes.Buffer
	if err := img.Write(&buf); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	return fsutil.WriteFileAtomic(out, buf.Bytes(), 0o644)
}

// buildLayer returns the gzipped layer and the digest of its uncompressed
// tar (the config's diff_id), with the parent directories of every entry.
func buildLayer(files []File, links []Symlink) ([]byte, string, error) {
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
		if !path.IsAbs(f.Path) {
			return nil, "", fmt.Errorf("image file %q: want an absolute path", f.Path)
		}
		if err := mkdirs(f.Path); err != nil {
			return nil, "", err
		}
		if err := tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(f.Path, "/"), Mode: 0o755, Size: int64(len(f.Data)), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
			return nil, "", err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, "", err
		}
	}
	for _, l := range links {
		if !path.IsAbs(l.Path) {
			return nil, "", fmt.Errorf("image symlink %q: want an absolute path", l.Path)
		}
		if err := mkdirs(l.Path); err != nil {
			return nil, "", err
		}
		if err := tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(l.Path, "/"), Linkname: l.Target, Mode: 0o777, ModTime: epoch, Typeflag: tar.TypeSymlink}); err != nil {
			return nil, "", err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(raw.Bytes())
	var gz bytes.Buffer
	// Fastest compression: a 100 MB static binary packs in seconds.
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	if err != nil {
		return nil, "", err
	}
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return gz.Bytes(), "sha256:" + hex.EncodeToString(sum[:]), nil
}
