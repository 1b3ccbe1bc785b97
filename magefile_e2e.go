//go:build mage

// The upstream Kubernetes network e2e suite (issue 15): its binary, built
// and cached like the control plane, and what a run of it selects.

package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/magefile/mage/mg"

	"github.com/seine-cni/seine/test/lab/images"
	"github.com/seine-cni/seine/test/lab/upstream"
)

const (
	e2eModule    = "test/e2e/upstream"
	e2eSelection = e2eModule + "/selection.txt"
	e2eOut       = "bin/e2e-upstream"
	// e2eStore keeps every spec's last verdict and the runs that gave
	// them; the README's table is written from it (upstream.Store).
	e2eStore  = e2eModule + "/results.json"
	e2eReadme = e2eModule + "/README.md"
)

// E2EBinary builds e2e.test, the upstream network e2e suite of the lab's
// Kubernetes release (test/e2e/upstream), and the ginkgo CLI that runs it
// in parallel, or finds them cached in ~/.cache/seine-lab, and links
// bin/e2e.test and bin/ginkgo to them. kubectl is the lab's (bin/kubectl,
// the same release).
func E2EBinary() error {
	bin, err := e2eBinary()
	if err != nil {
		return err
	}
	ginkgo, err := e2eGinkgo()
	if err != nil {
		return err
	}
	fmt.Println(bin)
	fmt.Println(ginkgo)
	return nil
}

// e2eBinary returns the cached e2e.test. It is compiled as the control
// plane is (-trimpath, cgo as the environment has it, the same module
// versions), so the Kubernetes packages both link come from Go's build
// cache when labkube was built on this machine.
func e2eBinary() (string, error) {
	inputs := []string{e2eModule + "/go.mod", e2eModule + "/go.sum", e2eModule + "/e2e_test.go", e2eModule + "/doc.go"}
	dir, err := cachedBuild("e2e", "the suite's framework and specs; longer on a machine whose Go cache lacks the control plane's packages", inputs, "-vet=off "+labkubeLDFlags,
		func(dir string) error {
			abs, _ := filepath.Abs(filepath.Join(dir, "e2e.test"))
			// -vet=off: go test would vet the package, which first computes
			// vet facts for every package it imports, i.e. all of Kubernetes.
			fmt.Println("+ (cd "+e2eModule+") go test -c -vet=off -trimpath", "-ldflags="+labkubeLDFlags, "-o", abs)
			cmd := exec.Command("go", "test", "-c", "-vet=off", "-trimpath", "-ldflags="+labkubeLDFlags, "-o", abs, ".")
			cmd.Dir = e2eModule
			cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
			return cmd.Run()
		})
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "e2e.test")
	return bin, relink(bin, filepath.Join("bin", "e2e.test"))
}

// e2eGinkgo returns the cached ginkgo CLI of the version the e2e module
// requires (its go.mod and go.sum), built in that module. Ginkgo runs a
// suite's specs side by side only when its CLI drives the compiled suite:
// it starts the processes, hands out the specs and gathers one report.
func e2eGinkgo() (string, error) {
	inputs := []string{e2eModule + "/go.mod", e2eModule + "/go.sum"}
	dir, err := cachedBuild("ginkgo", "the ginkgo CLI the e2e module requires", inputs, "-trimpath",
		func(dir string) error {
			abs, _ := filepath.Abs(filepath.Join(dir, "ginkgo"))
			return goBuild(e2eModule, nil, "-mod=readonly", "-trimpath", "-o", abs, "github.com/onsi/ginkgo/v2/ginkgo")
		})
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "ginkgo")
	return bin, relink(bin, filepath.Join("bin", "ginkgo"))
}

// e2eDefaultProcs is how many Ginkgo processes make e2e-upstream runs the
// specs in when E2E_PROCS does not say: on this machine's 2 cores with a
// 3-node lab, E2E_SHARD=4/8 (20 specs, ~7.6 min of spec time) took 4m8s
// of e2e.test with 2, 3m6s with 3, 2m13s with 4 and 2m13s with 6
// (test/e2e/upstream/README.md).
const e2eDefaultProcs = 4

