package image

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// readTar returns a tarball's regular files by name and its entry names in order.
func readTar(t *testing.T, r io.Reader) (map[string][]byte, []string, map[string]*tar.Header) {
	t.Helper()
	files, hdrs := map[string][]byte{}, map[string]*tar.Header{}
	var names []string
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		hdrs[h.Name] = h
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[h.Name] = b
		}
	}
	return files, names, hdrs
}

func blobOf(t *testing.T, files map[string][]byte, digest string) []byte {
	t.Helper()
	b, ok := files["blobs/sha256/"+strings.TrimPrefix(digest, "sha256:")]
	if !ok {
		t.Fatalf("blob %s missing", digest)
	}
	sum := sha256.Sum256(b)
	if "sha256:"+hex.EncodeToString(sum[:]) != digest {
		t.Fatalf("blob %s has digest %x", digest, sum)
	}
	return b
}

func TestWriteOCILayoutAndDockerManifest(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "prog")
	if err := os.WriteFile(src, []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := &Image{
		Name: "registry.example/seine/test:v1",
		Layers: [][]File{{
			{Path: "/usr/local/bin/prog", Src: src},
			{Path: "/etc/motd", Data: []byte("hello\n")},
			{Path: "/bin", Link: "usr/bin"},
			{Path: "/tmp", Dir: true, Mode: 0o777 | fs.ModeSticky},
		}},
		Entrypoint: []string{"/usr/local/bin/prog"},
		Env:        []string{"PATH=/usr/local/bin:/usr/bin"},
		Labels:     map[string]string{"a": "b"},
	}
	dst := filepath.Join(dir, "img.tar")
	res, err := Write(dst, img)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files, _, _ := readTar(t, f)
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %q", files["oci-layout"])
	}
	var index struct {
		Manifests []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json %s: %v", files["index.json"], err)
	}
	md := index.Manifests[0]
	if md.Digest != res.Manifest || md.Annotations["io.containerd.image.name"] != img.Name || md.Annotations["org.opencontainers.image.ref.name"] != "v1" {
		t.Errorf("index descriptor %+v, want digest %s and the image's name", md, res.Manifest)
	}
	var manifest struct {
		Config descriptor   `json:"config"`
		Layers []descriptor `json:"layers"`
	}
	if err := json.Unmarshal(blobOf(t, files, md.Digest), &manifest); err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		OS, Architecture string
		Config           struct{ Entrypoint, Env []string }
		RootFS           struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(blobOf(t, files, manifest.Config.Digest), &cfg); err != nil {
		t.Fatal(err)
	}
	// containerd drops an imported image whose config lacks os/architecture.
	if cfg.OS != "linux" || cfg.Architecture != "amd64" {
		t.Errorf("config os/arch = %q/%q", cfg.OS, cfg.Architecture)
	}
	if !slices.Equal(cfg.Config.Entrypoint, img.Entrypoint) || !slices.Equal(cfg.Config.Env, img.Env) {
		t.Errorf("config %+v", cfg.Config)
	}
	if len(manifest.Layers) != 1 || !slices.Equal(cfg.RootFS.DiffIDs, []string{manifest.Layers[0].Digest}) {
		t.Fatalf("layers %+v, diff ids %v", manifest.Layers, cfg.RootFS.DiffIDs)
	}
	layer := blobOf(t, files, manifest.Layers[0].Digest)
	lfiles, names, hdrs := readTar(t, bytes.NewReader(layer))
	want := []string{"bin", "etc/", "etc/motd", "tmp/", "usr/", "usr/local/", "usr/local/bin/", "usr/local/bin/prog"}
	if !slices.Equal(names, want) {
		t.Errorf("layer entries %q, want %q", names, want)
	}
	if h := hdrs["usr/local/bin/prog"]; h.Mode != 0o755 || h.Uid != 0 || h.ModTime.Unix() != 0 {
		t.Errorf("prog header mode %o uid %d mtime %v", h.Mode, h.Uid, h.ModTime)
	}
	if hdrs["tmp/"].Mode != 0o1777 || hdrs["bin"].Linkname != "usr/bin" || string(lfiles["etc/motd"]) != "hello\n" {
		t.Errorf("tmp mode %o, bin link %q, motd %q", hdrs["tmp/"].Mode, hdrs["bin"].Linkname, lfiles["etc/motd"])
	}
	// docker load / crane: manifest.json names the same config and layers.
	var docker []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"], &docker); err != nil || len(docker) != 1 {
		t.Fatalf("manifest.json %s: %v", files["manifest.json"], err)
	}
	if docker[0].Config != "blobs/sha256/"+strings.TrimPrefix(manifest.Config.Digest, "sha256:") || !slices.Equal(docker[0].RepoTags, []string{img.Name}) || len(docker[0].Layers) != 1 {
		t.Errorf("manifest.json %+v", docker[0])
	}

	// Reproducible: the same inputs give the same manifest digest.
	again, err := Write(filepath.Join(dir, "again.tar"), img)
	if err != nil {
		t.Fatal(err)
	}
	if again.Manifest != res.Manifest {
		t.Errorf("second write: manifest %s, first %s", again.Manifest, res.Manifest)
	}
}

func TestWriteRefusesBadInputAndLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]*Image{
		"latest tag":   {Name: "ghcr.io/seine-cni/seine:latest"},
		"no tag":       {Name: "ghcr.io/seine-cni/seine"},
		"no registry":  {Name: "seine:v1"},
		"upper case":   {Name: "ghcr.io/Seine/seine:v1"},
		"relative":     {Name: "r.example/x:v1", Layers: [][]File{{{Path: "etc/x", Data: []byte{}}}}},
		"two sources":  {Name: "r.example/x:v1", Layers: [][]File{{{Path: "/etc/x", Data: []byte{}, Link: "y"}}}},
		"twice":        {Name: "r.example/x:v1", Layers: [][]File{{{Path: "/etc/x", Data: []byte{}}, {Path: "/etc/x", Link: "y"}}}},
		"under a file": {Name: "r.example/x:v1", Layers: [][]File{{{Path: "/etc", Data: []byte{}}, {Path: "/etc/x", Data: []byte{}}}}},
		"missing src":  {Name: "r.example/x:v1", Layers: [][]File{{{Path: "/x", Src: filepath.Join(dir, "absent")}}}},
	}
	for name, img := range cases {
		t.Run(name, func(t *testing.T) {
			dst := filepath.Join(dir, "out.tar")
			if _, err := Write(dst, img); err == nil {
				t.Fatal("Write succeeded")
			} else {
				t.Log(err)
			}
			left, _ := os.ReadDir(dir)
			if len(left) != 0 {
				t.Errorf("left behind: %v", left)
			}
		})
	}
}
