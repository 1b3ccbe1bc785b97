// Package images builds the container images of the lab's real nodes as
// tarballs (installer/image), with no registry: Seine's own image, the pod
// sandbox (pause), Open vSwitch's (the seine-ovs DaemonSet), agnhost (the
// upstream e2e suite's do-everything test image, with the shell, nc, curl,
// dig and getent it execs), CoreDNS, and the upstream suite's other images
// (e2e.go: busybox, glibc-dns-testing, nginx, regression-issue-74839). The
// lab imports them into every node's containerd; a person can push the
// same files to a registry (`crane push bin/images/seine.tar <ref>`).
//
// Upstream images are built under their upstream names (the ones the
// kubelet, containerd and `e2e.test --list-images` ask for), so nothing has
// to be renamed for Kubernetes' own tests; Seine's image is tagged with a
// hash of its binaries, never "latest".
package images

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/seine-cni/seine/installer/image"
)

// Inputs are the programs the images are built from.
type Inputs struct {
	// SeineBin holds seine-agent, seine-cni, seine-controller and seinectl
	// built for linux/amd64.
	SeineBin string
	// Pause, Agnhost and CoreDNS are the programs of those images. Seine's
	// image and pause are always built (a real node needs both); agnhost
	// and CoreDNS only when their program is given (make test's lab runs
	// neither and does not build them); agnhost needs CoreDNS's program too
	// (it carries it at /coredns, as upstream's does), and AgnhostPorter,
	// the directory of porter's TLS pair (Agnhost).
	Pause, Agnhost, CoreDNS, AgnhostPorter string
	// Names of the images; empty fields take the defaults of Defaults.
	Names Names
}

// Names are the images' full references.
type Names struct {
	Seine   string `json:"seine"`
	OVS     string `json:"ovs"`
	Pause   string `json:"pause"`
	Agnhost string `json:"agnhost"`
	CoreDNS string `json:"coredns"`
}

// Upstream names of Kubernetes v1.37.2 (test/utils/image/manifest.go,
// cmd/kubeadm/app/constants): the sandbox image containerd is told to use,
// and what the e2e suite asks for. Callers that know the module's version
// better (the build reads them from the k8s.io/kubernetes source it
// compiles) pass theirs in Inputs.Names.
const (
	DefaultPause   = "registry.k8s.io/pause:3.10.2"
	DefaultAgnhost = "registry.k8s.io/e2e-test-images/agnhost:2.66.1"
	DefaultCoreDNS = "registry.k8s.io/coredns/coredns:v1.15.0"
)

// Built is one image written by Build.
type Built struct {
	Name     string `json:"name"`
	File     string `json:"file"` // base name in the output directory
	Manifest string `json:"manifest"`
	Size     int64  `json:"size"`
}

// Index is the file Build writes beside the tarballs (images.json): what
// the lab imports and the names the installer and the tests use.
type Index struct {
	Names  Names   `json:"names"`
	Images []Built `json:"images"`
}

// IndexFile is the name of the Index in an images directory.
const IndexFile = "images.json"

// ReadIndex reads the Index of an images directory.
func ReadIndex(dir string) (*Index, error) {
	b, err := os.ReadFile(filepath.Join(dir, IndexFile))
	if err != nil {
		return nil, fmt.Errorf("images in %s (make images builds them): %w", dir, err)
	}
	var idx Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Join(dir, IndexFile), err)
	}
	return &idx, nil
}

// SeineTag is the tag of Seine's image built from the binaries in binDir:
// "dev-" and the first 12 hex digits of a hash over them, so a rebuilt
// Seine is a new image (a DaemonSet rolls to it) and the same binaries are
// the same image.
func SeineTag(binDir string) (string, error) {
	h := sha256.New()
	for _, p := range image.SeinePrograms {
		f, err := os.Open(filepath.Join(binDir, p))
		if err != nil {
			return "", err
		}
		io.WriteString(h, p)
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", err
		}
	}
	return "dev-" + hex.EncodeToString(h.Sum(nil))[:12], nil
}