// e2eProcs reads E2E_PROCS (1: e2e.test alone, as before).
func e2eProcs() (int, error) {
	v := os.Getenv("E2E_PROCS")
	if v == "" {
		return e2eDefaultProcs, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("E2E_PROCS=%q: want a number of Ginkgo processes, 1 or more", v)
	}
	return n, nil
}

// E2EList shows what a run of the upstream suite would do, without a
// cluster: the images its release names (e2e.test --list-images) and, in
// bin/e2e-upstream/selected.md, every spec the selection focuses on, with
// the reason of each one it skips (a Ginkgo dry run).
func E2EList() error {
	bin, err := e2eBinary()
	if err != nil {
		return err
	}
	sel, err := readSelection()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(e2eOut, 0o755); err != nil {
		return err
	}
	images, err := exec.Command(bin, "--list-images").Output()
	if err != nil {
		return fmt.Errorf("e2e.test --list-images: %w", err)
	}
	if err := os.WriteFile(filepath.Join(e2eOut, "images.txt"), images, 0o644); err != nil {
		return err
	}
	fmt.Printf("images the release names (%s/images.txt):\n%s", e2eOut, images)
	results, err := e2eDryRun(bin, sel)
	if err != nil {
		return err
	}
	out, err := os.Create(filepath.Join(e2eOut, "selected.md"))
	if err != nil {
		return err
	}
	defer out.Close()
	if err := upstream.WriteTable(out, results); err != nil {
		return err
	}
	// In a dry run every spec that would run reads "passed".
	fmt.Printf("%s (dry run: passed = would run) in %s/selected.md\n", upstream.Summary(results), e2eOut)
	return nil
}

// e2eDryRun is a Ginkgo dry run of sel (no cluster, seconds): every spec
// the selection focuses on, sorted, "passed" when it would run and
// "skipped" with its reason when a skip rule takes it.
func e2eDryRun(bin string, sel *upstream.Selection) ([]upstream.Result, error) {
	if err := os.MkdirAll(e2eOut, 0o755); err != nil {
		return nil, err
	}
	report, _ := filepath.Abs(filepath.Join(e2eOut, "dryrun.json"))
	args := append([]string{"--provider=local", "--ginkgo.dry-run", "--ginkgo.no-color", "--ginkgo.json-report=" + report}, sel.Args()...)
	fmt.Println("+", bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Dir = e2eOut
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("e2e.test --ginkgo.dry-run: %w\n%s", err, out)
	}
	rf, err := os.Open(report)
	if err != nil {
		return nil, err
	}
	defer rf.Close()
	return upstream.Results(rf, sel)
}

// e2eImages writes the upstream suite's images besides agnhost and pause
// into bin/images (make images), under the names of the lab's release:
// busybox, glibc-dns-testing (with the lab's CoreDNS at /coredns), nginx
// (Debian's package, downloaded and unpacked, cached by its version) and
// regression-issue-74839 (built from the release's Go sources, cached).
func e2eImages(coredns string) error {
	names, err := releaseImages("BusyBox", "busybox", "GlibcDnsTesting", "glibc-dns-testing",
		"Nginx", "nginx", "RegressionIssue74839", "regression-issue-74839")
	if err != nil {
		return err
	}
	policy, err := exec.Command("apt-cache", "policy", "nginx").Output()
	if err != nil {
		return fmt.Errorf("apt-cache policy nginx: %w", err)
	}
	candidate := ""
	for _, line := range strings.Split(string(policy), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Candidate:"); ok {
			candidate = strings.TrimSpace(v)
		}
	}
	if candidate == "" || candidate == "(none)" {
		return fmt.Errorf("apt-cache policy nginx: no candidate version (apt-get update?)")
	}
	nginxDir, err := cachedBuild("nginx", "Debian's nginx package, seconds", nil, candidate, func(dir string) error {
		_, err := images.DebianPackage("nginx", dir)
		return err
	})
	if err != nil {
		return err
	}
	regression, err := cachedBuild("regression-issue-74839", "seconds", []string{e2eModule + "/go.mod", e2eModule + "/go.sum"}, "-s -w",
		func(dir string) error {
			abs, _ := filepath.Abs(dir)
			return goBuild(e2eModule, []string{"CGO_ENABLED=0"}, "-trimpath", "-ldflags=-s -w", "-o", abs+"/",
				"k8s.io/kubernetes/test/images/regression-issue-74839")
		})
	if err != nil {
		return err
	}
	_, err = images.BuildE2E("bin/images", images.E2EInputs{
		NginxRoot:                filepath.Join(nginxDir, "root"),
		RegressionIssue74839:     filepath.Join(regression, "regression-issue-74839"),
		CoreDNS:                  coredns,
		BusyBox:                  names["BusyBox"],
		GlibcDNSTesting:          names["GlibcDnsTesting"],
		Nginx:                    names["Nginx"],
		RegressionIssue74839Name: names["RegressionIssue74839"],
	}, func(format string, args ...any) { fmt.Printf(format+"\n", args...) })
	return err
}

