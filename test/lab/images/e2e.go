package images

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/seine-cni/seine/installer/image"
)

// The images of the upstream network e2e suite besides agnhost and pause
// (test/e2e/upstream: which specs use which is in its README). Each is
// built from this machine's Debian packages or from Go sources of the same
// Kubernetes release, under the name `e2e.test --list-images` prints;
// what each upstream image is built from is named in its function.

// BusyBox is registry.k8s.io/e2e-test-images/busybox (upstream: Docker
// Hub's busybox 1.37): a static busybox with a link per applet, sh as its
// command. The suite runs it as init containers and short-lived clients
// (`sh -c 'sleep ...'`, `nc`, `echo ... | nc -u`).
func BusyBox(name string) (*image.Image, error) {
	base, err := image.Base()
	if err != nil {
		return nil, err
	}
	bb, err := image.Busybox()
	if err != nil {
		return nil, err
	}
	return &image.Image{
		Name:   name,
		Layers: [][]image.File{image.Merge(base, bb)},
		Cmd:    []string{"sh"},
		Env:    []string{"PATH=/usr/local/bin:/usr/sbin:/usr/bin"},
		Labels: map[string]string{debianLabel: debianPackages("busybox-static")},
	}, nil
}

// glibcDNSTools are what the DNS specs run in the glibc querier: sh -c
// with dig over UDP and TCP, getent hosts (glibc's resolver, reading
// /etc/hosts and nsswitch.conf), seq, sleep, test and echo; host,
// nslookup and the text tools of Debian's slim image (grep, sed, awk, ...)
// for a person debugging a pod.
var glibcDNSTools = []string{
	"/usr/bin/dash", "/usr/bin/bash", "/usr/bin/dig", "/usr/bin/host", "/usr/bin/nslookup", "/usr/bin/getent",
	"/usr/bin/seq", "/usr/bin/sleep", "/usr/bin/cat", "/usr/bin/echo", "/usr/bin/test", "/usr/bin/ls",
	"/usr/bin/hostname", "/usr/bin/mkdir", "/usr/bin/rm", "/usr/bin/grep", "/usr/bin/sed", "/usr/bin/mawk",
	"/usr/bin/wc", "/usr/bin/head", "/usr/bin/tail", "/usr/bin/tr", "/usr/bin/cut", "/usr/bin/sort",
}

// GlibcDNSTesting is registry.k8s.io/e2e-test-images/glibc-dns-testing
// (formerly jessie-dnsutils; upstream: debian bookworm-slim with dnsutils
// and a CoreDNS at /coredns): Debian's dash as /bin/sh, bash, dig, host,
// nslookup, getent and the coreutils the probes use, each with its
// libraries from this machine (bookworm too). coredns, when given, is the
// lab's CoreDNS program at /coredns (the DNS configMap specs run it; the
// lab's selection skips them as Serial).
func GlibcDNSTesting(name, coredns string) (*image.Image, error) {
	base, err := image.Base()
	if err != nil {
		return nil, err
	}
	tools, err := image.Closure(glibcDNSTools...)
	if err != nil {
		return nil, fmt.Errorf("glibc-dns-testing image: %w (apt-get install bind9-dnsutils bash dash coreutils libc-bin hostname grep sed mawk)", err)
	}
	own := []image.File{{Path: "/usr/bin/sh", Link: "dash"}, {Path: "/usr/bin/awk", Link: "mawk"}, {Path: "/results", Dir: true}}
	if coredns != "" {
		own = append(own, image.File{Path: "/coredns", Src: coredns})
	}
	return &image.Image{
		Name:   name,
		Layers: [][]image.File{image.Merge(base, tools), own},
		Cmd:    []string{"/bin/sh"},
		Env:    []string{"PATH=/usr/local/bin:/usr/sbin:/usr/bin"},
		Labels: map[string]string{debianLabel: debianPackages("bind9-dnsutils", "libc-bin", "dash", "bash", "coreutils", "grep", "sed", "mawk")},
	}, nil
}

