//go:build mage

// Seine's build, written as mage targets. "make <target>" runs the same
// targets through "go tool mage" on a machine without mage installed.
//
// Targets install what they need: Debian packages through apt-get when a
// command is missing, Go modules through the module proxy.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/magefile/mage/mg"

	msi "github.com/seine-cni/seine/installer/windows/msi"
	"github.com/seine-cni/seine/test/ci/buildcache"
	"github.com/seine-cni/seine/test/ci/testrun"
)

// Default is what `mage` with no target runs.
var Default = Build

// debPackages maps a command the tests and the lab need to the Debian package
// that provides it.
var debPackages = map[string]string{
	"ovs-vswitchd":  "openvswitch-switch",
	"ovs-ofctl":     "openvswitch-common",
	"ip":            "iproute2",
	"nsenter":       "util-linux",
	"iptables":      "iptables",
	"iptables-save": "iptables",
	// kube-proxy's nftables mode (the lab's kube-proxy) drives nft.
	"nft":             "nftables",
	"ethtool":         "ethtool",
	"ping":            "iputils-ping",
	"conntrack":       "conntrack",
	"prometheus":      "prometheus", // the lab's metrics test (test/lab/prometheus_linux.go)
	"tcpdump":         "tcpdump",
	"iperf3":          "iperf3",
	"wixl":            "wixl",
	"msibuild":        "msitools",
	"osslsigncode":    "osslsigncode",
	"openssl":         "openssl",
	"shellcheck":      "shellcheck",
	"systemd-analyze": "systemd",
	// Copied into the lab's images (test/lab/images) with their libraries.
	"busybox":    "busybox-static",
	"curl":       "curl",
	"dig":        "bind9-dnsutils",
	"nc.openbsd": "netcat-openbsd",
	"bash":       "bash",
	"wget":       "wget", // agnhost's wget: busybox's crashes on -T
}

// Deps installs the Debian packages whose commands are missing.
func Deps() error {
	var missing []string
	seen := map[string]bool{}
	for cmd, pkg := range debPackages {
		if _, err := exec.LookPath(cmd); err == nil || seen[pkg] {
			continue
		}
		seen[pkg] = true
		missing = append(missing, pkg)
	}
	if len(missing) == 0 {
		return nil
	}
	sort.Strings(missing)
	fmt.Println("installing Debian packages:", strings.Join(missing, " "))
	if err := run(nil, "apt-get", "update", "-q"); err != nil {
		return err
	}
	env := []string{"DEBIAN_FRONTEND=noninteractive"}
	return run(env, "apt-get", append([]string{"install", "-y", "-q", "--no-install-recommends"}, missing...)...)
}

// binaries lists the commands Seine ships: every directory under services/
// with a main package, plus the lab CLI.
func binaries() []string {
	dirs, _ := filepath.Glob("services/*")
	var out []string
	for _, d := range dirs {
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			out = append(out, "./"+d)
		}
	}
	return out
}

// Build compiles every binary for linux and windows into bin/<goos>/ (with
// -trimpath: release builds), and the lab CLI into bin/lab.
func Build() error {
	for _, goos := range []string{"linux", "windows"} {
		if err := buildServices(goos, "-trimpath"); err != nil {
			return err
		}
	}
	return run(goEnv, "go", "build", "-o", "bin/lab", "./test/lab/cmd/lab")
}

// goEnv is the build configuration of every linux build of the module that
// make test and the lab run: the lab CLI, Seine's binaries, the tests and
// the programs tests build. Static binaries (no cgo), as Seine's image
// needs; one configuration, so Go compiles each dependency once: with the
// tests on cgo, the binaries without it and the cross-OS build test without
// it, a fresh machine compiled client-go and the rest three times (about 6
// CPU-minutes each).
var goEnv = []string{"CGO_ENABLED=0"}

// buildServices builds the binaries under services/ for one OS into
// bin/<goos>/, in one go build (its links run in parallel).
func buildServices(goos string, flags ...string) error {
	env := append([]string{"GOOS=" + goos, "GOARCH=amd64"}, goEnv...)
	args := append(append([]string{"build"}, flags...), "-o", filepath.Join("bin", goos)+string(filepath.Separator))
	return run(env, "go", append(args, binaries()...)...)
}

