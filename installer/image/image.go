// Package image writes container images as tarballs without a registry or a
// container engine: one OCI image layout per file (oci-layout, index.json,
// blobs/sha256/...) that also carries a Docker-style manifest.json, so the
// same file is read by `ctr images import`, `docker load`, `crane push` and
// `skopeo copy oci-archive:` / `docker-archive:`.
//
// Images are built from files of this machine (see Closure for the shared
// libraries a binary needs) and are reproducible: entries are sorted, owned
// by root and dated at the Unix epoch, so the same inputs give the same
// digests.
package image

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// File is one entry of an image's file system.
type File struct {
	// Path is the absolute path inside the image ("/usr/local/bin/seine-agent").
	Path string
	// Exactly one of Src (a regular file of this machine, copied), Data
	// (contents), Link (a symbolic link's target) or Dir is set.
	Src  string
	Data []byte
	Link string
	Dir  bool
	// Mode is the permission bits (and fs.ModeSticky); 0 means 0755 for directories and for
	// Src files that are executable, 0644 otherwise.
	Mode fs.FileMode
}

// Image is what Write turns into a tarball.
type Image struct {
	// Name is the image's full reference, with a registry and a tag
	// ("ghcr.io/seine-cni/seine:v0.1.0"); it must carry a tag.
	Name string
	// Layers are written in order, each as one uncompressed tar layer.
	// Parent directories are added where a layer lacks them.
	Layers     [][]File
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	Labels     map[string]string
}

// Result says what Write wrote.
type Result struct {
	// Manifest is the digest of the image manifest ("sha256:...").
	Manifest string
	// Size is the uncompressed size of the layers in bytes.
	Size int64
}

const (
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaIndex    = "application/vnd.oci.image.index.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar"
)

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

// ValidateName checks that name is a full reference with a tag that is not
// "latest": a node must never try to pull an image the lab built, and
// "latest" makes the kubelet pull by default.
func ValidateName(name string) error {
	slash := strings.LastIndex(name, "/")
	colon := strings.LastIndex(name, ":")
	if slash < 0 || colon < slash {
		return fmt.Errorf("image name %q: want registry/repository:tag", name)
	}
	tag := name[colon+1:]
	if tag == "" || tag == "latest" {
		return fmt.Errorf("image name %q: want a version tag, not %q", name, tag)
	}
	if strings.ContainsAny(name, " \t\n@") || name != strings.ToLower(name[:colon])+name[colon:] {
		return fmt.Errorf("image name %q: repository must be lower case without spaces or digests", name)
	}
	return nil
}

// Write writes img as a tarball at dst (through a temporary file, so a
// failed write leaves nothing at dst).
func Write(dst string, img *Image) (Result, error) {
	if err := ValidateName(img.Name); err != nil {
		return Result{}, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*")
	if err != nil {
		return Result{}, err
	}
	defer os.Remove(tmp.Name())
	res, err := write(tmp, img)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err != nil {
		return Result{}, fmt.Errorf("image %s: %w", img.Name, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return Result{}, err
	}
	return res, nil
}

func write(w io.Writer, img *Image) (Result, error) {
	out := tar.NewWriter(w)
	var res Result
	blob := func(data []byte) (descriptor, error) {
		sum := sha256.Sum256(data)
		d := descriptor{Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(data))}
		return d, addFile(out, "blobs/sha256/"+hex.EncodeToString(sum[:]), data)
	}
	if err := addDir(out, "blobs/"); err != nil {
		return res, err
	}
	if err := addDir(out, "blobs/sha256/"); err != nil {
		return res, err
	}
	var layers []descriptor
	var diffIDs []string
	for i, files := range img.Layers {
		var buf bytes.Buffer
		if err := writeLayer(&buf, files); err != nil {
			return res, fmt.Errorf("layer %d: %w", i, err)
		}
		d, err := blob(buf.Bytes())
		if err != nil {
			return res, err
		}
		d.MediaType = mediaLayer
		layers = append(layers, d)
		diffIDs = append(diffIDs, d.Digest) // uncompressed: the diff ID is the digest
		res.Size += d.Size
	}
	cfg := map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"created":      time.Unix(0, 0).UTC().Format(time.RFC3339),
		"config": map[string]any{
			"Entrypoint": img.Entrypoint,
			"Cmd":        img.Cmd,
			"Env":        img.Env,
			"WorkingDir": img.WorkingDir,
			"Labels":     img.Labels,
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return res, err
	}
	cfgDesc, err := blob(cfgJSON)
	if err != nil {
		return res, err
	}
	cfgDesc.MediaType = mediaConfig
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaManifest,
		"config":        cfgDesc,
		"layers":        layers,
	})
	if err != nil {
		return res, err
	}
	mDesc, err := blob(manifest)
	if err != nil {
		return res, err
	}
	mDesc.MediaType = mediaManifest
	mDesc.Platform = &platform{Architecture: "amd64", OS: "linux"}
	mDesc.Annotations = map[string]string{
		// containerd names the imported image after this annotation;
		// OCI tools after the tag.
		"io.containerd.image.name":          img.Name,
		"org.opencontainers.image.ref.name": img.Name[strings.LastIndex(img.Name, ":")+1:],
	}
	res.Manifest = mDesc.Digest
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaIndex,
		"manifests":     []descriptor{mDesc},
	})
	if err != nil {
		return res, err
	}
	blobPath := func(d descriptor) string { return "blobs/sha256/" + strings.TrimPrefix(d.Digest, "sha256:") }
	var layerPaths []string
	for _, l := range layers {
		layerPaths = append(layerPaths, blobPath(l))
	}
	docker, err := json.Marshal([]map[string]any{{
		"Config":   blobPath(cfgDesc),
		"RepoTags": []string{img.Name},
		"Layers":   layerPaths,
	}})
	if err != nil {
		return res, err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", index},
		{"manifest.json", docker},
	} {
		if err := addFile(out, f.name, f.data); err != nil {
			return res, err
		}
	}
	return res, out.Close()
}

