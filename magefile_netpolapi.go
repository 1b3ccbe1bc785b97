//go:build mage

// The conformance suite of sigs.k8s.io/network-policy-api (issue 15's last
// item, issue 16): its binary, built and cached like e2e.test, and a run of
// it against Seine on real nodes.

package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/magefile/mage/mg"

	"github.com/seine-cni/seine/test/lab/images"
	"github.com/seine-cni/seine/test/lab/upstream"
)

const (
	netpolAPIModule    = "test/e2e/netpolapi"
	netpolAPISelection = netpolAPIModule + "/selection.txt"
	netpolAPIOut       = "bin/netpol-api"
	netpolAPIRoot      = "TestConformance"
)

// NetpolAPIBinary builds netpolapi.test, the network-policy-api
// conformance suite (test/e2e/netpolapi), or finds it cached in
// ~/.cache/seine-lab, and prints its path.
func NetpolAPIBinary() error {
	dir, err := netpolAPIBinary()
	if err != nil {
		return err
	}
	fmt.Println(filepath.Join(dir, "netpolapi.test"))
	return nil
}

// netpolAPIBinary returns the cache directory holding netpolapi.test and
// base/ (the manifests it embeds, for the images they name). The build
// copies the module (go.mod, go.sum, its Go files) and the suite's
// conformance/base from the module cache into a scratch directory, leaves
// the SCTP servers out of base/manifests.yaml (upstream.WithoutSCTPServers:
// this kernel has none; base/dropped.txt lists them) and compiles the test
// there: //go:embed needs the files beside the package.
func netpolAPIBinary() (string, error) {
	inputs := []string{netpolAPIModule + "/go.mod", netpolAPIModule + "/go.sum", netpolAPIModule + "/conformance_test.go", netpolAPIModule + "/doc.go"}
	return cachedBuild("netpolapi", "controller-runtime and the suite; longer on a machine whose Go cache lacks client-go", inputs, "cgo=0",
		func(dir string) error {
			abs, err := filepath.Abs(dir)
			if err != nil {
				return err
			}
			src := filepath.Join(abs, "src")
			if err := os.MkdirAll(src, 0o755); err != nil {
				return err
			}
			defer os.RemoveAll(src)
			for _, f := range inputs {
				b, err := os.ReadFile(f)
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(src, filepath.Base(f)), b, 0o644); err != nil {
					return err
				}
			}
			cmd := exec.Command("go", "mod", "download", "-json", "sigs.k8s.io/network-policy-api")
			cmd.Dir = netpolAPIModule
			out, err := cmd.Output()
			if err != nil {
				return fmt.Errorf("go mod download sigs.k8s.io/network-policy-api: %w", err)
			}
			var mod struct{ Dir, Version string }
			if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
				return fmt.Errorf("go mod download sigs.k8s.io/network-policy-api: no directory in %s (%v)", out, err)
			}
			if err := copyTree(filepath.Join(mod.Dir, "conformance", "base"), filepath.Join(src, "base")); err != nil {
				return err
			}
			manifest := filepath.Join(src, "base", "manifests.yaml")
			b, err := os.ReadFile(manifest)
			if err != nil {
				return err
			}
			patched, dropped := upstream.WithoutSCTPServers(b)
			if len(dropped) == 0 {
				return fmt.Errorf("%s: no SCTP server to leave out (has the suite changed its manifests?)", manifest)
			}
			if err := os.WriteFile(manifest, patched, 0o644); err != nil {
				return err
			}
			fmt.Printf("network-policy-api %s: base/manifests.yaml without its SCTP servers (no SCTP in this kernel): %s\n", mod.Version, strings.Join(dropped, ", "))
			// The base manifests, for the images they name.
			if err := copyTree(filepath.Join(src, "base"), filepath.Join(abs, "base")); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(abs, "base", "dropped.txt"), []byte(strings.Join(dropped, "\n")+"\n"), 0o644); err != nil {
				return err
			}
			// CGO_ENABLED=0 and no -trimpath, as make test builds Seine's
			// packages: client-go and apimachinery of the same version come
			// from the Go cache where their dependencies match.
			fmt.Println("+ (cd " + src + ") CGO_ENABLED=0 go test -c -vet=off -o " + abs + "/netpolapi.test .")
			cmd = exec.Command("go", "test", "-c", "-vet=off", "-o", filepath.Join(abs, "netpolapi.test"), ".")
			cmd.Dir = src
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
			return cmd.Run()
		})
}

