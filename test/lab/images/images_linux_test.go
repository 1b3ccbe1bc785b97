package images

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/seine-cni/seine/installer/image"
	"github.com/seine-cni/seine/test/ci"
)

// unpack lays an image tarball's layers out below root, as a runtime's
// snapshotter would, and returns the image config's entrypoint and cmd.
func unpack(t *testing.T, tarball, root string) (entrypoint, cmd []string) {
	t.Helper()
	f, err := os.Open(tarball)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	blobs := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			blobs[h.Name], _ = io.ReadAll(tr)
		}
	}
	var docker []struct {
		Config string
		Layers []string
	}
	if err := json.Unmarshal(blobs["manifest.json"], &docker); err != nil || len(docker) != 1 {
		t.Fatalf("manifest.json: %v", err)
	}
	var cfg struct {
		OS, Architecture string
		Config           struct{ Entrypoint, Cmd []string }
	}
	if err := json.Unmarshal(blobs[docker[0].Config], &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != "amd64" {
		t.Errorf("%s: os/arch %q/%q", tarball, cfg.OS, cfg.Architecture)
	}
	for _, l := range docker[0].Layers {
		lr := tar.NewReader(bytes.NewReader(blobs[l]))
		for {
			h, err := lr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(root, h.Name)
			os.MkdirAll(filepath.Dir(p), 0o755)
			switch h.Typeflag {
			case tar.TypeDir:
				os.MkdirAll(p, os.FileMode(h.Mode)&0o7777)
			case tar.TypeSymlink:
				os.Remove(p)
				if err := os.Symlink(h.Linkname, p); err != nil {
					t.Fatal(err)
				}
			case tar.TypeReg:
				b, _ := io.ReadAll(lr)
				os.Remove(p)
				if err := os.WriteFile(p, b, os.FileMode(h.Mode)&0o777); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	// A container always has /proc, and programs behave differently
	// without it (busybox's shell runs its own applets only when it can
	// re-execute itself through /proc/self/exe).
	proc := filepath.Join(root, "proc")
	os.MkdirAll(proc, 0o555)
	if err := syscall.Mount("proc", proc, "proc", 0, ""); err != nil {
		t.Fatalf("mount proc in the unpacked image: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(proc, syscall.MNT_DETACH) })
	return cfg.Config.Entrypoint, cfg.Config.Cmd
}

// chroot runs argv inside root and returns its combined output.
func chroot(root string, argv ...string) (string, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/sbin:/usr/bin"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func needRoot(t *testing.T) {
	t.Helper()
	ci.RequireRoot(t, "chroot")
}

// TestAgnhostImageHasTheToolsE2EExecs unpacks the agnhost image and runs,
// inside it, what the upstream e2e suite execs in agnhost pods: sh, bash,
// OpenBSD nc (-z, -u), curl, dig and getent, and /coredns, the DNS server
// the DNS specs start from the agnhost image ("should support configurable
// pod resolv.conf"; upstream's image carries CoreDNS; the lab's program
// stood in for by pause, static). The agnhost program (linked against
// libc like the control plane) is stood in for by a copy of ovs-vsctl, a
// program whose libraries (libunbound, libnuma, ...) none of the tools
// loads: /agnhost must run, so the image carries the program's own
// libraries.
func TestAgnhostImageHasTheToolsE2EExecs(t *testing.T) {
	needRoot(t)
	ci.RequireCommands(t, "ovs-vsctl")
	dir := t.TempDir()
	vsctl, _ := exec.LookPath("ovs-vsctl")
	b, err := os.ReadFile(vsctl)
	if err != nil {
		t.Fatal(err)
	}
	prog := filepath.Join(dir, "agnhost")
	if err := os.WriteFile(prog, b, 0o755); err != nil {
		t.Fatal(err)
	}
	// porter's TLS pair, as the release's test/images/agnhost/porter has it.
	porter := filepath.Join(dir, "porter")
	if err := os.MkdirAll(porter, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"localhost.crt", "localhost.key"} {
		if err := os.WriteFile(filepath.Join(porter, f), []byte("the release's "+f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img, err := Agnhost("registry.k8s.io/e2e-test-images/agnhost:2.66.1", prog, pauseProgram(t), porter)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Agnhost("registry.k8s.io/e2e-test-images/agnhost:2.66.1", prog, "", porter); err == nil {
		t.Error("agnhost without CoreDNS: no error")
	}
	if _, err := Agnhost("registry.k8s.io/e2e-test-images/agnhost:2.66.1", prog, pauseProgram(t), dir); err == nil {
		t.Error("agnhost without porter's TLS pair: no error")
	}
	for _, f := range img.Layers[0] {
		if strings.HasPrefix(f.Path, dir) {
			t.Errorf("the image carries the program's build path %s", f.Path)
		}
	}
	if err := write(filepath.Join(dir, "agnhost.tar"), img); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	ep, cmd := unpack(t, filepath.Join(dir, "agnhost.tar"), root)
	if strings.Join(ep, " ") != "/agnhost" || strings.Join(cmd, " ") != "pause" {
		t.Errorf("entrypoint %q cmd %q, want /agnhost pause as upstream", ep, cmd)
	}
	for _, argv := range [][]string{
		{"/bin/sh", "-c", "echo sh works"},
		{"/bin/bash", "-c", "echo bash works"},
		{"/bin/sh", "-c", "nc -h 2>&1 | grep -q -- -z && nc -h 2>&1 | grep -q -- -u"},
		{"/usr/bin/curl", "--version"},
		{"/usr/bin/dig", "-v"},
		{"/bin/sh", "-c", `test -n "$(getent passwd root)"`},
		{"/agnhost", "--version"},
		{"/agnhost-2", "--version"},
		{"/coredns", "-v"},
	} {
		if out, err := chroot(root, argv...); err != nil {
			t.Errorf("%q in the agnhost image: %v\n%s", argv, err, out)
		}
	}
	// porter serves TLS with localhost.crt and localhost.key from its
	// working directory, /: upstream's image carries them there, and the
	// proxy spec "should proxy through a service and a pod" reaches its
	// TLS ports (without them porter logs "open localhost.crt: no such
	// file or directory" and the apiserver's proxy answers 503).
	for _, f := range []string{"localhost.crt", "localhost.key"} {
		if b, err := os.ReadFile(filepath.Join(root, f)); err != nil || string(b) != "the release's "+f {
			t.Errorf("/%s in the agnhost image: %q, %v", f, b, err)
		}
	}
	// The Services specs fetch their backends' hostnames with `wget -q -O
	// - -T 1` (verifyServeHostnameServiceUp); Debian's static busybox 1.35
	// wget crashes (SIGSEGV) on -T, so every such spec failed.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hostname-1") }))
	defer srv.Close()
	if out, err := chroot(root, "/bin/sh", "-c", "wget -q -O - -T 1 "+srv.URL+" 2>&1"); err != nil || out != "hostname-1" {
		t.Errorf("wget -q -O - -T 1 in the agnhost image: %q, %v", out, err)
	}
}

// pauseProgram builds the lab's pause program (static) once.
func pauseProgram(t *testing.T) string {
	t.Helper()
	pauseOnce.Do(func() {
		dir, err := os.MkdirTemp("", "seine-images-test-")
		if err != nil {
			pauseErr = err
			return
		}
		pausePath = filepath.Join(dir, "pause")
		cmd := exec.Command("go", "build", "-o", pausePath, "./pause")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			pauseErr = fmt.Errorf("go build ./pause: %v\n%s", err, out)
		}
	})
	if pauseErr != nil {
		t.Fatal(pauseErr)
	}
	return pausePath
}

var (
	pauseOnce sync.Once
	pausePath string
	pauseErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if pausePath != "" {
		os.RemoveAll(filepath.Dir(pausePath))
	}
	if nginxDir != "" {
		os.RemoveAll(nginxDir)
	}
	os.Exit(code)
}

// TestPauseAndCoreDNSImages checks the single-program images' entrypoints
// and that the program is where the entrypoint says.
func TestPauseAndCoreDNSImages(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		make  func(name, prog string) (*imageT, error)
		name  string
		entry string
	}{
		{Pause, "registry.k8s.io/pause:3.10.2", "/pause"},
		{CoreDNS, "registry.k8s.io/coredns/coredns:v1.15.0", "/coredns"},
	} {
		img, err := tc.make(tc.name, pauseProgram(t))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.Base(tc.entry)+".tar")
		if err := write(p, img); err != nil {
			t.Fatal(err)
		}
		root := filepath.Join(dir, filepath.Base(tc.entry))
		ep, _ := unpack(t, p, root)
		if len(ep) != 1 || ep[0] != tc.entry {
			t.Errorf("%s: entrypoint %q", tc.name, ep)
		}
		if out, err := chroot(root, tc.entry, "-v"); err != nil {
			t.Errorf("%s: %s does not run: %v %s", tc.name, tc.entry, err, out)
		}
		if _, err := tc.make(tc.name, ""); err == nil {
			t.Errorf("%s without a program: no error", tc.name)
		}
	}
}

type imageT = image.Image

func write(p string, img *image.Image) error {
	_, err := image.Write(p, img)
	return err
}

// TestSeineImageRunsItsPrograms unpacks Seine's image and runs, inside it,
// the iptables programs the agent runs and Open vSwitch's tools, each from
// the closure copied from this machine; Seine's own programs are stood in
// for by pause. Open vSwitch's daemons are not in it (the OVS image's).
func TestSeineImageRunsItsPrograms(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	os.MkdirAll(bin, 0o755)
	src, err := os.ReadFile(pauseProgram(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range image.SeinePrograms {
		os.WriteFile(filepath.Join(bin, p), src, 0o755)
	}
	tag, err := SeineTag(bin)
	if err != nil || !strings.HasPrefix(tag, "dev-") || len(tag) != 16 {
		t.Fatalf("SeineTag = %q, %v", tag, err)
	}
	img, err := image.Seine(image.SeineRepository+":"+tag, bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := write(filepath.Join(dir, "seine.tar"), img); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	unpack(t, filepath.Join(dir, "seine.tar"), root)
	for _, argv := range [][]string{
		{"/usr/local/bin/seine-agent", "-v"},
		{"/usr/local/bin/seinectl", "-v"},
		{"/usr/bin/ovs-vsctl", "--version"},
		{"/usr/bin/ovs-ofctl", "--version"},
		{"/usr/bin/ovs-appctl", "--version"},
		{"/usr/sbin/iptables-restore", "--version"},
		{"/usr/sbin/ip6tables-save", "--version"},
	} {
		if out, err := chroot(root, argv...); err != nil {
			t.Errorf("%q in the seine image: %v\n%s", argv, err, out)
		}
	}
	for _, p := range []string{"/usr/sbin/ovs-vswitchd", "/usr/local/bin/start-ovs"} {
		if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
			t.Errorf("the seine image holds %s (the OVS image's)", p)
		}
	}
}

// TestOVSImageRunsOpenVSwitch unpacks the OVS image, checks its tag is the
// Debian package's version and runs, inside it, Open vSwitch's daemons and
// tools and start-ovs's syntax check; it holds no program of Seine's.
func TestOVSImageRunsOpenVSwitch(t *testing.T) {
	needRoot(t)
	tag, err := image.OVSTag()
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(tag, "+~:") || tag == "" {
		t.Errorf("OVSTag %q is not a valid tag", tag)
	}
	img, err := image.OVS(image.OVSRepository + ":" + tag)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := write(filepath.Join(dir, "ovs.tar"), img); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	ep, _ := unpack(t, filepath.Join(dir, "ovs.tar"), root)
	if strings.Join(ep, " ") != "/usr/local/bin/start-ovs" {
		t.Errorf("entrypoint %q", ep)
	}
	for _, argv := range [][]string{
		{"/usr/sbin/ovs-vswitchd", "--version"},
		{"/usr/sbin/ovsdb-server", "--version"},
		{"/usr/bin/ovs-vsctl", "--version"},
		{"/usr/bin/ovs-appctl", "--version"},
		{"/usr/bin/ovsdb-tool", "--version"},
		{"/bin/sh", "-c", "test -s /usr/share/openvswitch/vswitch.ovsschema"},
		{"/bin/sh", "-n", "/usr/local/bin/start-ovs"},
	} {
		if out, err := chroot(root, argv...); err != nil {
			t.Errorf("%q in the ovs image: %v\n%s", argv, err, out)
		}
	}
	for _, p := range image.SeinePrograms {
		if _, err := os.Lstat(filepath.Join(root, "/usr/local/bin", p)); err == nil {
			t.Errorf("the ovs image holds %s", p)
		}
	}
}
