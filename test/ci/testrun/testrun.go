// Package testrun reads the test2json events of `go test -json` (and of
// winetest -json, which runs Windows test binaries under Wine) and keeps
// what a person reads: one line per package, the whole output of every
// failed test, build errors, anything that is not an event. It collects the
// skipped tests with their reasons, so `make test` can list them at the end
// and fail on a skip its allowlist (.ci/allowed-skips, see allowlist.go)
// does not explain.
package testrun

import (
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"
)

// event is one line of test2json output (go doc test2json).
type event struct {
	Time       time.Time
	Action     string
	Package    string
	Test       string
	Elapsed    float64
	Output     string
	ImportPath string // build-output and build-fail
}

// Skip is a test that skipped.
type Skip struct {
	Step    string // the step of `make test` that ran it ("go", "wine", ...)
	Package string // import path
	Test    string
	Reason  string // what the test printed before skipping (its t.Skip message)
}

func (s Skip) String() string {
	return fmt.Sprintf("%s %s %s: %s", s.Step, s.Package, s.Test, s.Reason)
}

// Result sums up one run.
type Result struct {
	Packages int       // packages that ran tests
	Failed   []string  // failed tests ("pkg TestX") and packages ("pkg")
	Failures []Failure // the same, each with its whole output
	Skips    []Skip
}

// Failure is a failed test (or package) and its whole output.
type Failure struct {
	Name   string // "pkg TestX", "pkg TestX (never finished)" or "pkg"
	Output string
}

// Filter turns a stream of test2json events into readable output. Write it
// the command's standard output; call Close at the end.
type Filter struct {
	step string
	out  io.Writer

	mu      sync.Mutex
	partial []byte
	buf     map[[2]string]*output // (package, test) -> its output so far
	seq     int
	res     Result
}

// NewFilter writes the readable part of step's events to out.
func NewFilter(step string, out io.Writer) *Filter {
	return &Filter{step: step, out: out, buf: map[[2]string]*output{}}
}

// output is a test's output so far, and when it began (for ordering).
type output struct {
	strings.Builder
	seq int
}

func (f *Filter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.partial = append(f.partial, p...)
	for {
		i := strings.IndexByte(string(f.partial), '\n')
		if i < 0 {
			break
		}
		f.line(string(f.partial[:i]))
		f.partial = f.partial[i+1:]
	}
	return len(p), nil
}

// Close handles a last line without a newline and returns the result.
func (f *Filter) Close() Result {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.partial) > 0 {
		f.line(string(f.partial))
		f.partial = nil
	}
	// Tests that never ended, in packages that never ended either (the
	// command died): failures.
	for _, pkg := range f.packages() {
		fmt.Fprint(f.out, f.unfinished(pkg, true))
	}
	return f.res
}

// packages are the packages with output not yet shown.
func (f *Filter) packages() []string {
	var out []string
	for k := range f.buf {
		if !slices.Contains(out, k[0]) {
			out = append(out, k[0])
		}
	}
	slices.Sort(out)
	return out
}

// unfinished handles the tests of pkg that began but never ended, in the
// order they began, when pkg ends. A benchmark that ran has no end event
// (test2json reports only a failed or skipped one): its output (results,
// logged ratios) is returned. A test without one failed when its package
// failed (its binary died: a panic, a timeout, os.Exit, and go test
// reported only the package); in a passing package (test2json attributing
// output to a name that never ends) it is only shown.
func (f *Filter) unfinished(pkg string, pkgFailed bool) string {
	var keys [][2]string
	for k := range f.buf {
		if k[0] == pkg && k[1] != "" {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b [2]string) int { return f.buf[a].seq - f.buf[b].seq })
	var bench strings.Builder
	for _, k := range keys {
		out := f.take(k)
		switch {
		case strings.HasPrefix(k[1], "Benchmark"):
			bench.WriteString(out)
		case pkgFailed:
			fmt.Fprintf(f.out, "--- NEVER FINISHED: %s %s\n", k[0], k[1])
			f.failed(k[0]+" "+k[1]+" (never finished)", out)
		default:
			fmt.Fprintf(f.out, "%s %s (no end event):\n%s", k[0], k[1], out)
		}
	}
	return bench.String()
}

// failed records a failure and shows its whole output.
func (f *Filter) failed(name, out string) {
	f.res.Failed = append(f.res.Failed, name)
	f.res.Failures = append(f.res.Failures, Failure{Name: name, Output: out})
	fmt.Fprint(f.out, out)
	if out != "" && !strings.HasSuffix(out, "\n") {
		fmt.Fprintln(f.out)
	}
}

func (f *Filter) line(l string) {
	var e event
	if !strings.HasPrefix(l, "{") || json.Unmarshal([]byte(l), &e) != nil || e.Action == "" {
		fmt.Fprintln(f.out, l) // not an event: go test's own messages, winetest's
		return
	}
	key := [2]string{e.Package, e.Test}
	switch e.Action {
	case "build-output":
		fmt.Fprint(f.out, e.Output)
	case "output":
		b := f.buf[key]
		if b == nil {
			f.seq++
			b = &output{seq: f.seq}
			f.buf[key] = b
		}
		b.WriteString(e.Output)
	case "skip":
		out := f.take(key)
		if e.Test == "" {
			return // a package without tests
		}
		f.res.Skips = append(f.res.Skips, Skip{Step: f.step, Package: e.Package, Test: e.Test, Reason: skipReason(out)})
	case "pass":
		out := f.take(key)
		if e.Test == "" {
			fmt.Fprint(f.out, f.unfinished(e.Package, false))
			f.res.Packages++
			fmt.Fprintln(f.out, summaryLine(out, "ok  \t"+e.Package+"\t("+f.step+")"))
		}
	case "fail":
		out := f.take(key)
		if e.Test == "" {
			bench := f.unfinished(e.Package, true)
			f.res.Packages++
			f.failed(e.Package, bench+out)
		} else {
			f.failed(e.Package+" "+e.Test, out)
		}
	}
}

func (f *Filter) take(key [2]string) string {
	b := f.buf[key]
	delete(f.buf, key)
	if b == nil {
		return ""
	}
	return b.String()
}

// summaryLine is go test's "ok  pkg  1.2s" line in a package's own output.
func summaryLine(out, fallback string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "ok  ") {
			return l
		}
	}
	return fallback
}

// skipReason is a skipped test's output without the framing lines.
func skipReason(out string) string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- SKIP") {
			continue
		}
		lines = append(lines, t)
	}
	return strings.Join(lines, " | ")
}

// Run runs cmd (a go test -json or winetest -json command line) with its
// standard output through a Filter and its standard error to out.
func Run(step string, cmd *exec.Cmd, out io.Writer) (Result, error) {
	f := NewFilter(step, out)
	cmd.Stdout, cmd.Stderr = f, out
	err := cmd.Run()
	res := f.Close()
	if err == nil && len(res.Failed) > 0 {
		err = fmt.Errorf("%d failed", len(res.Failed))
	}
	return res, err
}
