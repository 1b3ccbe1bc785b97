package upstream

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// The network-policy-api conformance suite (test/e2e/netpolapi) is a Go
// test, not a Ginkgo suite: its results come from `go test -json` events
// (test2json), read here into the same Results the table is written from.

// testEvent is one line of `go test -json` (cmd/test2json).
type testEvent struct {
	Action  string
	Test    string
	Elapsed float64 // seconds, on pass/fail/skip
	Output  string
}

// GoTestResults reads the `go test -json` output of a run of root (the
// top-level test, "TestConformance") and returns one Result per leaf test
// below it: a conformance test with subtests gives a row per subtest, named
// "<test>: <subtest>" with test2json's underscores turned back into spaces.
// A test root ran but that never ended (the run was stopped) is
// "interrupted". Skipped tests get the selection's reason when a skip rule
// names them (Decide on the test's short name), else their own skip
// message; failures get the cause of the first known rule matching the
// row's name, then the first line the test logged with "FAILED" or
// "Error" in it. A failure of root itself (its setup: the base pods never
// Ready) is a row of its own.
func GoTestResults(r io.Reader, root string, sel *Selection) ([]Result, error) {
	tests := map[string]*goTest{}
	var order []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	sawRoot := false
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue // build output around the events
		}
		var ev testEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return nil, fmt.Errorf("go test -json line %d: %w", n, err)
		}
		if ev.Test != root && !strings.HasPrefix(ev.Test, root+"/") {
			continue
		}
		sawRoot = true
		tt := tests[ev.Test]
		if tt == nil {
			tt = &goTest{name: ev.Test, leaf: true}
			tests[ev.Test] = tt
			order = append(order, ev.Test)
			if i := strings.LastIndexByte(ev.Test, '/'); i >= 0 {
				if parent := tests[ev.Test[:i]]; parent != nil {
					parent.leaf = false
				}
			}
		}
		switch ev.Action {
		case "pass", "fail", "skip":
			tt.state = map[string]string{"pass": "passed", "fail": "failed", "skip": "skipped"}[ev.Action]
			tt.elapsed = time.Duration(ev.Elapsed * float64(time.Second))
		case "output":
			tt.output = append(tt.output, strings.TrimRight(ev.Output, "\n"))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !sawRoot {
		return nil, fmt.Errorf("go test -json: no event of %s (did the test binary run?)", root)
	}
	var out []Result
	for _, name := range order {
		tt := tests[name]
		if name != root && !tt.leaf {
			continue
		}
		if name == root && !tt.leaf && (tt.state != "failed" || anyFailed(tests, root)) {
			continue // root fails with any test below it: only its own failure (the setup) is a row
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(name, root), "/")
		short, _, _ := strings.Cut(rel, "/")
		text := strings.ReplaceAll(strings.Replace(rel, "/", ": ", 1), "_", " ")
		if rel == "" {
			text = root + " (the suite's setup)"
		}
		res := Result{Text: text, State: tt.state, Time: tt.elapsed}
		if res.State == "" {
			res.State = "interrupted"
		}
		switch {
		case res.Skipped():
			if runs, why := sel.Decide(short); !runs && why != "not selected" {
				res.Why = why
			} else {
				res.Why = skipMessage(tt.output)
			}
		case res.Failed():
			res.Why = failureLine(tt.output)
			if cause := sel.KnownCause(text); cause != "" {
				res.Why = strings.TrimSuffix(cause+" — "+res.Why, " — ")
			}
		}
		out = append(out, res)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Text < out[j].Text })
	return out, nil
}

// goTest is one test of the events.
type goTest struct {
	name    string
	state   string
	elapsed time.Duration
	output  []string
	leaf    bool
}

func (t *goTest) failed() bool { return t.state == "failed" }

// skipMessage is what t.Skip printed ("    x_test.go:12: message").
func skipMessage(output []string) string {
	for _, l := range output {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "---") || strings.HasPrefix(l, "===") || l == "" {
			continue
		}
		if _, msg, ok := strings.Cut(l, ": "); ok {
			return firstLine(msg)
		}
	}
	return ""
}

// anyFailed: a test below root failed.
func anyFailed[T interface{ failed() bool }](tests map[string]T, root string) bool {
	for name, t := range tests {
		if strings.HasPrefix(name, root+"/") && t.failed() {
			return true
		}
	}
	return false
}

// failureLine is the last line the test logged that says what failed: the
// suite's probes retry until their timeout, logging each failed attempt,
// and the last one is the verdict.
func failureLine(output []string) string {
	for i := len(output) - 1; i >= 0; i-- {
		l := strings.TrimSpace(output[i])
		if strings.Contains(l, "FAILED") && !strings.Contains(l, "FAILED Command was") || strings.Contains(l, "Error") || strings.Contains(l, "Expected") {
			if _, msg, ok := strings.Cut(l, ".go:"); ok {
				if _, m, ok := strings.Cut(msg, ": "); ok {
					return firstLine(m)
				}
			}
			return firstLine(l)
		}
	}
	return ""
}