// Lint checks formatting and runs go vet for linux and windows.
func Lint() error {
	out, err := exec.Command("gofmt", "-l", ".").Output()
	if err != nil {
		return err
	}
	if s := strings.TrimSpace(string(out)); s != "" {
		return fmt.Errorf("gofmt would change:\n%s", s)
	}
	for _, goos := range []string{"linux", "windows"} {
		if err := run([]string{"GOOS=" + goos}, "go", "vet", "./..."); err != nil {
			return fmt.Errorf("go vet (GOOS=%s): %w", goos, err)
		}
	}
	return nil
}

// KubeBinaries builds the lab's Kubernetes binary (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, kubelet, kube-proxy and kubectl
// in one) from the Go module proxy, or reuses the cached build for the same
// sources, and links bin/kubectl to it.
func KubeBinaries() error {
	_, err := labkube()
	return err
}

// linkKubectl makes bin/kubectl a link to the lab's Kubernetes binary, which
// runs kubectl (of the lab's release) when invoked by that name.
func linkKubectl(kube string) error {
	link := filepath.Join("bin", "kubectl")
	if target, err := os.Readlink(link); err == nil && target == kube {
		return nil
	}
	return relink(kube, link)
}

// labkubeLDFlags strip the binary and stamp the Kubernetes version its
// components report (kubectl version, node and /version).
const labkubeLDFlags = "-s -w" +
	" -X k8s.io/component-base/version.gitVersion=v1.37.2" +
	" -X k8s.io/component-base/version.gitMajor=1" +
	" -X k8s.io/component-base/version.gitMinor=37" +
	" -X k8s.io/component-base/version.gitTreeState=clean"

// labkube returns the path of the cached control-plane binary, building it
// when its sources changed. The cache key is a hash of the module's files.
func labkube() (string, error) {
	h := sha256.New()
	for _, f := range []string{"test/lab/k8s/go.mod", "test/lab/k8s/go.sum", "test/lab/k8s/main.go"} {
		fh, err := os.Open(f)
		if err != nil {
			return "", err
		}
		io.Copy(h, fh)
		fh.Close()
	}
	io.WriteString(h, runtime.Version()+labkubeLDFlags)
	cache := os.Getenv("SEINE_LAB_CACHE")
	if cache == "" {
		home, _ := os.UserCacheDir()
		cache = filepath.Join(home, "seine-lab")
	}
	bin := filepath.Join(cache, "labkube-"+hex.EncodeToString(h.Sum(nil))[:16])
	_, err := buildcache.Ensure(bin, waitingFor("the lab's Kubernetes control plane"), func(tmp string) error {
		fmt.Println("building the lab's Kubernetes control plane (first time: several minutes)")
		abs, _ := filepath.Abs(tmp)
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags="+labkubeLDFlags, "-o", abs, ".")
		cmd.Dir = "test/lab/k8s"
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		return cmd.Run()
	})
	if err != nil {
		return "", fmt.Errorf("build labkube: %w", err)
	}
	return bin, linkKubectl(bin)
}

// LabBin builds the lab CLI, Seine's linux binaries (bin/linux: seine-agent
// and seine-cni run in the lab's nodes) and the reference CNI plugins (ptp,
// host-local, loopback) from their own module, test/lab/cniplugins.
func LabBin() error {
	if err := run(goEnv, "go", "build", "-o", "bin/lab", "./test/lab/cmd/lab"); err != nil {
		return err
	}
	if err := buildServices("linux"); err != nil {
		return err
	}
	out, _ := filepath.Abs("bin/cni")
	cmd := exec.Command("go", "build", "-o", out+"/",
		"github.com/containernetworking/plugins/plugins/main/ptp",
		"github.com/containernetworking/plugins/plugins/ipam/host-local",
		"github.com/containernetworking/plugins/plugins/main/loopback")
	cmd.Dir = "test/lab/cniplugins"
	cmd.Env = append(os.Environ(), goEnv...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build CNI plugins: %w", err)
	}
	return nil
}