// copyTree copies the regular files under from into to (made writable:
// the module cache's are read-only).
func copyTree(from, to string) error {
	return filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o644)
	})
}

// NetpolAPI runs the network-policy-api conformance suite against Seine: a
// lab of 3 real nodes on its own state directory and ports, the upstream
// ClusterNetworkPolicy CRD Seine ships (installer/kubernetes/apiext/upstream)
// applied, Seine installed from seine.yml, then netpolapi.test with the
// suite's standard features (those of the standard-channel CRD Seine ships)
// less the tests selection.txt skips.
// It writes bin/netpol-api/results.md (every test: result, time, why) and,
// for a whole run, the same table into test/e2e/netpolapi/README.md between
// its results markers; it fails when a test failed. NETPOL_API_RUN (a regex
// of test short names) runs only those, which leaves the README alone. Run
// it in a lab slot of its own (SEINE_LAB_SLOT): it brings up a whole lab.
func NetpolAPI() error {
	mg.SerialDeps(Deps, LabBin)
	kube, err := labkube()
	if err != nil {
		return err
	}
	runtimeDir, err := buildLabImages(policyImageSet)
	if err != nil {
		return err
	}
	dir, err := netpolAPIBinary()
	if err != nil {
		return err
	}
	if err := netpolAPIImages(dir); err != nil {
		return err
	}
	f, err := os.Open(netpolAPISelection)
	if err != nil {
		return err
	}
	sel, err := upstream.ParseSelection(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", netpolAPISelection, err)
	}
	partial := os.Getenv("NETPOL_API_RUN")
	table, err := runNetpolAPI(kube, runtimeDir, filepath.Join(dir, "netpolapi.test"), sel, partial)
	if table != "" && partial == "" {
		if rerr := upstream.ReplaceSection(filepath.Join(netpolAPIModule, "README.md"), netpolAPIResultsBegin, upstream.ResultsEnd, table); rerr != nil {
			return errors.Join(err, rerr)
		}
	}
	return err
}

const netpolAPIResultsBegin = "<!-- results: written by go tool mage netpolAPI -->"

// netpolAPIImages adds to bin/images the agnhost images the suite's
// manifests name (agnhost:2.45 in v0.3.0), under those names: the lab's
// agnhost (the lab's release, whose connect, serve-hostname and porter
// commands the suite runs), as the lab has no registry to pull from. An
// image of another kind is an error naming it.
func netpolAPIImages(dir string) error {
	idx, err := images.ReadIndex("bin/images")
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, b := range idx.Images {
		have[b.Name] = true
	}
	re := regexp.MustCompile(`(?m)^\s*-?\s*image:\s*"?([^"\s]+)"?\s*$`)
	want := map[string]bool{}
	err = filepath.WalkDir(filepath.Join(dir, "base"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".yaml") {
			return err
		}
		b, err := os.ReadFile(p)
		for _, m := range re.FindAllSubmatch(b, -1) {
			want[string(m[1])] = true
		}
		return err
	})
	if err != nil {
		return err
	}
	agnhost, porter, err := labAgnhost()
	if err != nil {
		return err
	}
	coredns, err := labCoreDNS()
	if err != nil {
		return err
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range want {
			if !yield(n) {
				return
			}
		}
	})
	for i, name := range names {
		if have[name] {
			continue
		}
		repo, _, _ := strings.Cut(name, ":")
		if repo != "registry.k8s.io/e2e-test-images/agnhost" {
			return fmt.Errorf("the suite's manifests name image %s, which the lab does not build", name)
		}
		img, err := images.Agnhost(name, agnhost, coredns, porter)
		if err != nil {
			return err
		}
		if err := images.Add("bin/images", fmt.Sprintf("netpolapi-%d.tar", i), img, func(format string, args ...any) { fmt.Printf(format+"\n", args...) }); err != nil {
			return err
		}
	}
	return nil
}