// E2EUpstream runs the upstream network e2e suite against Seine: a lab of
// 3 real nodes on its own state directory, namespaces and ports, Seine
// installed from seine.yml (with the cluster DNS), then e2e.test with the
// selection's flags (selection.txt). The whole selection takes about two
// hours; a run may take a part of it, chosen from a dry run of the
// selection and the verdicts so far (upstream.ParsePart):
//
//	E2E_FOCUS=<regex>      the selected specs whose text it matches
//	E2E_ONLY=missing,failed,before=<run>
//	                       those without a verdict, whose last one failed,
//	                       or older than a run ("2026-12-07 03:55", or a prefix)
//	E2E_SHARD=k/n          the k-th of n shards of the whole selection
//
// Either way the run's verdicts are merged into results.json (each spec
// keeps the verdict of the last run that gave one) and the table in
// test/e2e/upstream/README.md is written again from it; the run's own
// table is bin/e2e-upstream/results.md. It fails when a spec failed. Run
// it in a lab slot of its own (SEINE_LAB_SLOT): it brings up a whole lab.
func E2EUpstream() error {
	mg.SerialDeps(Deps, LabBin)
	kube, err := labkube()
	if err != nil {
		return err
	}
	runtimeDir, err := labImages(true)
	if err != nil {
		return err
	}
	part, err := upstream.ParsePart(os.Getenv("E2E_FOCUS"), os.Getenv("E2E_ONLY"), os.Getenv("E2E_SHARD"))
	if err != nil {
		return err
	}
	t, err := readE2ETable()
	if err != nil {
		return err
	}
	runSel, specs := t.sel, 0
	if part.Whole() {
		for _, d := range t.dry {
			if d.Passed() { // a dry run passes what would run
				specs++
			}
		}
	} else {
		picked := part.Pick(t.dry, t.sel, t.store)
		if len(picked) == 0 {
			return fmt.Errorf("%s: no spec of the selection to run", part)
		}
		fmt.Printf("%s: %d specs\n", part, len(picked))
		runSel, specs = t.sel.WithSpecs(picked), len(picked)
	}
	r := upstreamRun{kube: kube, runtime: runtimeDir, images: "bin/images", e2e: t.bin, sel: runSel, out: e2eOut}
	if r.procs, err = e2eProcs(); err != nil {
		return err
	}
	if r.procs > 1 {
		if r.ginkgo, err = e2eGinkgo(); err != nil {
			return err
		}
	}
	results, rec, err := runUpstream(r)
	if rec.ID == "" {
		return err // no report: nothing to merge
	}
	rec.Part, rec.Specs = part.String(), specs
	n := t.store.Merge(rec, results)
	fmt.Printf("%d verdicts merged into %s\n", n, e2eStore)
	return errors.Join(err, t.write())
}