var epoch = time.Unix(0, 0)

func addFile(tw *tar.Writer, name string, data []byte) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

func addDir(tw *tar.Writer, name string) error {
	return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX})
}

// writeLayer writes files as a layer tar: sorted by path, parents first,
// missing parent directories added.
func writeLayer(w io.Writer, files []File) error {
	byPath := map[string]File{}
	for _, f := range files {
		p := path.Clean(f.Path)
		if !path.IsAbs(p) || p == "/" {
			return fmt.Errorf("path %q: want an absolute path below /", f.Path)
		}
		n := 0
		for _, set := range []bool{f.Src != "", f.Data != nil, f.Link != "", f.Dir} {
			if set {
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("%s: exactly one of Src, Data, Link, Dir must be set", p)
		}
		if old, ok := byPath[p]; ok && !(old.Dir && f.Dir) {
			return fmt.Errorf("%s: given twice", p)
		}
		f.Path = p
		byPath[p] = f
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if old, ok := byPath[d]; ok {
				if !old.Dir {
					return fmt.Errorf("%s: parent %s is not a directory", p, d)
				}
				continue
			}
			byPath[d] = File{Path: d, Dir: true}
		}
	}
	paths := make([]string, 0, len(byPath))
	for p := range byPath {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	tw := tar.NewWriter(w)
	for _, p := range paths {
		if err := writeEntry(tw, byPath[p]); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return tw.Close()
}

func writeEntry(tw *tar.Writer, f File) error {
	name := strings.TrimPrefix(f.Path, "/")
	hdr := &tar.Header{Name: name, ModTime: epoch, Format: tar.FormatPAX, Mode: int64(f.Mode.Perm())}
	if f.Mode&fs.ModeSticky != 0 {
		hdr.Mode |= 0o1000
	}
	switch {
	case f.Dir:
		hdr.Typeflag, hdr.Name = tar.TypeDir, name+"/"
		if f.Mode == 0 {
			hdr.Mode = 0o755
		}
		return tw.WriteHeader(hdr)
	case f.Link != "":
		hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, f.Link, 0o777
		return tw.WriteHeader(hdr)
	case f.Data != nil:
		hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(f.Data))
		if f.Mode == 0 {
			hdr.Mode = 0o644
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := tw.Write(f.Data)
		return err
	}
	src, err := os.Open(f.Src)
	if err != nil {
		return err
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("source %s is not a regular file", f.Src)
	}
	hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size()
	if f.Mode == 0 {
		hdr.Mode = 0o644
		if st.Mode()&0o111 != 0 {
			hdr.Mode = 0o755
		}
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	n, err := io.Copy(tw, src)
	if err == nil && n != st.Size() {
		err = errors.New("source changed while copying")
	}
	return err
}
