//go:build mage

// The images and the container runtime of the lab's real nodes. Every build
// of a program that does not change with Seine (containerd, runc, CoreDNS,
// agnhost) is cached in ~/.cache/seine-lab by a hash of its inputs, like the
// control plane (labkube).

package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/magefile/mage/mg"

	"github.com/seine-cni/seine/test/ci/buildcache"
	"github.com/seine-cni/seine/test/lab/images"
)

// Images builds the lab's container images as tarballs in bin/images
// (Seine's image, pause, agnhost, CoreDNS; see test/lab/images) and the
// container runtime the lab's nodes run them with (containerd, its runc
// shim, ctr and runc).
func Images() error {
	mg.SerialDeps(Deps, LabBin)
	_, err := labImages(true)
	return err
}

// NodeImages builds only what make test's real-node tests and make lab
// need: the container runtime (cached) and the images of Seine, seine-ovs,
// pause, CoreDNS and agnhost (both cached) in bin/images (make images adds
// the upstream e2e suite's other images).
func NodeImages() error {
	mg.SerialDeps(Deps, LabBin)
	_, err := buildLabImages(policyImageSet)
	return err
}

// TestNodeBuild builds what make test's real-node tests and its upstream
// e2e subset need, for make test's "node build" step (beside its first
// tests): the container runtime, CoreDNS, agnhost and e2e.test (cached),
// and the images (written every time). nodeTestEnv names them.
func TestNodeBuild() error {
	runtimeDir, err := buildLabImages(policyImageSet)
	if err != nil {
		return err
	}
	if err := relink(runtimeDir, testRuntimeLink); err != nil {
		return err
	}
	_, err = e2eBinary()
	return err
}

// testRuntimeLink is the link TestNodeBuild makes to the runtime's cached
// directory, so that make test can name it before it is built.
const testRuntimeLink = "bin/runtime"

// nodeTestEnv points the real-node tests and the upstream subset at what
// TestNodeBuild builds (through links under bin/, as make test names them
// before that step ran).
func nodeTestEnv() []string {
	abs, _ := filepath.Abs("bin")
	return []string{"SEINE_LAB_RUNTIME_BIN=" + filepath.Join(abs, "runtime"), "SEINE_LAB_IMAGES=" + filepath.Join(abs, "images"),
		"SEINE_E2E_BIN=" + filepath.Join(abs, "e2e.test")}
}

// relink makes link a symbolic link to target.
func relink(target, link string) error {
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return err
	}
	os.Remove(link)
	return os.Symlink(target, link)
}

// labCache is the directory of cached lab builds.
func labCache() string {
	if c := os.Getenv("SEINE_LAB_CACHE"); c != "" {
		return c
	}
	home, _ := os.UserCacheDir()
	return filepath.Join(home, "seine-lab")
}

// cachedBuild returns ~/.cache/seine-lab/<name>-<hash>, a directory that
// build fills, running build only when no directory exists for the hash of
// the files in inputs and of extra (flags, versions). The build writes into
// a temporary directory renamed into place, so an interrupted build is
// never taken for a finished one; two runs asking at once build it once
// (test/ci/buildcache).
func cachedBuild(name, about string, inputs []string, extra string, build func(dir string) error) (string, error) {
	h := sha256.New()
	for _, f := range inputs {
		fh, err := os.Open(f)
		if err != nil {
			return "", err
		}
		io.WriteString(h, f)
		io.Copy(h, fh)
		fh.Close()
	}
	io.WriteString(h, runtime.Version()+extra)
	dir := filepath.Join(labCache(), name+"-"+hex.EncodeToString(h.Sum(nil))[:16])
	start := time.Now()
	built, err := buildcache.Ensure(dir, waitingFor(name), func(tmp string) error {
		if err := os.MkdirAll(tmp, 0o755); err != nil {
			return err
		}
		fmt.Printf("building %s (first time: %s; cached afterwards in %s)\n", name, about, labCache())
		return build(tmp)
	})
	if err != nil {
		return "", fmt.Errorf("build %s: %w", name, err)
	}
	if built {
		fmt.Printf("built %s in %s\n", name, time.Since(start).Round(time.Second))
	}
	return dir, nil
}

// waitingFor tells that another run is building name and this one waits.
func waitingFor(name string) func() {
	return func() { fmt.Printf("waiting for another run's build of %s\n", name) }
}