// E2ETable writes the table of test/e2e/upstream/README.md again from
// results.json, a dry run of the selection (no cluster) and the selection
// as it is now (its skips' reasons, its known causes).
func E2ETable() error {
	t, err := readE2ETable()
	if err != nil {
		return err
	}
	return t.write()
}

// e2eTable is what a run picks its specs from and the README's table is
// written from: the selection, a dry run of it (every spec it selects)
// and the verdicts so far.
type e2eTable struct {
	bin   string // e2e.test
	sel   *upstream.Selection
	dry   []upstream.Result
	store *upstream.Store
}

func readE2ETable() (*e2eTable, error) {
	t := &e2eTable{}
	var err error
	if t.bin, err = e2eBinary(); err != nil {
		return nil, err
	}
	if t.sel, err = readSelection(); err != nil {
		return nil, err
	}
	if t.store, err = upstream.ReadStore(e2eStore); err != nil {
		return nil, err
	}
	if t.dry, err = e2eDryRun(t.bin, t.sel); err != nil {
		return nil, err
	}
	return t, nil
}

// write drops the verdicts of specs the selection no longer runs, writes
// the store and the README's table.
func (t *e2eTable) write() error {
	var specs []string
	for _, d := range t.dry {
		specs = append(specs, d.Text)
	}
	for _, text := range t.store.Prune(specs) {
		fmt.Println("dropped the verdict of a spec the selection no longer runs:", text)
	}
	if err := t.store.Write(e2eStore); err != nil {
		return err
	}
	rows := t.store.Rows(t.dry, t.sel)
	var b strings.Builder
	if err := t.store.WriteMergedTable(&b, rows); err != nil {
		return err
	}
	fmt.Println(t.store.MergedSummary(rows))
	return upstream.ReplaceResults(e2eReadme, b.String())
}

// e2eSubsetFocus is make test's subset of the upstream suite: NetworkPolicy
// specs over TCP and UDP (default deny ingress and all, namespace
// selectors, ports, egress deny, an updated policy, allow-all, a named
// egress port), each probing every pod pair of the netpol matrix through
// Seine's policy and its service proxy (probes go to Service IPs). ~2.5 min
// of specs, ~4 min with the lab's bring-up (test/e2e/upstream/README.md).
const e2eSubsetFocus = `\[sig-network\] Netpol (\[LinuxOnly\] )?NetworkPolicy between server and client (using UDP )?should (` +
	`support a 'default-deny-ingress' policy|support a 'default-deny-all' policy|` +
	`enforce policy to allow traffic only from a different namespace, based on NamespaceSelector|` +
	`enforce policy based on Ports|deny egress from all pods in a namespace|enforce updated policy|` +
	`support allow-all policy|allow egress access on one named port) \[Feature:NetworkPolicy\]`

// e2eSubsetSpecs is how many specs e2eSubsetFocus selects: a run with
// fewer (a spec renamed upstream, a focus that no longer matches) fails.
const e2eSubsetSpecs = 10

// E2EUpstreamSubset is make test's step of the upstream suite: the
// NetworkPolicy specs of e2eSubsetFocus against Seine on 3 real nodes, as
// E2EUpstream runs them (results in bin/e2e-upstream-subset). It fails when
// a spec fails, is skipped or is missing, and when the lab cannot come up:
// it never skips. make test builds its inputs first and hands them over in
// SEINE_LAB_KUBE_BIN, SEINE_LAB_RUNTIME_BIN, SEINE_LAB_IMAGES (with agnhost)
// and SEINE_E2E_BIN; run alone, it builds them.
func E2EUpstreamSubset() error {
	r := upstreamRun{kube: os.Getenv("SEINE_LAB_KUBE_BIN"), runtime: os.Getenv("SEINE_LAB_RUNTIME_BIN"),
		images: os.Getenv("SEINE_LAB_IMAGES"), e2e: os.Getenv("SEINE_E2E_BIN"), out: e2eOut + "-subset"}
	if r.kube == "" || r.runtime == "" || r.images == "" || r.e2e == "" {
		mg.SerialDeps(Deps, LabBin)
		var err error
		if r.kube, err = labkube(); err != nil {
			return err
		}
		if r.runtime, err = buildLabImages(policyImageSet); err != nil {
			return err
		}
		r.images = "bin/images"
		if r.e2e, err = e2eBinary(); err != nil {
			return err
		}
	}
	sel, err := readSelection()
	if err != nil {
		return err
	}
	if r.sel, err = sel.WithFocus(e2eSubsetFocus); err != nil {
		return err
	}
	results, _, err := runUpstream(r)
	if err != nil {
		return err
	}
	var passed int
	for _, res := range results {
		if !res.Passed() {
			return fmt.Errorf("upstream e2e subset: %s %s (every spec of the subset must run and pass)", res.Text, res.State)
		}
		passed++
	}
	if passed != e2eSubsetSpecs {
		return fmt.Errorf("upstream e2e subset: %d specs passed, want %d (has the focus stopped matching?)", passed, e2eSubsetSpecs)
	}
	return nil
}

