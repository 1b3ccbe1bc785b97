package upstream

import (
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// The specs of these tests, as a dry run of the sample selection lists
// them (sorted): five that run, one the selection skips (SCTP).
const (
	specA    = "[sig-network] Netpol NetworkPolicy between server and client should enforce policy based on Ports [Feature:NetworkPolicy]"
	specB    = "[sig-network] Netpol NetworkPolicy between server and client should support allow-all policy [Feature:NetworkPolicy]"
	specSCTP = "[sig-network] Netpol NetworkPolicy between server and client using SCTP should enforce policy based on Ports [Feature:NetworkPolicy]"
	specC    = "[sig-network] Services should fail health check node port if there are only terminating endpoints [Conformance]"
	specD    = "[sig-network] Services should serve a basic endpoint from pods [Conformance]"
	specE    = "[sig-network] Services should serve multiport endpoints from pods [Conformance]"
)

func dryRun(t *testing.T, sel *Selection) []Result {
	t.Helper()
	var dry []Result
	for _, text := range []string{specA, specB, specSCTP, specC, specD, specE} {
		runs, why := sel.Decide(text)
		r := Result{Text: text, State: "passed"} // a dry run passes what would run
		if !runs {
			r.State, r.Why = "skipped", why
		}
		dry = append(dry, r)
	}
	return dry
}

func sampleSelection(t *testing.T) *Selection {
	t.Helper()
	sel, err := ParseSelection(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	return sel
}

// A whole run stopped half way, then a part of the selection: every spec
// keeps the verdict of the last run that gave it one, with that run's ID;
// what no run reached reads "not run"; the summary counts by result and
// says which rows come from which run.
func TestMergeKeepsEachSpecsLastVerdict(t *testing.T) {
	sel := sampleSelection(t)
	dry := dryRun(t, sel)
	st := &Store{}
	whole := Run{ID: "2026-12-06 16:55", Part: "the whole selection", Specs: 5, E2E: Dur(75 * time.Minute), Total: Dur(77 * time.Minute), Commit: "8dbe829", Load: "20-75", Note: "Stopped at 18:12 UTC."}
	if n := st.Merge(whole, []Result{
		{Text: specA, State: "passed", Time: 30 * time.Second},
		{Text: specB, State: "failed", Time: time.Minute, Message: "probes failed"},
		{Text: specC, State: "interrupted", Time: 3 * time.Minute, Message: "interrupted by User"},
		{Text: specD, State: "skipped"}, // not reached: the run was stopped
		{Text: "ReportAfterSuite Kubernetes e2e JUnit report", State: "panicked", Time: 5 * time.Second, Message: "TContext used after its spec", Suite: true},
	}); n != 3 {
		t.Errorf("the stopped run gave %d verdicts, want 3 (a pass, a failure, the suite node)", n)
	}
	part := Run{ID: "2026-12-07 03:55", Part: "E2E_ONLY=missing,failed", Specs: 4, E2E: Dur(10 * time.Minute), Total: Dur(12 * time.Minute), Commit: "a3c532a", Procs: 3}
	if n := st.Merge(part, []Result{
		{Text: specB, State: "passed", Time: 20 * time.Second},
		{Text: specC, State: "failed", Time: 2 * time.Minute, Message: "no endpoint answered"},
		{Text: specE, State: "skipped", Time: time.Millisecond, Message: "Requires at least 2 nodes (not 1)"},
	}); n != 3 {
		t.Errorf("the part gave %d verdicts, want 3", n)
	}
	rows := st.Rows(dry, sel)
	want := []struct{ text, state, run, why string }{
		{specA, "passed", "2026-12-06 16:55", ""},
		{specB, "passed", "2026-12-07 03:55", ""},
		{specSCTP, "skipped", "", "No SCTP in this kernel."},
		{specC, "failed", "2026-12-07 03:55", "Seine's proxy has no health check node port yet. — no endpoint answered"},
		{specD, NotRun, "", ""},
		{specE, "skipped", "2026-12-07 03:55", "Requires at least 2 nodes (not 1)"},
	}
	if len(rows) != len(want) {
		t.Fatalf("%d rows, want %d: %+v", len(rows), len(want), rows)
	}
	for i, w := range want {
		r := rows[i]
		if r.Text != w.text || r.State != w.state || r.Run != w.run || r.Why != w.why {
			t.Errorf("row %d = %q %s %q %q; want %q %s %q %q", i, r.Text, r.State, r.Run, r.Why, w.text, w.state, w.run, w.why)
		}
	}
	const summary = "6 selected: 2 passed, 1 failed, 2 skipped, 1 not run; 2m50s of spec time. " +
		"Rows by run: 2026-12-06 16:55 UTC 1, 2026-12-07 03:55 UTC 3; 1 skipped by the selection, 1 not run yet."
	if got := st.MergedSummary(rows); got != summary {
		t.Errorf("summary:\n%s\nwant\n%s", got, summary)
	}
	var b strings.Builder
	if err := st.WriteMergedTable(&b, rows); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"| test | result | time | run | why |",
		"| " + specA + " | passed | 30s | 2026-12-06 16:55 |  |",
		"| " + specSCTP + " | skipped | — | — | No SCTP in this kernel. |",
		"| " + specD + " | not run | — | — |  |",
		summary,
		"- **2026-12-06 16:55**: the whole selection, 5 specs to run; e2e.test 1h15m0s, 1h17m0s with the lab's bring-up; Seine at 8dbe829; load 20-75. Stopped at 18:12 UTC.",
		"- **2026-12-07 03:55**: E2E_ONLY=missing,failed, 4 specs to run; e2e.test 10m0s, 12m0s with the lab's bring-up; 3 Ginkgo processes; Seine at a3c532a.",
	} {
		if !strings.Contains(b.String(), line+"\n") {
			t.Errorf("table lacks line %q:\n%s", line, b.String())
		}
	}
	if strings.Contains(b.String(), "ReportAfterSuite") {
		t.Errorf("the stopped run's suite failure outlived the next run:\n%s", b.String())
	}

	// A later run that reaches nothing new leaves every verdict, and its
	// own suite failure is a row of its own.
	st.Merge(Run{ID: "2026-12-07 04:30", Part: "E2E_FOCUS='allow-all'"}, []Result{
		{Text: specB, State: "skipped"},
		{Text: "SynchronizedBeforeSuite", State: "failed", Message: "nodes not Ready", Suite: true},
	})
	rows = st.Rows(dry, sel)
	if r := rows[0]; !r.Suite || r.Text != "SynchronizedBeforeSuite" || r.Run != "2026-12-07 04:30" || r.Why != "nodes not Ready" {
		t.Errorf("first row = %+v, want the new run's suite failure", r)
	}
	if r := rows[2]; r.Text != specB || r.State != "passed" || r.Run != "2026-12-07 03:55" {
		t.Errorf("allow-all = %+v, want its pass of 03:55 kept", r)
	}
	if got := st.MergedSummary(rows); !strings.HasPrefix(got, "6 selected: 2 passed, 1 failed, 2 skipped, 1 not run;") {
		t.Errorf("a suite node counts as a spec: %s", got)
	}
}

// Specs the selection no longer runs lose their verdicts, and runs no
// verdict names leave the list; the store survives a write and a read.
func TestPruneAndStoreRoundTrip(t *testing.T) {
	sel := sampleSelection(t)
	st := &Store{}
	st.Merge(Run{ID: "2026-12-06 16:55", Part: "the whole selection"}, []Result{
		{Text: "[sig-network] Services should be gone [Conformance]", State: "passed", Time: time.Second},
	})
	st.Merge(Run{ID: "2026-12-07 03:55", Part: "E2E_SHARD=1/2", E2E: Dur(1500 * time.Millisecond)}, []Result{
		{Text: specA, State: "failed", Time: 1234 * time.Millisecond, Message: "x"},
	})
	var specs []string
	for _, d := range dryRun(t, sel) {
		specs = append(specs, d.Text)
	}
	if dropped := st.Prune(specs); !slices.Equal(dropped, []string{"[sig-network] Services should be gone [Conformance]"}) {
		t.Errorf("Prune dropped %q", dropped)
	}
	if len(st.Runs) != 1 || st.Runs[0].ID != "2026-12-07 03:55" {
		t.Errorf("runs after Prune: %+v", st.Runs)
	}
	p := filepath.Join(t.TempDir(), "results.json")
	if err := st.Write(p); err != nil {
		t.Fatal(err)
	}
	back, err := ReadStore(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Verdicts) != 1 || back.Verdicts[0] != st.Verdicts[0] || back.Runs[0] != st.Runs[0] {
		t.Errorf("read back %+v, wrote %+v", back, st)
	}
	if empty, err := ReadStore(filepath.Join(t.TempDir(), "none.json")); err != nil || len(empty.Verdicts) != 0 {
		t.Errorf("ReadStore of no file = %+v, %v; want an empty store", empty, err)
	}
}

func TestPartPicksSpecs(t *testing.T) {
	sel := sampleSelection(t)
	dry := dryRun(t, sel)
	st := &Store{}
	st.Merge(Run{ID: "2026-12-06 16:55"}, []Result{{Text: specA, State: "passed"}, {Text: specB, State: "failed", Message: "x"}})
	st.Merge(Run{ID: "2026-12-07 03:55"}, []Result{{Text: specC, State: "timedout", Message: "x"}, {Text: specE, State: "passed"}})
	pick := func(focus, only, shard string) []string {
		t.Helper()
		p, err := ParsePart(focus, only, shard)
		if err != nil {
			t.Fatal(err)
		}
		return p.Pick(dry, sel, st)
	}
	all := []string{specA, specB, specC, specD, specE}
	for _, c := range []struct {
		focus, only, shard string
		want               []string
	}{
		{"", "", "", all},
		{"Netpol", "", "", []string{specA, specB}},
		{"", "missing", "", []string{specD}},
		{"", "failed", "", []string{specB, specC}},
		{"", "missing,failed", "", []string{specB, specC, specD}},
		{"", "before=2026-12-07", "", []string{specA, specB, specD}},
		{"", "before=2026-12-07 04:00", "", all},
		{"", "", "1/2", []string{specA, specC, specE}},
		{"", "", "2/2", []string{specB, specD}},
		// The shards are cut before the filters: shard 2 of the failed
		// ones is still the failed ones of shard 2.
		{"", "failed", "2/2", []string{specB}},
		{"Services", "missing,failed", "1/2", []string{specC}},
	} {
		if got := pick(c.focus, c.only, c.shard); !slices.Equal(got, c.want) {
			t.Errorf("Pick(focus %q, only %q, shard %q) = %q, want %q", c.focus, c.only, c.shard, got, c.want)
		}
	}
	p, _ := ParsePart("Netpol", "missing,failed", "2/3")
	if got, want := p.String(), "E2E_FOCUS='Netpol' E2E_ONLY=missing,failed E2E_SHARD=2/3"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if whole, _ := ParsePart("", "", ""); !whole.Whole() || whole.String() != "the whole selection" {
		t.Errorf("the empty part is %q, whole %v", whole.String(), whole.Whole())
	}
	for _, bad := range [][3]string{{"[", "", ""}, {"", "passed", ""}, {"", "before=", ""}, {"", "", "3/2"}, {"", "", "0/2"}, {"", "", "1"}, {"", "", "a/b"}} {
		if _, err := ParsePart(bad[0], bad[1], bad[2]); err == nil {
			t.Errorf("ParsePart%q accepted", bad)
		}
	}
}

// A run of a list of specs focuses on each one's whole text as Ginkgo
// matches it (the suite's description, a space, the text), and not on a
// spec whose text only contains it; the selection's skips stay.
func TestWithSpecsFocusesOnWholeTexts(t *testing.T) {
	sel := sampleSelection(t)
	part := sel.WithSpecs([]string{specA, specD})
	var focus, skip []string
	for _, a := range part.Args() {
		if v, ok := strings.CutPrefix(a, "--ginkgo.focus="); ok {
			focus = append(focus, v)
		} else if v, ok := strings.CutPrefix(a, "--ginkgo.skip="); ok {
			skip = append(skip, v)
		}
	}
	// Ginkgo joins the focus flags with | and matches the result against
	// "<suite description> <spec text>".
	re := regexp.MustCompile(strings.Join(focus, "|"))
	ginkgo := func(text string) bool { return re.MatchString("Kubernetes e2e suite " + text) }
	for _, text := range []string{specA, specD} {
		if !ginkgo(text) {
			t.Errorf("Ginkgo would not run %q", text)
		}
		if runs, _ := part.Decide(text); !runs {
			t.Errorf("Decide(%q): does not run", text)
		}
	}
	for _, text := range []string{
		specB, specE,
		"[sig-network] Netpol [LinuxOnly] NetworkPolicy between server and client using UDP should enforce policy based on Ports [Feature:NetworkPolicy]",
		specD + " [Slow]",
		"[sig-network] Outer " + specD[len("[sig-network] "):],
	} {
		if ginkgo(text) {
			t.Errorf("Ginkgo would run %q", text)
		}
	}
	if !slices.Equal(skip, []string{`SCTP`, `\[Provider:`}) {
		t.Errorf("skips = %q, want the selection's", skip)
	}
	if got := part.KnownCause(specC); got == "" {
		t.Error("the known rules were lost")
	}
}