// Build writes every image asked for into outDir as <name>.tar and the
// Index, and returns the Index, which lists only those images (and names
// only those: an image not built has an empty name). A failed build leaves
// the previous files in place.
func Build(outDir string, in Inputs, log func(format string, args ...any)) (*Index, error) {
	n := in.Names
	if n.Seine == "" {
		tag, err := SeineTag(in.SeineBin)
		if err != nil {
			return nil, fmt.Errorf("seine image: %w", err)
		}
		n.Seine = image.SeineRepository + ":" + tag
	}
	if n.OVS == "" {
		tag, err := image.OVSTag()
		if err != nil {
			return nil, fmt.Errorf("ovs image: %w", err)
		}
		n.OVS = image.OVSRepository + ":" + tag
	}
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&n.Pause, DefaultPause)
	if in.Agnhost != "" {
		def(&n.Agnhost, DefaultAgnhost)
	} else {
		n.Agnhost = ""
	}
	if in.CoreDNS != "" {
		def(&n.CoreDNS, DefaultCoreDNS)
	} else {
		n.CoreDNS = ""
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, err
	}
	recipes := []struct {
		file string
		make func() (*image.Image, error)
	}{
		{"seine.tar", func() (*image.Image, error) { return image.Seine(n.Seine, in.SeineBin) }},
		{"seine-ovs.tar", func() (*image.Image, error) { return image.OVS(n.OVS) }},
		{"pause.tar", func() (*image.Image, error) { return Pause(n.Pause, in.Pause) }},
		{"agnhost.tar", func() (*image.Image, error) { return Agnhost(n.Agnhost, in.Agnhost, in.CoreDNS, in.AgnhostPorter) }},
		{"coredns.tar", func() (*image.Image, error) { return CoreDNS(n.CoreDNS, in.CoreDNS) }},
	}
	idx := &Index{Names: n}
	for _, r := range recipes {
		if (r.file == "agnhost.tar" && in.Agnhost == "") || (r.file == "coredns.tar" && in.CoreDNS == "") {
			// Not asked for: an earlier build's file would be stale.
			os.Remove(filepath.Join(outDir, r.file))
			continue
		}
		start := time.Now()
		img, err := r.make()
		if err != nil {
			return nil, err
		}
		res, err := image.Write(filepath.Join(outDir, r.file), img)
		if err != nil {
			return nil, err
		}
		log("image %s: %s, %.1f MiB (%s)", img.Name, r.file, float64(res.Size)/(1<<20), time.Since(start).Round(time.Millisecond))
		idx.Images = append(idx.Images, Built{Name: img.Name, File: r.file, Manifest: res.Manifest, Size: res.Size})
	}
	return idx, writeIndex(outDir, idx)
}

// writeIndex writes idx as outDir's images.json (a temporary file renamed
// into place: a reader never sees half of it).
func writeIndex(outDir string, idx *Index) error {
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(outDir, "."+IndexFile)
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(outDir, IndexFile))
}

// Pause is the pod sandbox image: the pause program alone.
func Pause(name, prog string) (*image.Image, error) {
	if prog == "" {
		return nil, errors.New("pause image: no pause program given")
	}
	return &image.Image{
		Name:       name,
		Layers:     [][]image.File{{{Path: "/pause", Src: prog}}},
		Entrypoint: []string{"/pause"},
	}, nil
}