// goBuild runs go build in dir with env, printing the command.
func goBuild(dir string, env []string, args ...string) error {
	fmt.Println("+", "(cd "+dir+")", strings.Join(env, " "), "go build", strings.Join(args, " "))
	cmd := exec.Command("go", append([]string{"build"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd.Run()
}

const (
	containerdFlags = "-trimpath -ldflags=-s -w -tags=no_btrfs,no_devmapper,no_zfs"
	runcFlags       = "-trimpath -ldflags=-s -w -tags=seccomp"
)

// labRuntime builds containerd, containerd-shim-runc-v2, ctr (no cgo) and
// runc (cgo, with seccomp: RuntimeDefault profiles need it) from
// test/lab/runtime; it returns the directory holding them.
func labRuntime() (string, error) {
	if _, err := os.Stat("/usr/include/seccomp.h"); err != nil {
		fmt.Println("installing Debian packages: libseccomp-dev (runc's seccomp support)")
		if err := run([]string{"DEBIAN_FRONTEND=noninteractive"}, "apt-get", "install", "-y", "-q", "--no-install-recommends", "libseccomp-dev"); err != nil {
			if err := run(nil, "apt-get", "update", "-q"); err != nil {
				return "", err
			}
			if err := run([]string{"DEBIAN_FRONTEND=noninteractive"}, "apt-get", "install", "-y", "-q", "--no-install-recommends", "libseccomp-dev"); err != nil {
				return "", err
			}
		}
	}
	mod := "test/lab/runtime"
	return cachedBuild("runtime", "containerd and runc, a few minutes", []string{mod + "/go.mod", mod + "/go.sum"}, containerdFlags+runcFlags,
		func(dir string) error {
			abs, _ := filepath.Abs(dir)
			if err := goBuild(mod, []string{"CGO_ENABLED=0"}, "-trimpath", "-ldflags=-s -w", "-tags=no_btrfs,no_devmapper,no_zfs", "-o", abs+"/",
				"github.com/containerd/containerd/v2/cmd/containerd",
				"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2",
				"github.com/containerd/containerd/v2/cmd/ctr"); err != nil {
				return err
			}
			return goBuild(mod, []string{"CGO_ENABLED=1"}, "-trimpath", "-ldflags=-s -w", "-tags=seccomp", "-o", abs+"/runc", "github.com/opencontainers/runc")
		})
}

// labCoreDNS builds CoreDNS (the plugins of a cluster DNS) from test/lab/coredns.
func labCoreDNS() (string, error) {
	mod := "test/lab/coredns"
	dir, err := cachedBuild("coredns", "a few minutes", []string{mod + "/go.mod", mod + "/go.sum", mod + "/main.go"}, "-s -w",
		func(dir string) error {
			abs, _ := filepath.Abs(dir)
			return goBuild(mod, []string{"CGO_ENABLED=0"}, "-trimpath", "-ldflags=-s -w", "-o", abs+"/coredns", ".")
		})
	return filepath.Join(dir, "coredns"), err
}

// labAgnhost builds agnhost, a main package of k8s.io/kubernetes, in
// test/lab/agnhost: the control plane's requirements plus agnhost's own, so
// the build reuses the control plane's compiled packages while
// test/lab/k8s (the control plane's cache key) stays untouched. porter is
// the directory of porter's TLS pair in the module's source, which the
// image carries.
func labAgnhost() (prog, porter string, err error) {
	mod := "test/lab/agnhost"
	dir, err := cachedBuild("agnhost", "a few minutes, less once the control plane is built", []string{mod + "/go.mod", mod + "/go.sum"}, "-s -w cgo",
		func(dir string) error {
			abs, _ := filepath.Abs(dir)
			// cgo as the environment has it, like the control plane
			// (labkube): the Kubernetes packages both link are compiled
			// once. With CGO_ENABLED=0 nothing is shared (a change of cgo
			// changes every package's build ID): 4.5 min at nice 19 here,
			// 35 s with labkube's packages in the Go cache.
			return goBuild(mod, nil, "-trimpath", "-ldflags=-s -w", "-o", abs+"/agnhost", "k8s.io/kubernetes/test/images/agnhost")
		})
	if err != nil {
		return "", "", err
	}
	src, err := kubernetesSource()
	if err != nil {
		return "", "", err
	}
	// porter's TLS pair, which upstream's image carries (images.Agnhost).
	return filepath.Join(dir, "agnhost"), filepath.Join(src, "test/images/agnhost/porter"), nil
}

// kubernetesSource is the directory of the k8s.io/kubernetes module the
// lab's images are built from (agnhost's, in the module cache).
func kubernetesSource() (string, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "k8s.io/kubernetes")
	cmd.Dir = "test/lab/agnhost"
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("locate k8s.io/kubernetes: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// upstreamImageNames reads the pause and agnhost images of the Kubernetes
// release the lab builds from its source (test/utils/image/manifest.go),
// so the lab's images carry the names its kubelet and e2e suite ask for.
func upstreamImageNames() (pause, agnhost string, err error) {
	names, err := releaseImages("Pause", "pause", "Agnhost", "agnhost")
	if err != nil {
		return "", "", err
	}
	return names["Pause"], names["Agnhost"], nil
}

// releaseImages reads images of the lab's Kubernetes release from its
// test/utils/image/manifest.go: pairs of (image ID, image name), returned
// as full references by ID.
func releaseImages(idName ...string) (map[string]string, error) {
	dir, err := kubernetesSource()
	if err != nil {
		return nil, err
	}
	src, err := os.ReadFile(filepath.Join(dir, "test/utils/image/manifest.go"))
	if err != nil {
		return nil, err
	}
	registries := map[string]string{
		"PromoterE2eRegistry": "registry.k8s.io/e2e-test-images",
		"GcRegistry":          "registry.k8s.io",
		"BuildImageRegistry":  "registry.k8s.io/build-image",
	}
	names := map[string]string{}
	for i := 0; i+1 < len(idName); i += 2 {
		id, name := idName[i], idName[i+1]
		m := regexp.MustCompile(`configs\[` + id + `\] = Config\{list\.(\w+), "` + regexp.QuoteMeta(name) + `", "([^"]+)"\}`).FindSubmatch(src)
		if m == nil {
			return nil, fmt.Errorf("no %s image in k8s.io/kubernetes test/utils/image/manifest.go", id)
		}
		registry := registries[string(m[1])]
		if registry == "" {
			return nil, fmt.Errorf("%s image: unknown registry %s", id, m[1])
		}
		names[id] = registry + "/" + name + ":" + string(m[2])
	}
	return names, nil
}

// labImages builds what the lab's real nodes need and writes the images
// into bin/images; it returns the runtime's directory: Seine's image,
// seine-ovs, pause and CoreDNS (the cluster DNS every real-node lab with
// Seine installs). withTestImages adds agnhost and the upstream e2e suite's
// other images (make images).
func labImages(withTestImages bool) (runtimeDir string, err error) {
	set := nodeImageSet
	if withTestImages {
		set = allImageSet
	}
	return buildLabImages(set)
}

// imageSet is what buildLabImages writes into bin/images.
type imageSet int

const (
	// nodeImageSet: Seine, seine-ovs, pause, CoreDNS.
	nodeImageSet imageSet = iota
	// policyImageSet adds agnhost: the upstream suite's NetworkPolicy
	// specs run nothing else (make test's subset), and the demo's pods
	// (make lab, TestSeineOnRealNodes/demo).
	policyImageSet
	// allImageSet adds the upstream suite's other images (make images).
	allImageSet
)

// buildLabImages writes set into bin/images; it returns the runtime's
// directory.
func buildLabImages(set imageSet) (runtimeDir string, err error) {
	withTestImages := set == allImageSet
	if runtimeDir, err = labRuntime(); err != nil {
		return "", err
	}
	coredns, err := labCoreDNS()
	if err != nil {
		return "", err
	}
	var agnhost, porter string
	if set >= policyImageSet {
		if agnhost, porter, err = labAgnhost(); err != nil {
			return "", err
		}
	}
	start := time.Now()
	if err := run([]string{"CGO_ENABLED=0"}, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", "bin/pause", "./test/lab/images/pause"); err != nil {
		return "", err
	}
	// make images: the image's programs without symbol tables, about 40%
	// smaller. make test: the programs LabBin built (its other lab tests
	// run the same), which saves four links of about 10 s each.
	seineBin := "bin/linux"
	if withTestImages {
		seineBin = "bin/image"
		for _, prog := range []string{"seine-agent", "seine-cni", "seine-controller", "seinectl"} {
			if err := run([]string{"GOOS=linux", "GOARCH=amd64", "CGO_ENABLED=0"}, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", "bin/image/"+prog, "./services/"+prog); err != nil {
				return "", err
			}
		}
	}
	pauseName, agnhostName, err := upstreamImageNames()
	if err != nil {
		return "", err
	}
	names := images.Names{Pause: pauseName, Seine: seineImageName()}
	if set >= policyImageSet {
		names.Agnhost = agnhostName
	}
	_, err = images.Build("bin/images", images.Inputs{
		SeineBin: seineBin, Pause: "bin/pause", Agnhost: agnhost, CoreDNS: coredns, AgnhostPorter: porter, Names: names,
	}, func(format string, args ...any) { fmt.Printf(format+"\n", args...) })
	if err == nil && withTestImages {
		err = e2eImages(coredns)
	}
	if err == nil {
		fmt.Printf("images written to bin/images in %s\n", time.Since(start).Round(time.Second))
	}
	return runtimeDir, err
}

// seineImageName is SEINE_IMAGE when set (a release: the full reference),
// else empty (a dev tag from the binaries' hash).
func seineImageName() string { return os.Getenv("SEINE_IMAGE") }