// runNetpolAPI brings up 3 real nodes, applies the upstream CRD, installs
// Seine (no cluster DNS: the suite probes pod IPs), runs netpolapi.test
// through test2json, writes the results table into bin/netpol-api and
// returns it, and takes the lab down (also on failure).
func runNetpolAPI(kube, runtimeDir, bin string, sel *upstream.Selection, only string) (table string, err error) {
	// Ports apart from every other lab's: 15443/15379 plus 100 per slot.
	start := time.Now()
	state, down, err := upRealLab("netpol-api", "npapi", 15443, 15379, kube, runtimeDir, "bin/images")
	if err != nil {
		return "", err
	}
	defer down()
	kubeconfig := filepath.Join(state, "kubeconfig", "admin.conf")
	crds, err := filepath.Glob("installer/kubernetes/apiext/upstream/*.yaml")
	if err != nil || len(crds) == 0 {
		return "", fmt.Errorf("no CRD in installer/kubernetes/apiext/upstream (%v)", err)
	}
	for _, crd := range crds {
		if err := run(nil, kube, "kubectl", "--kubeconfig", kubeconfig, "apply", "--server-side", "-f", crd); err != nil {
			return "", err
		}
	}
	if err := run(nil, kube, "kubectl", "--kubeconfig", kubeconfig, "wait", "--for=condition=Established", "--timeout=2m", "crd/clusternetworkpolicies.policy.networking.k8s.io"); err != nil {
		return "", err
	}
	if err := run(nil, "bin/lab", "install-seine", "--state-dir", state, "--dns=false"); err != nil {
		return "", err
	}
	fmt.Printf("lab up, the upstream CRD and Seine installed in %s\n", time.Since(start).Round(time.Second))
	if err := os.MkdirAll(netpolAPIOut, 0o755); err != nil {
		return "", err
	}
	var skips []string
	for _, r := range sel.Rules {
		if r.Kind == upstream.Skip {
			skips = append(skips, "(?:"+r.Regex.String()+")")
		}
	}
	args := []string{"-test.timeout=90m", "-seine.skip=" + strings.Join(skips, "|")}
	if only != "" {
		args = append(args, "-test.run="+netpolAPIRoot+"/(?:"+only+")")
	}
	jsonOut := filepath.Join(netpolAPIOut, "gotest.json")
	out, err := os.Create(jsonOut)
	if err != nil {
		return "", err
	}
	// test2json runs the test binary (-test.v=test2json, as go test does)
	// and writes its events; each line goes to gotest.json, and the text
	// the tests print to our output as the run goes.
	t2j := exec.Command("go", append([]string{"tool", "test2json", "-t", "-p", "netpolapi", bin, "-test.v=test2json"}, args...)...)
	t2j.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	t2j.Stderr = os.Stderr
	events, err := t2j.StdoutPipe()
	if err != nil {
		out.Close()
		return "", err
	}
	fmt.Println("+ KUBECONFIG="+kubeconfig, strings.Join(t2j.Args, " "), ">", jsonOut)
	runStart := time.Now()
	if err := t2j.Start(); err != nil {
		out.Close()
		return "", err
	}
	sc := bufio.NewScanner(events)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		out.Write(append(sc.Bytes(), '\n'))
		var ev struct{ Action, Output string }
		if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Action == "output" {
			fmt.Print(ev.Output)
		}
	}
	runErr := t2j.Wait()
	out.Close()
	wall := time.Since(runStart).Round(time.Second)
	rf, err := os.Open(jsonOut)
	if err != nil {
		return "", err
	}
	results, err := upstream.GoTestResults(rf, netpolAPIRoot, sel)
	rf.Close()
	if err != nil {
		return "", fmt.Errorf("%w (netpolapi.test: %v)", err, runErr)
	}
	var b strings.Builder
	if err := upstream.WriteTable(&b, results); err != nil {
		return "", err
	}
	fmt.Fprintf(&b, "\nWall time of the run: %s (netpolapi.test), %s with the lab's bring-up; %s.\n",
		wall, time.Since(start).Round(time.Second), time.Now().UTC().Format("2006-01-02 15:04 MST"))
	if err := os.WriteFile(filepath.Join(netpolAPIOut, "results.md"), []byte(b.String()), 0o644); err != nil {
		return "", err
	}
	fmt.Printf("%s(table: %s/results.md)\n", b.String(), netpolAPIOut)
	for _, res := range results {
		if res.Failed() {
			return b.String(), fmt.Errorf("network-policy-api conformance: %s", upstream.Summary(results))
		}
	}
	if runErr != nil {
		return b.String(), fmt.Errorf("netpolapi.test: %w", runErr)
	}
	return b.String(), nil
}