// Agnhost is agnhost with what the e2e suite runs beside it through
// `kubectl exec`: sh (dash) and the usual tools (busybox), bash, nc (OpenBSD's:
// -u, -z), curl, GNU wget, dig and getent (the DNS specs' /etc/hosts check), each
// with its shared libraries from this machine's Debian packages, and the
// lab's CoreDNS program at /coredns: upstream's agnhost carries CoreDNS, and
// the DNS specs run it from this image as their own test DNS server. As
// upstream: ENTRYPOINT /agnhost, CMD pause.
//
// porter is the directory of the release's porter
// (test/images/agnhost/porter): its TLS pair, localhost.crt and
// localhost.key, goes to /, porter's working directory, as upstream's
// image has it (`agnhost porter` serves its SERVE_TLS_PORT_ ports with it;
// the proxy Conformance spec reaches them).
func Agnhost(name, prog, coredns, porter string) (*image.Image, error) {
	if prog == "" {
		return nil, errors.New("agnhost image: no agnhost program given")
	}
	if coredns == "" {
		return nil, errors.New("agnhost image: no CoreDNS program given (upstream's agnhost carries /coredns: the DNS specs run it)")
	}
	var tls []image.File
	for _, f := range []string{"localhost.crt", "localhost.key"} {
		src := filepath.Join(porter, f)
		if _, err := os.Stat(src); err != nil {
			return nil, fmt.Errorf("agnhost image: porter's TLS pair: %w", err)
		}
		tls = append(tls, image.File{Path: "/" + f, Src: src})
	}
	base, err := image.Base()
	if err != nil {
		return nil, err
	}
	// /bin/sh is Debian's dash, not busybox: Debian's static busybox is a
	// standalone shell that runs its own applet for any name it has one
	// for, whatever PATH says, so `sh -c 'nc -u ...'` would get busybox's
	// nc (no -u) instead of OpenBSD's. Busybox keeps the other tools.
	// wget is GNU wget: Debian's static busybox 1.35 wget crashes
	// (SIGSEGV) on -T, which the Services specs pass (`wget -q -O - -T 1`).
	bb, err := image.Busybox("sh", "ash", "nc", "wget")
	if err != nil {
		return nil, err
	}
	tools, err := image.Closure("/usr/bin/dash", "/usr/bin/bash", "/usr/bin/nc.openbsd", "/usr/bin/curl", "/usr/bin/dig", "/usr/bin/getent", "/usr/bin/wget")
	if err != nil {
		return nil, fmt.Errorf("agnhost image: %w (apt-get install dash bash netcat-openbsd curl bind9-dnsutils libc-bin wget)", err)
	}
	// agnhost is linked like the control plane it shares compiled packages
	// with (cgo on: libc's resolver); its libraries, not the program's own
	// path, join the image.
	libs, err := image.Closure(prog)
	if err != nil {
		return nil, fmt.Errorf("agnhost image: %w", err)
	}
	libs = slices.DeleteFunc(libs, func(f image.File) bool { return f.Src == prog || f.Path == prog })
	tools = image.Merge(tools, libs)
	own := []image.File{
		{Path: "/agnhost", Src: prog},
		{Path: "/agnhost-2", Link: "agnhost"},
		{Path: "/coredns", Src: coredns},
		{Path: "/usr/bin/nc", Link: "nc.openbsd"},
		{Path: "/usr/bin/sh", Link: "dash"},
		{Path: "/uploads", Dir: true},
	}
	own = append(own, tls...)
	return &image.Image{
		Name:       name,
		Layers:     [][]image.File{image.Merge(base, bb, tools), own},
		Entrypoint: []string{"/agnhost"},
		Cmd:        []string{"pause"},
		Env:        []string{"PATH=/usr/local/bin:/usr/sbin:/usr/bin"},
	}, nil
}

// CoreDNS is the cluster DNS server's image, as upstream: /coredns as the
// entrypoint, its Corefile given by the Deployment.
func CoreDNS(name, prog string) (*image.Image, error) {
	return programOnBase(name, "coredns", prog)
}

// programOnBase is an image of the base files (image.Base) and one
// program, /<path>, as its entrypoint.
func programOnBase(name, path, prog string) (*image.Image, error) {
	if prog == "" {
		return nil, fmt.Errorf("%s image: no %s program given", path, path)
	}
	base, err := image.Base()
	if err != nil {
		return nil, err
	}
	return &image.Image{
		Name:       name,
		Layers:     [][]image.File{base, {{Path: "/" + path, Src: prog}}},
		Entrypoint: []string{"/" + path},
	}, nil
}
