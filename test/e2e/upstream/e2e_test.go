package upstream

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"k8s.io/component-base/version"
	"k8s.io/kubernetes/test/e2e"
	"k8s.io/kubernetes/test/e2e/framework"
	"k8s.io/kubernetes/test/e2e/framework/config"
	"k8s.io/kubernetes/test/e2e/framework/testfiles"
	e2etestingmanifests "k8s.io/kubernetes/test/e2e/testing-manifests"

	// The feature and label constants, frozen before any spec is defined.
	_ "k8s.io/kubernetes/test/e2e/feature"

	// The specs: everything [sig-network] (Services, DNS, EndpointSlices,
	// proxy, conntrack, HostPort, NetworkPolicy through its netpol
	// package) and the granular pod-to-pod and node-to-pod checks. The e2e
	// package itself brings test/e2e/common, whose node and storage specs
	// are compiled in but never selected (see selection.txt).
	_ "k8s.io/kubernetes/test/e2e/common/network"
	_ "k8s.io/kubernetes/test/e2e/network"

	// What the upstream binary adds to every framework: a dump of the
	// namespace's events and pods when a spec fails, and the check after
	// each spec that every node is still Ready. The metrics grabber
	// (framework/metrics/init) is left out: it scrapes kubelets and the
	// scheduler, which says nothing about the network.
	_ "k8s.io/kubernetes/test/e2e/framework/debug/init"
	_ "k8s.io/kubernetes/test/e2e/framework/node/init"
	_ "k8s.io/kubernetes/test/utils/ktesting/format"
)

// TestMain registers and reads the suite's flags as upstream's e2e.test
// does (the framework's common and cluster flags, --version), then runs the
// specs through TestE2E.
func TestMain(m *testing.M) {
	showVersion := flag.Bool("version", false, "print the Kubernetes release the suite was built from and exit")
	config.CopyFlags(config.Flags, flag.CommandLine)
	framework.RegisterCommonFlags(flag.CommandLine)
	framework.RegisterClusterFlags(flag.CommandLine)
	flag.Parse()
	if *showVersion {
		fmt.Println(version.Get())
		os.Exit(0)
	}
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "e2e.test: unexpected arguments %q (flags only)\n", flag.Args())
		os.Exit(2)
	}
	// Specs that read manifests (ingress, a few Service specs) find them
	// embedded in the binary; no source tree is needed at run time.
	testfiles.AddFileSource(e2etestingmanifests.GetE2ETestingManifestsFS())
	// Exits for --list-images, --list-tests and --list-labels.
	framework.AfterReadingAllFlags(&framework.TestContext)
	os.Exit(m.Run())
}

// TestE2E runs the selected specs with Ginkgo: before them the suite's
// setup (every node schedulable, kube-system's pods and DaemonSets ready),
// after them its teardown.
func TestE2E(t *testing.T) {
	e2e.RunE2ETests(t)
}
