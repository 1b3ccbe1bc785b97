package images

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/seine-cni/seine/test/ci"
)

// TestE2EImagesRunWhatTheSuiteRuns unpacks the busybox, glibc-dns-testing
// and regression-issue-74839 images and runs, inside each, what the
// upstream specs run there (the command lines are the specs'): a busybox
// init container's sleep and a TCP client's nc, the DNS probes' dig,
// getent, seq and test under sh, nginx's check of its configuration
// (nginx -t: its libraries, the user it runs as, its directories), and
// the Go programs at their paths (the
// boom server as the entrypoint, /coredns): pause -v stands in for both,
// a static Go program as theirs are.
func TestE2EImagesRunWhatTheSuiteRuns(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	pause := pauseProgram(t)
	nginx := nginxRoot(t)
	cases := []struct {
		name       string
		make       func() (*imageT, error)
		entrypoint string
		cmd        string
		runs       [][]string
	}{
		{"registry.k8s.io/e2e-test-images/busybox:1.37.0-2", func() (*imageT, error) { return BusyBox("registry.k8s.io/e2e-test-images/busybox:1.37.0-2") }, "", "sh",
			[][]string{
				{"/bin/sh", "-c", "echo Pausing start. && sleep 0"},
				{"/bin/sh", "-c", "nc --help 2>&1 | grep -q 'IPADDR PORT'"},
				{"/bin/sh", "-c", "test \"$(seq 1 3 | wc -l)\" = 3"},
			}},
		{"registry.k8s.io/e2e-test-images/glibc-dns-testing:2.1.1", func() (*imageT, error) {
			return GlibcDNSTesting("registry.k8s.io/e2e-test-images/glibc-dns-testing:2.1.1", pause)
		}, "", "/bin/sh",
			[][]string{
				{"sh", "-c", `check="$(getent passwd root)" && test -n "$check" && echo OK > /results/getent`},
				{"sh", "-c", `for i in $(seq 1 3); do sleep 0; done; cat /results/getent | grep -q OK && echo a.b | awk -F. '{print $2}' | grep -qx b`},
				{"/usr/bin/dig", "-v"},
				{"sh", "-c", "host -V 2>&1 || nslookup -version"},
				{"bash", "-c", "echo bash works"},
				{"/coredns", "-v"},
			}},
		{"registry.k8s.io/e2e-test-images/nginx:1.27.0-2", func() (*imageT, error) {
			return Nginx("registry.k8s.io/e2e-test-images/nginx:1.27.0-2", nginx)
		}, "/usr/sbin/nginx -g daemon off;", "",
			[][]string{
				{"/usr/sbin/nginx", "-t"},
				{"/usr/sbin/nginx", "-V"},
			}},
		{"registry.k8s.io/e2e-test-images/regression-issue-74839:1.5", func() (*imageT, error) {
			return RegressionIssue74839("registry.k8s.io/e2e-test-images/regression-issue-74839:1.5", pause)
		}, "/regression-issue-74839", "",
			[][]string{{"/regression-issue-74839", "-v"}}},
	}
	for _, c := range cases {
		t.Run(strings.Split(filepath.Base(c.name), ":")[0], func(t *testing.T) {
			img, err := c.make()
			if err != nil {
				t.Fatal(err)
			}
			if img.Name != c.name {
				t.Errorf("name %q, want %q", img.Name, c.name)
			}
			tarball := filepath.Join(dir, filepath.Base(strings.Split(c.name, ":")[0])+".tar")
			if err := write(tarball, img); err != nil {
				t.Fatal(err)
			}
			root := filepath.Join(dir, "root-"+filepath.Base(tarball))
			ep, cmd := unpack(t, tarball, root)
			if strings.Join(ep, " ") != c.entrypoint || strings.Join(cmd, " ") != c.cmd {
				t.Errorf("entrypoint %q cmd %q, want %q %q", ep, cmd, c.entrypoint, c.cmd)
			}
			for _, argv := range c.runs {
				if out, err := chroot(root, argv...); err != nil {
					t.Errorf("%q in %s: %v\n%s", argv, c.name, err, out)
				}
			}
		})
	}
	if _, err := RegressionIssue74839("registry.k8s.io/e2e-test-images/regression-issue-74839:1.5", ""); err == nil {
		t.Error("regression-issue-74839 without a program: no error")
	}
	if _, err := Nginx("registry.k8s.io/e2e-test-images/nginx:1.27.0-2", ""); err == nil {
		t.Error("nginx without its package: no error")
	}
}

// nginxRoot is Debian's nginx package unpacked: SEINE_LAB_NGINX_ROOT (what
// make images unpacked) or, without it, downloaded with apt once per run.
func nginxRoot(t *testing.T) string {
	t.Helper()
	if root := os.Getenv("SEINE_LAB_NGINX_ROOT"); root != "" {
		return root
	}
	ci.RequireCommands(t, "apt-get", "dpkg-deb")
	nginxOnce.Do(func() {
		if nginxDir, nginxErr = os.MkdirTemp("", "seine-images-nginx-"); nginxErr == nil {
			nginxPath, nginxErr = DebianPackage("nginx", nginxDir)
		}
	})
	if nginxErr != nil {
		t.Fatal(nginxErr)
	}
	return nginxPath
}

var (
	nginxOnce           sync.Once
	nginxDir, nginxPath string
	nginxErr            error
)

// TestBuildE2EAddsToTheIndex: the suite's images join what Build wrote
// (images.json keeps its entries and gains one per image, once however
// often it runs), and a failed image leaves images.json as it was.
func TestBuildE2EAddsToTheIndex(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	before := &Index{Names: Names{Pause: DefaultPause}, Images: []Built{{Name: DefaultPause, File: "pause.tar"}}}
	if err := writeIndex(dir, before); err != nil {
		t.Fatal(err)
	}
	in := E2EInputs{
		NginxRoot: nginxRoot(t), RegressionIssue74839: pauseProgram(t),
		BusyBox:                  "registry.k8s.io/e2e-test-images/busybox:1.37.0-2",
		GlibcDNSTesting:          "registry.k8s.io/e2e-test-images/glibc-dns-testing:2.1.1",
		Nginx:                    "registry.k8s.io/e2e-test-images/nginx:1.27.0-2",
		RegressionIssue74839Name: "registry.k8s.io/e2e-test-images/regression-issue-74839:1.5",
	}
	for range 2 {
		if _, err := BuildE2E(dir, in, t.Logf); err != nil {
			t.Fatal(err)
		}
	}
	idx, err := ReadIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range idx.Images {
		got = append(got, b.File)
		if _, err := os.Stat(filepath.Join(dir, b.File)); err != nil && b.File != "pause.tar" {
			t.Error(err)
		}
	}
	want := []string{"pause.tar", "busybox.tar", "glibc-dns-testing.tar", "nginx.tar", "regression-issue-74839.tar"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("images.json lists %q, want %q", got, want)
	}
	written, _ := os.ReadFile(filepath.Join(dir, IndexFile))
	bad := in
	bad.NginxRoot = filepath.Join(dir, "no-such-package")
	if _, err := BuildE2E(dir, bad, t.Logf); err == nil {
		t.Error("BuildE2E without nginx's program: no error")
	}
	if after, _ := os.ReadFile(filepath.Join(dir, IndexFile)); string(after) != string(written) {
		t.Errorf("a failed BuildE2E changed images.json:\n%s\nwas\n%s", after, written)
	}
}