// upstreamRun is one run of e2e.test against a lab of its own.
type upstreamRun struct {
	kube, runtime, images, e2e string // labkube, the runtime's directory, bin/images, e2e.test
	sel                        *upstream.Selection
	out                        string // report.json, junit, results.md
	// procs > 1: ginkgo (the CLI) runs e2e.test in that many processes,
	// the specs handed out among them; process 1 writes the one report.
	procs  int
	ginkgo string
}

// runUpstream brings up 3 real nodes, installs Seine and the cluster DNS
// (lab install-seine), runs e2e.test with the selection's flags, writes
// the run's table into r.out/results.md and takes the lab down (also on
// failure). It returns the results and the run's record (its start, wall
// times, commit and load; no ID when e2e.test wrote no report), and fails
// when a spec failed.
func runUpstream(r upstreamRun) ([]upstream.Result, upstream.Run, error) {
	start := time.Now()
	rec := upstream.Run{Commit: seineCommit()}
	loadStart := loadAverage()
	state, down, err := upRealLab("e2e-upstream", "e2eup", 13443, 13379, r.kube, r.runtime, r.images)
	if err != nil {
		return nil, rec, err
	}
	defer down()
	if err := run(nil, "bin/lab", "install-seine", "--state-dir", state); err != nil {
		return nil, rec, err
	}
	fmt.Printf("lab up, Seine and the cluster DNS installed in %s\n", time.Since(start).Round(time.Second))
	if err := os.MkdirAll(r.out, 0o755); err != nil {
		return nil, rec, err
	}
	out, _ := filepath.Abs(r.out)
	kubectl, _ := filepath.Abs("bin/kubectl")
	report := filepath.Join(out, "report.json")
	os.Remove(report)
	args := append([]string{
		"--kubeconfig=" + filepath.Join(state, "kubeconfig", "admin.conf"),
		"--provider=local", "--kubectl-path=" + kubectl,
		"--node-os-distro=debian", "--dns-domain=cluster.local", "--allowed-not-ready-nodes=0",
		// The suite counts the nodes in its setup, which only Ginkgo's
		// process 1 runs: without the number the other processes skip
		// every spec that needs 2 nodes ("Requires at least 2 nodes (not
		// -1)"). upRealLab's 3; upstream's CI passes it too.
		"--num-nodes=3",
		"--report-dir=" + out, "--ginkgo.json-report=" + report,
		"--ginkgo.timeout=4h", "--ginkgo.no-color",
	}, r.sel.Args()...)
	name := r.e2e
	if r.procs > 1 {
		// The CLI gives each process its number and the address of the
		// CLI's server (--ginkgo.parallel.*); the flags after "--" go to
		// every process as they are, the report's path with them (only
		// process 1 writes it, from every process's specs). [Serial]
		// specs would run last on process 1; the selection skips them.
		// The CLI needs the binary's name to end in .test.
		args = append([]string{"--procs=" + strconv.Itoa(r.procs), "--timeout=4h", "--no-color", r.e2e, "--"}, args...)
		name = r.ginkgo
		rec.Procs = r.procs
	}
	fmt.Println("+", name, strings.Join(args, " "))
	runStart := time.Now()
	cmd := exec.Command(name, args...)
	cmd.Dir = out
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	runErr := cmd.Run()
	rec.E2E = upstream.Dur(time.Since(runStart).Round(time.Second))
	rf, err := os.Open(report)
	if err != nil {
		return nil, rec, fmt.Errorf("e2e.test wrote no report (%v): %w", runErr, err)
	}
	results, err := upstream.Results(rf, r.sel)
	rf.Close()
	if err != nil {
		return nil, rec, err
	}
	rec.ID = start.UTC().Format(upstream.RunID)
	rec.Total = upstream.Dur(time.Since(start).Round(time.Second))
	rec.Load = loadStart + " at the start, " + loadAverage() + " at the end"
	var b strings.Builder
	if err := upstream.WriteTable(&b, results); err != nil {
		return nil, rec, err
	}
	fmt.Fprintf(&b, "\nWall time of the run: %s (e2e.test), %s with the lab's bring-up; started %s UTC, Seine at %s, load %s.\n",
		time.Duration(rec.E2E).Round(time.Second), time.Duration(rec.Total).Round(time.Second), rec.ID, rec.Commit, rec.Load)
	if err := os.WriteFile(filepath.Join(out, "results.md"), []byte(b.String()), 0o644); err != nil {
		return nil, rec, err
	}
	fmt.Printf("%s\n(table: %s/results.md)\n", upstream.Summary(results), r.out)
	for _, res := range results {
		if res.Failed() {
			return results, rec, fmt.Errorf("upstream e2e: %s", upstream.Summary(results))
		}
	}
	if runErr != nil {
		return results, rec, fmt.Errorf("e2e.test: %w", runErr)
	}
	return results, rec, nil
}