// Lab brings up the lab cluster on real nodes (3; LAB_NODES overrides):
// kubelet, containerd and runc per node, the images built locally (the
// runtime, CoreDNS and agnhost cached), Seine installed from seine.yml
// with the cluster DNS (bin/lab install-seine), then the demo through the
// Kubernetes API (bin/lab demo). The kubelet stand-in (bin/lab up without
// --kubelet real) stays for the fast tests.
func Lab() error {
	mg.SerialDeps(Deps, LabBin)
	kube, err := labkube()
	if err != nil {
		return err
	}
	if _, err := os.Stat("/run/seine-lab/lab.json"); err == nil {
		fmt.Println("the lab is already up (make lab-down removes it); running the demo on it")
		return run(nil, "bin/lab", "demo")
	}
	runtimeDir, err := buildLabImages(policyImageSet)
	if err != nil {
		return err
	}
	args := []string{"up", "--kube-bin", kube, "--kubelet", "real", "--cni", "none", "--runtime-bin", runtimeDir, "--images", "bin/images"}
	if n := os.Getenv("LAB_NODES"); n != "" {
		args = append(args, "--nodes", n)
	}
	if err := run(nil, "bin/lab", args...); err != nil {
		return err
	}
	if err := run(nil, "bin/lab", "install-seine"); err != nil {
		return err
	}
	return run(nil, "bin/lab", "demo")
}

// LabDown tears the lab down and leaves nothing behind.
func LabDown() error {
	mg.Deps(LabBin)
	return run(nil, "bin/lab", "down")
}

// Test runs every test: unit, integration against real OVS and netlink, the
// lab end to end (pod networking, NetworkPolicy), the import rules, the
// windows cross-build, the MSI round trip and the Windows tests under Wine.
// Every step runs even when one before it failed; the summary at the end
// lists each step's time and result and every skipped test with its
// reason, and fails on a skip .ci/allowed-skips does not explain.
func Test() error {
	mg.SerialDeps(Deps, LabBin)
	kube, err := labkube()
	if err != nil {
		return err
	}
	env := labEnv(kube)
	slotA, slotB, err := streamSlots()
	if err != nil {
		return err
	}
	goTests, err := goTestSteps(env, slotA, slotB)
	if err != nil {
		return err
	}
	// The vet lane (go vet for linux, then the cross-build, vet and the
	// tests under Wine for windows: CPU-bound on a fresh machine) runs
	// beside go test, whose labs mostly wait. go vet runs every analyzer,
	// in parallel; go test's own vet (a subset) is off below, as under
	// -p 1 it would analyse the module's 1400 dependencies one at a time
	// on a fresh machine.
	windows := slices.Concat([]testrun.Step{
		{Name: "linux vet", Argv: []string{"go", "vet", "./..."}, Env: goEnv},
		{Name: "windows build", Argv: []string{"go", "build", "./..."}, Env: []string{"GOOS=windows"}},
		{Name: "windows vet", Argv: []string{"go", "vet", "./..."}, Env: []string{"GOOS=windows"}},
	}, wineSteps())
	for k := range windows {
		windows[k].Group, windows[k].Lane = "tests", "vet"
	}
	return runSteps(slices.Concat(windows, goTests))
}

