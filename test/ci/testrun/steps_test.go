package testrun

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// goTest is a go test -json step over testdata/fixture.
func goTest(args ...string) Step {
	return Step{Name: "go test", Tests: "go", Dir: "testdata/fixture",
		Argv: append([]string{"go", "test", "-json", "-count=1"}, args...)}
}

// TestRunStepsFailsOnEveryKindOfFailure: each way a test run can go wrong
// makes RunSteps (make test) fail, naming the step, with the failure's
// whole output after the list of skips, so the end of a CI log shows it;
// the same steps without the failure pass (the controls).
func TestRunStepsFailsOnEveryKindOfFailure(t *testing.T) {
	allow, err := ParseAllowlist(strings.NewReader("# The fixture's kernel has no SCTP.\ngo fixture TestSkips the kernel has no SCTP\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		step  Step
		allow []Allowed
		want  []string // in the output, in this order; nil: RunSteps passes
	}{
		{name: "control: tests pass", step: goTest("./pass")},
		{name: "control: benchmarks pass, their results shown", step: goTest("-run", "^$", "-bench", ".", "-benchtime", "1x", "./pass")},
		{name: "control: an allowed skip", step: goTest("-run", "TestSkips", "."), allow: allow},
		{name: "failing subtest", step: goTest("."), allow: allow,
			want: []string{"=== summary: 1 skipped tests", "=== FAILED (go test): example.com/fixture TestFails/sub", "the subtest failed",
				"=== summary: steps", "go test", "FAIL: failed: example.com/fixture TestFails/sub"}},
		{name: "panic", step: goTest("./panics"),
			want: []string{"=== FAILED (go test): example.com/fixture/panics TestPanics", "a line before the panic", "panic: assignment to entry in nil map",
				"=== summary: steps", "FAIL: failed: example.com/fixture/panics TestPanics"}},
		{name: "build failure", step: goTest("./broken"),
			want: []string{"undefined: undefinedFunction", "=== summary: steps", "FAIL: failed: example.com/fixture/broken"}},
		{name: "vet failure", step: goTest("./vet"),
			want: []string{"fmt.Printf format %d has arg", "=== summary: steps", "FAIL: failed: example.com/fixture/vet"}},
		{name: "timeout", step: goTest("-tags", "hang", "-timeout", "3s", "./hangs"),
			want: []string{"=== FAILED (go test): example.com/fixture/hangs TestHangs (never finished)", "a line before the hang",
				"=== FAILED (go test): example.com/fixture/hangs TestHangs/sub (never finished)", "panic: test timed out after 3s",
				"=== summary: steps", "FAIL: failed: example.com/fixture/hangs TestHangs (never finished)"}},
		{name: "unexpected skip", step: goTest("-run", "TestSkips", "."),
			want: []string{"=== summary: 1 skipped tests", "go example.com/fixture TestSkips", "=== summary: steps", "go test", "ok",
				"1 skips the allowlist does not explain", "go example.com/fixture TestSkips: fixture_test.go:13: the kernel has no SCTP"}},
		{name: "another unexpected skip", step: goTest("./skips"), allow: allow,
			want: []string{"1 skips the allowlist does not explain", "go example.com/fixture/skips TestSkips: skips_test.go:6: no iperf3 here"}},
		{name: "plain step fails", step: Step{Name: "windows vet", Argv: []string{"sh", "-c", "echo vet says no; exit 1"}},
			want: []string{"vet says no", "=== FAILED (windows vet), no failed test to show; the end of its output:", "vet says no",
				"=== summary: steps", "windows vet", "FAIL: exit status 1"}},
		{name: "test step fails outside any test", step: Step{Name: "wine", Tests: "go",
			Argv: []string{"sh", "-c", "for i in $(seq 100); do echo line $i; done; echo the binary crashed; exit 3"}},
			want: []string{"the binary crashed", "=== FAILED (wine), no failed test to show; the end of its output:", "line 62\n",
				"line 100\nthe binary crashed\n", "=== summary: steps", "wine", "FAIL: exit status 3"}},
		{name: "step cannot start", step: Step{Name: "missing", Argv: []string{"seine-no-such-command"}},
			want: []string{"=== summary: steps", "missing", "FAIL: exec: \"seine-no-such-command\""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out strings.Builder
			err := RunSteps([]Step{tc.step}, tc.allow, "example.com", &out)
			text := out.String()
			if tc.want == nil {
				if err != nil {
					t.Fatalf("RunSteps: %v\n%s", err, text)
				}
				if strings.Contains(tc.name, "benchmarks") && !strings.Contains(text, "a benchmark's logged ratio") {
					t.Errorf("the benchmark's output is not shown:\n%s", text)
				}
				return
			}
			if err == nil {
				t.Fatalf("RunSteps passed:\n%s", text)
			}
			rest := text
			for _, w := range tc.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("after the output before it, no %q in:\n%s", w, text)
				}
				rest = rest[i+len(w):]
			}
		})
	}
}

// TestRunStepsRunsEveryStep: a failed step does not stop the ones after it,
// and the summary names each with its result.
func TestRunStepsRunsEveryStep(t *testing.T) {
	var out strings.Builder
	err := RunSteps([]Step{
		{Name: "first", Argv: []string{"false"}},
		{Name: "second", Argv: []string{"echo", "the second step ran"}},
	}, nil, "example.com", &out)
	text := out.String()
	if err == nil || err.Error() != "failed: first" {
		t.Errorf("RunSteps = %v, want failed: first", err)
	}
	for _, want := range []string{"the second step ran", "first ", "FAIL: exit status 1", "second ", "ok"} {
		if !strings.Contains(text, want) {
			t.Errorf("no %q in:\n%s", want, text)
		}
	}
}