// RegressionIssue74839 is registry.k8s.io/e2e-test-images/regression-issue-74839
// (upstream: the same program on debian-base): the "boom" server of
// kubernetes#74839, built from k8s.io/kubernetes test/images of the lab's
// release, as its entrypoint. The conntrack spec "proxy implementation
// should not be vulnerable to the invalid conntrack state bug" runs it:
// it answers a connection with an out-of-window TCP packet that a proxy
// must drop rather than pass to the client as a reset.
func RegressionIssue74839(name, prog string) (*image.Image, error) {
	return programOnBase(name, "regression-issue-74839", prog)
}

// debianLabel records the Debian packages an image's programs come from.
const debianLabel = "io.seine.debian-packages"

// debianPackages is "name=version ..." of installed Debian packages.
func debianPackages(pkgs ...string) string {
	out, err := exec.Command("dpkg-query", append([]string{"-W", "-f", "${Package}=${Version} "}, pkgs...)...).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// nginxConf serves /usr/share/nginx/html on port 80 in the foreground,
// logging to the container's stdout and stderr, as upstream's image does.
const nginxConf = `user nobody nogroup;
worker_processes 1;
pid /run/nginx.pid;
error_log stderr;
events {
    worker_connections 1024;
}
http {
    access_log /dev/stdout;
    default_type text/html;
    server {
        listen 80;
        location / {
            root /usr/share/nginx/html;
            index index.html;
        }
    }
}
`

// Nginx is registry.k8s.io/e2e-test-images/nginx (upstream: nginx 1.27 on
// Alpine): Debian's nginx program, from the package unpacked below root
// (DebianPackage: installing it would start a server on the machine), with
// its libraries from this machine, a configuration serving a page on port
// 80 in the foreground, and the temporary directories Debian's build names.
// The Endpoints and EndpointSlice Conformance specs run it as the pods a
// Service selects.
func Nginx(name, root string) (*image.Image, error) {
	if root == "" {
		return nil, errors.New("nginx image: no unpacked nginx package given")
	}
	prog := filepath.Join(root, "usr/sbin/nginx")
	libs, err := image.Closure(prog)
	if err != nil {
		return nil, fmt.Errorf("nginx image: %w", err)
	}
	libs = slices.DeleteFunc(libs, func(f image.File) bool { return f.Src == prog || f.Path == prog })
	base, err := image.Base()
	if err != nil {
		return nil, err
	}
	own := []image.File{
		{Path: "/usr/sbin/nginx", Src: prog},
		{Path: "/etc/nginx/nginx.conf", Data: []byte(nginxConf)},
		{Path: "/usr/share/nginx/html/index.html", Data: []byte("<!DOCTYPE html>\n<title>Welcome to nginx!</title>\n<h1>Welcome to nginx!</h1>\n")},
		{Path: "/var/log/nginx/access.log", Link: "/dev/stdout"},
		{Path: "/var/log/nginx/error.log", Link: "/dev/stderr"},
	}
	for _, d := range []string{"body", "fastcgi", "proxy", "scgi", "uwsgi"} {
		own = append(own, image.File{Path: "/var/lib/nginx/" + d, Dir: true, Mode: 0o777})
	}
	return &image.Image{
		Name:       name,
		Layers:     [][]image.File{image.Merge(base, libs), own},
		Entrypoint: []string{"/usr/sbin/nginx", "-g", "daemon off;"},
		Env:        []string{"PATH=/usr/local/bin:/usr/sbin:/usr/bin"},
		Labels:     map[string]string{debianLabel: "nginx=" + debVersion(root)},
	}, nil
}

// DebianPackage downloads a Debian package with apt (no install: nothing
// runs, nothing of the machine changes) and unpacks it below dir/root,
// which it returns; the package's version is in dir/root/.version.
func DebianPackage(pkg, dir string) (string, error) {
	download := func() error {
		cmd := exec.Command("apt-get", "download", "-q", pkg)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get download %s: %w\n%s", pkg, err, out)
		}
		return nil
	}
	if err := download(); err != nil {
		if out, uerr := exec.Command("apt-get", "update", "-q").CombinedOutput(); uerr != nil {
			return "", fmt.Errorf("%w (apt-get update: %v\n%s)", err, uerr, out)
		}
		if err := download(); err != nil {
			return "", err
		}
	}
	debs, _ := filepath.Glob(filepath.Join(dir, pkg+"_*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("apt-get download %s: %d .deb files in %s", pkg, len(debs), dir)
	}
	root := filepath.Join(dir, "root")
	if out, err := exec.Command("dpkg-deb", "-x", debs[0], root).CombinedOutput(); err != nil {
		return "", fmt.Errorf("dpkg-deb -x %s: %w\n%s", debs[0], err, out)
	}
	version, err := exec.Command("dpkg-deb", "-f", debs[0], "Version").Output()
	if err != nil {
		return "", fmt.Errorf("dpkg-deb -f %s Version: %w", debs[0], err)
	}
	return root, os.WriteFile(filepath.Join(root, ".version"), version, 0o644)
}

func debVersion(root string) string {
	b, _ := os.ReadFile(filepath.Join(root, ".version"))
	return strings.TrimSpace(string(b))
}

// E2EInputs are what the upstream suite's images besides agnhost and
// pause are built from, with their names (read by the caller from the
// release's test/utils/image/manifest.go).
type E2EInputs struct {
	// NginxRoot is Debian's nginx package unpacked (DebianPackage).
	NginxRoot string
	// RegressionIssue74839 is that program, built from k8s.io/kubernetes.
	RegressionIssue74839 string
	// CoreDNS, when given, joins glibc-dns-testing at /coredns.
	CoreDNS string
	// Names: busybox, glibc-dns-testing, nginx, regression-issue-74839.
	BusyBox, GlibcDNSTesting, Nginx, RegressionIssue74839Name string
}

// BuildE2E writes the upstream suite's images into outDir, next to what
// Build wrote, and adds them to its Index (images.json), so the lab
// imports them into every node with the others. Build must have run
// first; a failed image leaves images.json as it was.
func BuildE2E(outDir string, in E2EInputs, log func(format string, args ...any)) (*Index, error) {
	idx, err := ReadIndex(outDir)
	if err != nil {
		return nil, err
	}
	recipes := []struct {
		file string
		make func() (*image.Image, error)
	}{
		{"busybox.tar", func() (*image.Image, error) { return BusyBox(in.BusyBox) }},
		{"glibc-dns-testing.tar", func() (*image.Image, error) { return GlibcDNSTesting(in.GlibcDNSTesting, in.CoreDNS) }},
		{"nginx.tar", func() (*image.Image, error) { return Nginx(in.Nginx, in.NginxRoot) }},
		{"regression-issue-74839.tar", func() (*image.Image, error) {
			return RegressionIssue74839(in.RegressionIssue74839Name, in.RegressionIssue74839)
		}},
	}
	for _, r := range recipes {
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
		idx.Images = slices.DeleteFunc(idx.Images, func(b Built) bool { return b.File == r.file })
		idx.Images = append(idx.Images, Built{Name: img.Name, File: r.file, Manifest: res.Manifest, Size: res.Size})
	}
	return idx, writeIndex(outDir, idx)
}

// Add writes img into outDir as file and adds it to the Index of the
// images there (images.json; an entry of the same file is replaced), so
// the lab imports it into every node with the others. Build must have run
// first; a failed image leaves images.json as it was.
func Add(outDir, file string, img *image.Image, log func(format string, args ...any)) error {
	idx, err := ReadIndex(outDir)
	if err != nil {
		return err
	}
	start := time.Now()
	res, err := image.Write(filepath.Join(outDir, file), img)
	if err != nil {
		return err
	}
	log("image %s: %s, %.1f MiB (%s)", img.Name, file, float64(res.Size)/(1<<20), time.Since(start).Round(time.Millisecond))
	idx.Images = slices.DeleteFunc(idx.Images, func(b Built) bool { return b.File == file })
	idx.Images = append(idx.Images, Built{Name: img.Name, File: file, Manifest: res.Manifest, Size: res.Size})
	return writeIndex(outDir, idx)
}