// goTestSteps are make test's go test, the upstream subset and the short
// benchmarks, in lanes of the group "tests" (the Windows lane runs beside
// them). go test runs as two lanes, each one package at a time (-p 1: the
// privileged tests create namespaces, OVS instances and whole clusters; on
// 2 cores they are more reliable one package at a time) in a lab slot of
// its own (labStreams): the stand-in lab suite, the real-node labs (once
// the node build in a third lane ended), the upstream subset and the
// benchmarks; every other package. The labs mostly wait, so two overlap at
// little cost. SEINE_TEST_STREAMS=1 runs it all in one lane instead.
func goTestSteps(env []string, slotA, slotB string) ([]testrun.Step, error) {
	goTest := []string{"go", "test", "-json", "-p", "1", "-count=1", "-vet=off", "-timeout", "60m"}
	// Each step's Env is a new slice: appended to env itself, steps share
	// its spare capacity and each sees the last step's SEINE_LAB_SLOT (both
	// streams' labs took one slot).
	with := func(extra ...string) []string { return slices.Concat(env, extra) }
	// What the real-node tests and the upstream subset need (the
	// container runtime, CoreDNS, agnhost, e2e.test, the images: about 7
	// minutes on a fresh machine, seconds once cached) is built in a lane
	// of its own, beside the tests that need none of it.
	nodes := testrun.Step{Name: "node build", Lane: "nodes", Argv: []string{"go", "tool", "mage", "testNodeBuild"}}
	nodeEnv := nodeTestEnv()
	upstream := testrun.Step{Name: "upstream e2e (NetworkPolicy subset)", Lane: "labs", After: nodes.Name,
		Env: with(append(nodeEnv, "SEINE_LAB_SLOT="+slotA)...), Argv: []string{"go", "tool", "mage", "e2eUpstreamSubset"}}
	// Every benchmark once in short mode (smaller sizes, fewest rounds),
	// so a broken benchmark fails the build. It checks their code, not
	// their targets: numbers measured on a loaded CI machine mean nothing.
	// They come after the upstream subset, in the lab lane: on a fresh
	// machine the other lane, which compiles most of the test binaries,
	// took 34m42s without them, the lab lane 28m54s with them.
	bench := testrun.Step{Name: "benchmarks (short)", Tests: "go", Lane: "labs", Env: with("SEINE_LAB_SLOT=" + slotA),
		Argv: []string{"go", "test", "-json", "-p", "1", "-count=1", "-short", "-run", "^$", "-bench", ".", "-benchtime", "1x", "-timeout", "30m", "./test/bench/..."}}
	var tests []testrun.Step
	if os.Getenv("SEINE_TEST_STREAMS") == "1" {
		// One lane: the node build, every package, the upstream subset,
		// the benchmarks.
		nodes.Lane, upstream.After = "labs", ""
		tests = []testrun.Step{nodes,
			{Name: "go test", Tests: "go", Lane: "labs", Env: with(append(nodeEnv, "SEINE_LAB_SLOT="+slotA)...), Argv: append(goTest, "./...")},
			upstream, bench}
	} else {
		standIn, realNodes, rest, err := labStreams()
		if err != nil {
			return nil, err
		}
		tests = []testrun.Step{nodes,
			{Name: "go test (labs)", Tests: "go", Lane: "labs", Env: with("SEINE_LAB_SLOT=" + slotA), Argv: slices.Concat(goTest, standIn)},
			{Name: "go test (real nodes)", Tests: "go", Lane: "labs", After: nodes.Name, Env: with(append(nodeEnv, "SEINE_LAB_SLOT="+slotA)...), Argv: slices.Concat(goTest, realNodes)},
			upstream,
			{Name: "go test", Tests: "go", Lane: "rest", Env: with("SEINE_LAB_SLOT=" + slotB), Argv: slices.Concat(goTest, rest)},
			bench}
	}
	for k := range tests {
		tests[k].Group = "tests"
	}
	return tests, nil
}

// The packages of make test's first go test stream: the longest lab suite
// (about 9 of the 30 minutes the packages took one at a time), then every
// real-node lab (test/lab: they need the node build, and never run at the
// same time as each other; the upstream subset comes after them in the
// same slot). Every other package is in the second stream.
const (
	standInPackage   = module + "/test/e2e"
	realNodesPackage = module + "/test/lab"
)

