package testrun

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
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
	// Group: adjacent steps with the same non-empty Group run at the same
	// time, each line of their output prefixed with "[<name>] "; the step
	// after them starts when all of them ended. Their results are
	// reported one by one, in order, as for any step.
	Group string
	// Lane: inside a group, steps with the same Lane run one after the
	// other, in their order, each starting when the one before it ended
	// (failed or not); lanes run at the same time. A step without a Lane
	// is a lane of its own.
	Lane string
	// After names a step of the same group, in another lane, that must
	// end before this one starts (what it needs is built there). When
	// that step failed, this one does not run and fails saying so.
	After string
}

type outcome struct {
	step     Step
	took     time.Duration
	err      error
	failures []Failure
	tail     string // the last lines of the step's output
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
	for i := 0; i < len(steps); {
		j := i + 1
		for steps[i].Group != "" && j < len(steps) && steps[j].Group == steps[i].Group {
			j++
		}
		results := make([]outcome, j-i)
		stepSkips := make([][]Skip, j-i)
		if j-i == 1 {
			results[0], stepSkips[0] = runStep(steps[i], out)
		} else {
			runGroup(steps[i:j], results, stepSkips, out)
		}
		done = append(done, results...)
		for _, s := range stepSkips {
			skips = append(skips, s...)
		}
		i = j
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
		// A step that failed with no failed test to show (a tool that
		// exited non-zero, a crash outside any test) shows the end of
		// its output instead, which a CI's tail would otherwise cut.
		if o.err != nil && len(o.failures) == 0 && o.tail != "" {
			fmt.Fprintf(out, "\n=== FAILED (%s), no failed test to show; the end of its output:\n%s", o.step.Name, o.tail)
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

// runGroup runs the steps of one group, each lane of them at the same time
// as the others, writing each step's result and skips at its index.
func runGroup(group []Step, results []outcome, stepSkips [][]Skip, out io.Writer) {
	var lanes [][]int
	lane := map[string]int{}
	for k, st := range group {
		n, ok := lane[st.Lane]
		if !ok || st.Lane == "" {
			n = len(lanes)
			lanes = append(lanes, nil)
			lane[st.Lane] = n
		}
		lanes[n] = append(lanes[n], k)
	}
	ended := make([]chan struct{}, len(group))
	byName := map[string]int{}
	for k, st := range group {
		ended[k] = make(chan struct{})
		byName[st.Name] = k
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, steps := range lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, k := range steps {
				w := prefixWriter(&mu, out, "["+group[k].Name+"] ")
				results[k], stepSkips[k] = runAfter(group, k, byName, ended, results, w)
				w.Flush()
				close(ended[k])
			}
		}()
	}
	wg.Wait()
}

// runAfter runs group[k] once the step it comes after (if any) ended, or
// fails it without running it when that step failed or is not in the group
// (in the same lane it would wait for itself).
func runAfter(group []Step, k int, byName map[string]int, ended []chan struct{}, results []outcome, out io.Writer) (outcome, []Skip) {
	st := group[k]
	if st.After == "" {
		return runStep(st, out)
	}
	a, ok := byName[st.After]
	if !ok || group[a].Lane == st.Lane {
		return outcome{step: st, err: fmt.Errorf("comes after %q, which is no step of another lane of its group", st.After)}, nil
	}
	<-ended[a]
	if results[a].err != nil {
		fmt.Fprintf(out, "\n=== %s: not run, as %s failed\n", st.Name, st.After)
		return outcome{step: st, err: fmt.Errorf("not run: %s failed", st.After)}, nil
	}
	return runStep(st, out)
}

// runStep runs one step, writing its readable output to out.
func runStep(st Step, out io.Writer) (outcome, []Skip) {
	fmt.Fprintf(out, "\n=== %s: %s\n", st.Name, strings.Join(st.Argv, " "))
	start := time.Now()
	tail := newTail()
	out = io.MultiWriter(out, tail)
	cmd := exec.Command(st.Argv[0], st.Argv[1:]...)
	cmd.Env = append(os.Environ(), st.Env...)
	cmd.Dir = st.Dir
	o := outcome{step: st}
	var skips []Skip
	if st.Tests != "" {
		var res Result
		res, o.err = Run(st.Tests, cmd, out)
		skips = res.Skips
		o.failures = res.Failures
		if len(res.Failed) > 0 {
			o.err = fmt.Errorf("failed: %s", strings.Join(res.Failed, ", "))
		}
	} else {
		cmd.Stdout, cmd.Stderr = out, out
		o.err = cmd.Run()
	}
	o.took = time.Since(start)
	o.tail = tail.String()
	return o, skips
}

// tailLines is how many of a failed step's last lines its summary repeats.
const tailLines = 40

// lineWriter hands each whole line written to it, newline included, to
// line, holding mu (several writers may share one).
type lineWriter struct {
	mu      *sync.Mutex
	line    func([]byte) error
	partial []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		if err := w.line(w.partial[:i+1]); err != nil {
			return 0, err
		}
		w.partial = w.partial[i+1:]
	}
}

// Flush hands on what is left of a last line, with a newline added.
func (w *lineWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.partial) > 0 {
		w.line(append(w.partial, '\n'))
		w.partial = nil
	}
}

// prefixWriter writes whole lines to out, each prefixed, holding mu so
// that the lines of steps running at the same time never mix.
func prefixWriter(mu *sync.Mutex, out io.Writer, prefix string) *lineWriter {
	return &lineWriter{mu: mu, line: func(l []byte) error {
		_, err := fmt.Fprintf(out, "%s%s", prefix, l)
		return err
	}}
}

// tail keeps the last tailLines lines written to its writer.
type tail struct {
	lineWriter
	lines []string
}

func newTail() *tail {
	t := &tail{}
	t.lineWriter = lineWriter{mu: &sync.Mutex{}, line: func(l []byte) error {
		t.lines = append(t.lines, string(l))
		if len(t.lines) > tailLines {
			t.lines = t.lines[len(t.lines)-tailLines:]
		}
		return nil
	}}
	return t
}

// String flushes and returns the lines kept.
func (t *tail) String() string {
	t.Flush()
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "")
}