// TestRunStepsRunsAGroupAtOnce: the steps of a group run at the same time
// (each waits for a file the other writes: one after the other, the first
// would give up), their lines prefixed and whole, then the next step runs;
// a failure in one is reported under its own name, as a go test step's
// failed test is.
func TestRunStepsRunsAGroupAtOnce(t *testing.T) {
	dir := t.TempDir()
	meet := func(mine, theirs string) []string {
		return []string{"sh", "-c", `touch "$1"; for i in $(seq 100); do [ -e "$2" ] && { echo "$3 met"; exit 0; }; sleep 0.1; done; echo "$3 waited alone"; exit 1`,
			"sh", dir + "/" + mine, dir + "/" + theirs, mine}
	}
	fails := goTest(".")
	fails.Name, fails.Group = "fixture", "g"
	var out strings.Builder
	err := RunSteps([]Step{
		{Name: "a", Group: "g", Argv: meet("a", "b")},
		{Name: "b", Group: "g", Argv: meet("b", "a")},
		fails,
		{Name: "after", Argv: []string{"sh", "-c", `[ -e "$0/a" ] && [ -e "$0/b" ] && echo after the group`, dir}},
	}, nil, "example.com", &out)
	text := out.String()
	if err == nil || !strings.HasPrefix(err.Error(), "failed: fixture; ") {
		t.Errorf("RunSteps = %v, want failed: fixture; <unexpected skips>", err)
	}
	for _, want := range []string{"\n[a] a met\n", "\n[b] b met\n", "\n[fixture] --- FAIL: TestFails/sub", "\nafter the group\n",
		"=== FAILED (fixture): example.com/fixture TestFails/sub", "\na ", "\nb ", "\nfixture ", "\nafter "} {
		if !strings.Contains(text, want) {
			t.Errorf("no %q in:\n%s", want, text)
		}
	}
	if strings.Contains(text, "] a waited alone") || strings.Contains(text, "] b waited alone") {
		t.Errorf("the group's steps ran one after the other:\n%s", text)
	}
}

// TestRunStepsRunsLanes: inside a group the steps of one lane run one after
// the other (the second finds what the first left when it ended), lanes at
// the same time (the other lane's step meets both in turn), and a lane
// goes on after a failed step.
func TestRunStepsRunsLanes(t *testing.T) {
	dir := t.TempDir()
	// wait "$1" waits for a file of the directory, up to 10 s.
	const wait = `wait() { for i in $(seq 100); do [ -e "$0/$1" ] && return 0; sleep 0.1; done; echo "waited alone for $1"; exit 1; }; `
	step := func(name, lane, script string) Step {
		return Step{Name: name, Group: "g", Lane: lane, Argv: []string{"sh", "-c", wait + script, dir}}
	}
	var out strings.Builder
	err := RunSteps([]Step{
		step("x1", "x", `touch "$0/x1"; wait y; touch "$0/x1.done"; exit 1`),
		step("x2", "x", `[ -e "$0/x1.done" ] || { echo "x2 before x1 ended"; exit 1; }; touch "$0/x2"; echo x2 after x1`),
		step("y", "y", `touch "$0/y"; wait x1; wait x2; echo y met both`),
	}, nil, "example.com", &out)
	text := out.String()
	if err == nil || err.Error() != "failed: x1" {
		t.Errorf("RunSteps = %v, want failed: x1", err)
	}
	for _, want := range []string{"\n[x2] x2 after x1\n", "\n[y] y met both\n", "\nx1 ", "\nx2 ", "\ny "} {
		if !strings.Contains(text, want) {
			t.Errorf("no %q in:\n%s", want, text)
		}
	}
}

func TestRunStepsRunsAfter(t *testing.T) {
	dir := t.TempDir()
	step := func(name, lane, after, script string) Step {
		return Step{Name: name, Group: "g", Lane: lane, After: after, Argv: []string{"sh", "-c", script, dir}}
	}
	var out strings.Builder
	err := RunSteps([]Step{
		// "build" ends late; "use" in another lane starts only after it.
		step("build", "b", "", `sleep 0.5; touch "$0/built"`),
		step("use", "u", "build", `[ -e "$0/built" ] || { echo "use before build ended"; exit 1; }; echo use after build`),
		// "broken" fails: "needs" does not run, and says why.
		step("broken", "c", "", `exit 3`),
		step("needs", "d", "broken", `touch "$0/ran"`),
		// A step after one of its own lane, or of none, is refused.
		step("self", "b", "build", `touch "$0/ran"`),
		step("nowhere", "e", "missing", `touch "$0/ran"`),
	}, nil, "example.com", &out)
	text := out.String()
	if err == nil || err.Error() != "failed: broken; needs; self; nowhere" {
		t.Errorf("RunSteps = %v, want failed: broken; needs; self; nowhere", err)
	}
	for _, want := range []string{"\n[use] use after build\n", "needs: not run, as broken failed", "not run: broken failed", `comes after "build", which is no step of another lane`, `comes after "missing"`} {
		if !strings.Contains(text, want) {
			t.Errorf("no %q in:\n%s", want, text)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "ran")); err == nil {
		t.Error("a step ran whose After failed or was refused")
	}
}
