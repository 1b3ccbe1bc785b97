package testrun

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Step is one step of `make test`: a command line, and whether it prints
// test2json events.
type Step struct {
	Name  string
	Tests string // "go", "wine": Argv prints test2json events (the step's name in the allowlist); "": plain output
	Env   []string
	Dir   string
	Argv  []string
}

type outcome struct {
	step     Step
	took     time.Duration
	err      error
	failures []Failure
}

// RunSteps runs every step, even after one failed, writing their readable
// output to out, then the summary, so that the end of the log (what a CI
// shows) holds it: the skipped tests, the whole output of every failed
// test again, each step's time and result, and last the skips allow does
// not explain. It returns an error when a step failed or a skip is
// unexplained. module is the import path the allowlist's packages are
// relative to.
func RunSteps(steps []Step, allow []Allowed, module string, out io.Writer) error {
	var done []outcome
	var skips []Skip
	for _, st := range steps {
		fmt.Fprintf(out, "\n=== %s: %s\n", st.Name, strings.Join(st.Argv, " "))
		start := time.Now()
		cmd := exec.Command(st.Argv[0], st.Argv[1:]...)
		cmd.Env = append(os.Environ(), st.Env...)
		cmd.Dir = st.Dir
		o := outcome{step: st}
		if st.Tests != "" {
			var res Result
			res, o.err = Run(st.Tests, cmd, out)
			skips = append(skips, res.Skips...)
			o.failures = res.Failures
			if len(res.Failed) > 0 {
				o.err = fmt.Errorf("failed: %s", strings.Join(res.Failed, ", "))
			}
		} else {
			cmd.Stdout, cmd.Stderr = out, out
			o.err = cmd.Run()
		}
		o.took = time.Since(start)
		done = append(done, o)
	}

	fmt.Fprintf(out, "\n=== summary: %d skipped tests\n", len(skips))
	for _, s := range skips {
		fmt.Fprintln(out, "  "+s.String())
	}
	for _, o := range done {
		for _, f := range o.failures {
			fmt.Fprintf(out, "\n=== FAILED (%s): %s\n%s", o.step.Name, f.Name, f.Output)
			if f.Output != "" && !strings.HasSuffix(f.Output, "\n") {
				fmt.Fprintln(out)
			}
		}
	}
	if unused := Unused(skips, allow, module); len(unused) > 0 {
		fmt.Fprintf(out, "\n=== summary: %d allowlist entries no skip matched (right on other machines, or stale):\n", len(unused))
		for _, a := range unused {
			fmt.Fprintf(out, "  line %d: %s\n", a.Line, a.Entry)
		}
	}
	fmt.Fprintln(out, "\n=== summary: steps")
	var failed []string
	for _, o := range done {
		result := "ok"
		if o.err != nil {
			result = "FAIL: " + o.err.Error()
			failed = append(failed, o.step.Name)
		}
		fmt.Fprintf(out, "%-22s %8s  %s\n", o.step.Name, o.took.Round(time.Second), result)
	}
	if bad := Unexpected(skips, allow, module); len(bad) > 0 {
		fmt.Fprintf(out, "\n%d skips the allowlist does not explain (make the test run, or add an entry saying why the skip is right):\n", len(bad))
		for _, s := range bad {
			fmt.Fprintln(out, "  "+s.String())
		}
		failed = append(failed, fmt.Sprintf("%d unexpected skips", len(bad)))
	}
	if len(failed) > 0 {
		return fmt.Errorf("failed: %s", strings.Join(failed, "; "))
	}
	return nil
}
