package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestArchiveLayout reads an archive back as an importer does: index →
// manifest → config and layer, every blob under its digest, the file and
// the link in the layer, and the name ctr gives the image.
func TestArchiveLayout(t *testing.T) {
	out := filepath.Join(t.TempDir(), "img.tar")
	img := Image{Name: "registry.example:5000/k8s-master:v1.2.3", Entrypoint: []string{"/usr/local/bin/k8s-master"},
		Files: []File{{Path: "/usr/local/bin/k8s-master", Data: []byte("binary")}}, Symlinks: []Symlink{{Path: "/bin/km", Target: "/usr/local/bin/k8s-master"}}}
	if err := img.WriteFile(out); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = b
	}
	blob := func(digest string) []byte {
		t.Helper()
		b, ok := files["blobs/sha256/"+digest[len("sha256:"):]]
		if !ok {
			t.Fatalf("no blob %s", digest)
		}
		sum := sha256.Sum256(b)
		if "sha256:"+hex.EncodeToString(sum[:]) != digest {
			t.Fatalf("blob %s does not match its digest", digest)
		}
		return b
	}
	var index struct {
		Manifests []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %v %s", err, files["index.json"])
	}
	if got := index.Manifests[0].Annotations["io.containerd.image.name"]; got != img.Name {
		t.Errorf("image name %q, want %q", got, img.Name)
	}
	if got := index.Manifests[0].Annotations["org.opencontainers.image.ref.name"]; got != "v1.2.3" {
		t.Errorf("ref name %q, want v1.2.3", got)
	}
	var manifest struct {
		Config descriptor   `json:"config"`
		Layers []descriptor `json:"layers"`
	}
	if err := json.Unmarshal(blob(index.Manifests[0].Digest), &manifest); err != nil || len(manifest.Layers) != 1 {
		t.Fatalf("manifest: %v", err)
	}
	var cfg struct {
		Config struct{ Entrypoint []string }
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(blob(manifest.Config.Digest), &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Config.Entrypoint) != 1 || cfg.Config.Entrypoint[0] != "/usr/local/bin/k8s-master" {
		t.Errorf("entrypoint %v", cfg.Config.Entrypoint)
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob(manifest.Layers[0].Digest)))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(zr)
	sum := sha256.Sum256(raw)
	if len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Errorf("diff_ids %v do not match the layer", cfg.RootFS.DiffIDs)
	}
	layer := map[string]*tar.Header{}
	lr := tar.NewReader(bytes.NewReader(raw))
	var content []byte
	for {
		h, err := lr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		layer[h.Name] = h
		if h.Name == "usr/local/bin/k8s-master" {
			content, _ = io.ReadAll(lr)
		}
	}
	for _, d := range []string{"usr/", "usr/local/", "usr/local/bin/", "bin/"} {
		if h := layer[d]; h == nil || h.Typeflag != tar.TypeDir {
			t.Errorf("layer lacks directory %s", d)
		}
	}
	if string(content) != "binary" || layer["usr/local/bin/k8s-master"].Mode != 0o755 {
		t.Errorf("the binary in the layer: %q", content)
	}
	if h := layer["bin/km"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "/usr/local/bin/k8s-master" {
		t.Errorf("the link in the layer: %+v", h)
	}
}

func TestRefusesRelativePathsAndNoName(t *testing.T) {
	out := filepath.Join(t.TempDir(), "img.tar")
	for name, img := range map[string]Image{
		"no name":       {Files: []File{{Path: "/a", Data: nil}}},
		"relative file": {Name: "x:1", Files: []File{{Path: "a"}}},
		"relative link": {Name: "x:1", Symlinks: []Symlink{{Path: "b", Target: "/a"}}},
	} {
		if err := img.WriteFile(out); err == nil {
			t.Errorf("%s: no error", name)
		}
		if _, err := os.Stat(out); err == nil {
			t.Fatalf("%s: an archive was written anyway", name)
		}
	}
}