// seineCommit is the checkout's commit, "+ changes" when files git tracks
// differ from it.
func seineCommit() string {
	head, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	c := strings.TrimSpace(string(head))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		c += " + changes"
	}
	return c
}

// loadAverage is the machine's 1-minute load average, as /proc/loadavg has it.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// upRealLab brings up a lab of 3 real nodes of its own, beside the lead's
// and the tests': state /run/seine-<name>-<n>, namespaces <prefix><n>-, the
// API and etcd ports apiPort and etcdPort plus 100*n, where n is
// SEINE_LAB_SLOT (0..9), as lab.Slot() shifts the tests' labs. down takes
// it down (an up that failed is taken down here).
func upRealLab(name, prefix string, apiPort, etcdPort int, kube, runtime, images string) (state string, down func(), err error) {
	slot, perr := strconv.Atoi(os.Getenv("SEINE_LAB_SLOT"))
	if perr != nil || slot < 0 || slot > 9 {
		slot = 0
	}
	state = fmt.Sprintf("/run/seine-%s-%d", name, slot)
	up := []string{"up", "--kubelet", "real", "--cni", "none", "--nodes", "3",
		"--kube-bin", kube, "--runtime-bin", runtime, "--images", images,
		"--state-dir", state, "--ns-prefix", fmt.Sprintf("%s%d-", prefix, slot),
		"--api-port", fmt.Sprint(apiPort + 100*slot), "--etcd-port", fmt.Sprint(etcdPort + 100*slot)}
	if err := run(nil, "bin/lab", up...); err != nil {
		run(nil, "bin/lab", "down", "--state-dir", state)
		return "", nil, err
	}
	return state, func() {
		if err := run(nil, "bin/lab", "down", "--state-dir", state); err != nil {
			fmt.Println("lab down:", err)
		}
	}, nil
}

// readSelection parses test/e2e/upstream/selection.txt.
func readSelection() (*upstream.Selection, error) {
	f, err := os.Open(e2eSelection)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sel, err := upstream.ParseSelection(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", e2eSelection, err)
	}
	return sel, nil
}