// labStreams splits the module's packages into make test's go test runs:
// the stand-in lab suite, the real-node labs, the rest.
func labStreams() (standIn, realNodes, rest []string, err error) {
	cmd := exec.Command("go", "list", "./...")
	cmd.Env = append(os.Environ(), goEnv...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("go list ./...: %w", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		switch pkg {
		case standInPackage:
			standIn = append(standIn, pkg)
		case realNodesPackage:
			realNodes = append(realNodes, pkg)
		default:
			rest = append(rest, pkg)
		}
	}
	if len(standIn) != 1 || len(realNodes) != 1 {
		return nil, nil, nil, fmt.Errorf("go list ./... lists neither or not both of %s and %s", standInPackage, realNodesPackage)
	}
	return standIn, realNodes, rest, nil
}

// streamSlots are the lab slots of make test's two streams: the one make
// test was given (SEINE_LAB_SLOT, 0 when unset: the labs' own ports) and
// that one plus 3, so that two make tests in slots 1 and 2 never collide.
func streamSlots() (a, b string, err error) {
	n := 0
	if v := os.Getenv("SEINE_LAB_SLOT"); v != "" {
		if n, err = strconv.Atoi(v); err != nil || n < 0 || n > 6 {
			return "", "", fmt.Errorf("SEINE_LAB_SLOT=%q: make test needs 0 to 6 (its second stream takes that plus 3)", v)
		}
	}
	return strconv.Itoa(n), strconv.Itoa(n + 3), nil
}

const (
	module       = "github.com/seine-cni/seine"
	allowedSkips = ".ci/allowed-skips"
)

// runSteps runs every step through testrun.RunSteps (their summary last,
// where the tail of a CI log shows it) with the skips .ci/allowed-skips
// explains.
func runSteps(steps []testrun.Step) error {
	f, err := os.Open(allowedSkips)
	if err != nil {
		return err
	}
	allow, err := testrun.ParseAllowlist(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", allowedSkips, err)
	}
	if err := testrun.RunSteps(steps, allow, module, os.Stdout); err != nil {
		return fmt.Errorf("make test %w", err)
	}
	return nil
}

// windowsTestPackages are the packages whose Windows test binaries pass under
// Wine (see test/windows/README.md for what Wine cannot run).
var windowsTestPackages = []string{"./ovs/internal/winpipe", "./ovs/ovsdb", "./platform/...", "./core/pipeline", "./core/agent", "./core/fqdn", "./core/flowexport", "./core/inventory", "./core/policystats", "./windows", "./services/seinectl", "./installer/kubernetes/manifest"}

// windowsPipePackages have Windows-only named-pipe tests (every test with
// Pipe in its name, but not Pipeline: windowsPipeTests) beside tests Wine
// cannot run (AF_UNIX sockets, private OVS daemons): only the former run.
var (
	windowsPipePackages = []string{"./ovs/openflow", "./ovs/appctl"}
	windowsPipeTests    = "Pipe([^l]|$)"
)

// wineTest is the command line of winetest -json with args.
func wineTest(args ...string) []string {
	return append([]string{"go", "run", "./test/windows/cmd/winetest", "-json"}, args...)
}

// MSI builds Seine's Windows installer, bin/seine.msi, with wixl; it is
// signed with osslsigncode when SEINE_SIGN_CERT and SEINE_SIGN_KEY name PEM
// files (SEINE_SIGN_TIMESTAMP_URL adds a timestamp). SEINE_VERSION is the
// product version, major.minor.build (default 0.0.0).
func MSI() error {
	mg.Deps(Deps)
	o := msi.Options{
		Version: os.Getenv("SEINE_VERSION"),
		GoFlags: []string{"-trimpath"},
		Logger:  slog.New(slog.NewTextHandler(os.Stderr, nil)),
	}
	if cert, key := os.Getenv("SEINE_SIGN_CERT"), os.Getenv("SEINE_SIGN_KEY"); cert != "" || key != "" {
		o.Sign = &msi.Signing{Cert: cert, Key: key, TimestampURL: os.Getenv("SEINE_SIGN_TIMESTAMP_URL")}
	}
	return msi.BuildMSI(context.Background(), "bin/seine.msi", o)
}

// WindowsTest builds the Windows test binaries and runs them under Wine,
// installing wine and MinGW with apt-get when missing: make test's two
// Wine steps, with the same summary and skip check.
func WindowsTest() error {
	return runSteps(wineSteps())
}

// wineSteps are the steps of make test that run Windows test binaries
// under Wine.
func wineSteps() []testrun.Step {
	return []testrun.Step{
		{Name: "wine", Tests: "wine", Argv: wineTest(windowsTestPackages...)},
		{Name: "wine: pipe dialers", Tests: "wine", Argv: wineTest(append([]string{"-run", windowsPipeTests}, windowsPipePackages...)...)},
	}
}

// Bench runs the benchmarks under test/bench (the lab ones bring up a lab)
// and prints their comparisons: each measures Seine and its baseline in
// the same run, in several rounds of alternating order, and prints min and
// median of each side and their ratio (test/bench/README.md).
// SEINE_BENCH_ROUNDS overrides the number of rounds.
func Bench() error {
	mg.SerialDeps(Deps, LabBin)
	kube, err := labkube()
	if err != nil {
		return err
	}
	env := labEnv(kube)
	return run(env, "go", "test", "-p", "1", "-count=1", "-v", "-run", "^$", "-bench", ".", "-benchtime", "1x", "-timeout", "3h", "./test/bench/...")
}

// labEnv points the tests that bring up a lab at the programs LabBin built:
// the control plane, the lab CLI, Seine's linux binaries and the reference
// CNI plugins; and builds the tests as LabBin built those (goEnv).
func labEnv(kube string) []string {
	abs, _ := filepath.Abs("bin")
	return append([]string{"SEINE_LAB_KUBE_BIN=" + kube, "SEINE_LAB_BIN=" + filepath.Join(abs, "lab"),
		"SEINE_LAB_SEINE_BIN=" + filepath.Join(abs, "linux"), "SEINE_LAB_CNI_BIN=" + filepath.Join(abs, "cni")}, goEnv...)
}

func run(env []string, name string, args ...string) error {
	fmt.Println("+", strings.Join(env, " "), name, strings.Join(args, " "))
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return nil
}
