package upstream

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The table of test/e2e/upstream/README.md is merged from runs. The whole
// selection takes about two hours on the lab, so a run may take a part of
// it (Part: a regex, the specs without a verdict or whose last one failed
// or is older than a run, a shard k/n), and each spec keeps the verdict of
// the last run that gave it one, with that run's date. The verdicts and the
// runs live in results.json beside the README (Store); the table is
// rendered from them, from the specs a dry run of the selection lists, and
// from the selection itself as it is when the table is written (the reasons
// of its skips, the causes of its known failures).

// Dur is a duration written in JSON as Go prints it ("1m2.3s").
type Dur time.Duration

func (d Dur) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Dur) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = Dur(v)
	return err
}

// RunID is how a run is named: its start in UTC, to the minute. IDs sort
// as their times do.
const RunID = "2006-01-02 15:04"

// Run is one run of e2e.test, as the table credits it.
type Run struct {
	ID     string `json:"id"`               // its start, UTC (RunID)
	Part   string `json:"part"`             // what it ran (Part.String)
	Specs  int    `json:"specs"`            // how many specs it was to run
	E2E    Dur    `json:"e2e"`              // e2e.test's wall time
	Total  Dur    `json:"total"`            // with the lab's bring-up and Seine's install
	Commit string `json:"commit,omitempty"` // Seine's commit it ran
	Load   string `json:"load,omitempty"`   // the machine's load average, start and end
	Procs  int    `json:"procs,omitempty"`  // Ginkgo processes running specs side by side (0: one, e2e.test alone)
	Note   string `json:"note,omitempty"`   // written by hand: what the numbers do not say
}

// Verdict is the last verdict a run gave a spec (or a suite node's failure).
type Verdict struct {
	Text    string `json:"text"`
	State   string `json:"state"`
	Time    Dur    `json:"time"`
	Message string `json:"message,omitempty"` // Result.Message
	Run     string `json:"run"`               // Run.ID
	Suite   bool   `json:"suite,omitempty"`   // Result.Suite
}

// Store is what the merged table is written from (results.json).
type Store struct {
	Runs     []Run     `json:"runs"`
	Verdicts []Verdict `json:"verdicts"`
}

// ReadStore reads a store; a file that does not exist is an empty store.
func ReadStore(path string) (*Store, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &Store{}, nil
	}
	if err != nil {
		return nil, err
	}
	var s Store
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &s, nil
}

// Write writes the store to path (through a file renamed into place).
func (s *Store) Write(path string) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// isVerdict says whether a run's result of a spec is a verdict the table
// keeps: a pass, a failure (a timeout, a panic), or the spec's own skip
// (Skip() with its message). A spec the run did not reach (it was stopped
// first: skipped without a message), one stopped while it ran
// (interrupted) or a pending one gave none, and keeps its earlier verdict.
func isVerdict(r Result) bool {
	switch {
	case r.State == "interrupted", r.State == "pending", r.NotRun():
		return false
	case r.Skipped():
		return r.Message != ""
	}
	return true
}

// Merge records run and its results: each result that is a verdict
// replaces the spec's earlier one; the specs the run did not reach keep
// theirs. The run's failed suite nodes replace every earlier run's (a
// suite node that passed is not among the results, and its earlier
// failure goes). A run of the same ID replaces the earlier record. Merge
// returns how many verdicts the run gave.
func (s *Store) Merge(run Run, results []Result) int {
	var verdicts []Verdict
	at := map[string]int{}
	for _, v := range s.Verdicts {
		if !v.Suite {
			at[v.Text] = len(verdicts)
			verdicts = append(verdicts, v)
		}
	}
	n := 0
	for _, r := range results {
		if !isVerdict(r) {
			continue
		}
		v := Verdict{Text: r.Text, State: r.State, Time: Dur(r.Time.Round(time.Millisecond)), Message: r.Message, Run: run.ID, Suite: r.Suite}
		if i, ok := at[r.Text]; ok && !r.Suite {
			verdicts[i] = v
		} else {
			at[r.Text] = len(verdicts)
			verdicts = append(verdicts, v)
		}
		n++
	}
	sort.SliceStable(verdicts, func(i, j int) bool { return verdicts[i].Text < verdicts[j].Text })
	s.Verdicts = verdicts
	s.Runs = slices.DeleteFunc(s.Runs, func(r Run) bool { return r.ID == run.ID })
	s.Runs = append(s.Runs, run)
	sort.SliceStable(s.Runs, func(i, j int) bool { return s.Runs[i].ID < s.Runs[j].ID })
	return n
}

// Prune drops the verdicts of specs the selection no longer runs (not in
// specs, the texts a dry run of it would run) and the runs no verdict
// names any more; it returns the texts of the verdicts it dropped.
func (s *Store) Prune(specs []string) []string {
	runs := map[string]bool{}
	for _, t := range specs {
		runs[t] = true
	}
	var dropped []string
	s.Verdicts = slices.DeleteFunc(s.Verdicts, func(v Verdict) bool {
		if v.Suite || runs[v.Text] {
			return false
		}
		dropped = append(dropped, v.Text)
		return true
	})
	named := map[string]bool{}
	for _, v := range s.Verdicts {
		named[v.Run] = true
	}
	s.Runs = slices.DeleteFunc(s.Runs, func(r Run) bool { return !named[r.ID] })
	return dropped
}

// verdict returns the spec's last verdict, if any.
func (s *Store) verdict(text string) (Verdict, bool) {
	for _, v := range s.Verdicts {
		if v.Text == text && !v.Suite {
			return v, true
		}
	}
	return Verdict{}, false
}

// Row is a row of the merged table: a spec's result and the run that gave
// it ("" for a spec the selection skips or no run reached).
type Row struct {
	Result
	Run string
}

// Rows are the merged table: one row per spec of dry (a dry run's
// results: every spec the selection focuses on) in its order, with its
// last verdict and run; "skipped" with the selection's reason for a spec it
// skips; "not run" for a spec no run gave a verdict. A failure's why is
// the cause sel knows for it (its known rules now) and the message; a
// skip's, its own message. The suite nodes that failed in the last run
// come first.
func (s *Store) Rows(dry []Result, sel *Selection) []Row {
	var rows []Row
	for _, v := range s.Verdicts {
		if v.Suite {
			rows = append(rows, Row{Result{Text: v.Text, State: v.State, Time: time.Duration(v.Time), Why: v.Message, Message: v.Message, Suite: true}, v.Run})
		}
	}
	for _, d := range dry {
		if d.Suite {
			continue
		}
		runs, why := sel.Decide(d.Text)
		if !runs {
			if why != "not selected" {
				rows = append(rows, Row{Result: Result{Text: d.Text, State: "skipped", Why: why}})
			}
			continue
		}
		v, ok := s.verdict(d.Text)
		if !ok {
			rows = append(rows, Row{Result: Result{Text: d.Text, State: NotRun}})
			continue
		}
		r := Result{Text: v.Text, State: v.State, Time: time.Duration(v.Time), Why: v.Message, Message: v.Message}
		if r.Failed() {
			if cause := sel.KnownCause(v.Text); cause != "" {
				r.Why = strings.TrimSuffix(cause+" — "+v.Message, " — ")
			}
		}
		rows = append(rows, Row{r, v.Run})
	}
	return rows
}

// MergedSummary is the merged table's summary: the specs counted by
// result, the spec time, which rows come from which run, and the suite
// nodes that failed (not counted as specs).
func (s *Store) MergedSummary(rows []Row) string {
	var specs, passed, failed, skipped, notRun, bySelection, suite int
	var total time.Duration
	perRun := map[string]int{}
	for _, r := range rows {
		if r.Suite {
			suite++
			continue
		}
		specs++
		switch {
		case r.Passed():
			passed++
		case r.NotRun():
			notRun++
		case r.Skipped():
			skipped++
			if r.Run == "" {
				bySelection++
			}
		default:
			failed++
		}
		total += r.Time
		if r.Run != "" {
			perRun[r.Run]++
		}
	}
	var from []string
	for _, run := range s.Runs {
		if n := perRun[run.ID]; n > 0 {
			from = append(from, fmt.Sprintf("%s UTC %d", run.ID, n))
		}
	}
	line := fmt.Sprintf("%d selected: %d passed, %d failed, %d skipped, %d not run; %s of spec time.",
		specs, passed, failed, skipped, notRun, total.Round(time.Second))
	if len(from) > 0 {
		line += " Rows by run: " + strings.Join(from, ", ") + ";"
	}
	line += fmt.Sprintf(" %d skipped by the selection, %d not run yet.", bySelection, notRun)
	if suite > 0 {
		line += fmt.Sprintf(" And %d suite node(s) failed in the last run (the first rows).", suite)
	}
	return line
}

// WriteMergedTable writes the merged table (test, result, time, run, why),
// its summary, and a line per run that gave it rows: what it ran, its wall
// times, the commit and the load.
func (s *Store) WriteMergedTable(w io.Writer, rows []Row) error {
	var b strings.Builder
	b.WriteString("| test | result | time | run | why |\n|---|---|---|---|---|\n")
	for _, r := range rows {
		t, run := "—", "—"
		if !r.Skipped() && !r.NotRun() {
			t = r.Time.Round(100 * time.Millisecond).String()
		}
		if r.Run != "" {
			run = r.Run
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", cell(r.Text), r.State, t, run, cell(r.Why))
	}
	fmt.Fprintf(&b, "\n%s\n\nThe runs (UTC):\n\n", s.MergedSummary(rows))
	for _, run := range s.Runs {
		fmt.Fprintf(&b, "- **%s**: %s", run.ID, run.Part)
		if run.Specs > 0 {
			fmt.Fprintf(&b, ", %d specs to run", run.Specs)
		}
		if run.E2E > 0 {
			fmt.Fprintf(&b, "; e2e.test %s, %s with the lab's bring-up", time.Duration(run.E2E).Round(time.Second), time.Duration(run.Total).Round(time.Second))
		}
		if run.Procs > 1 {
			fmt.Fprintf(&b, "; %d Ginkgo processes", run.Procs)
		}
		if run.Commit != "" {
			fmt.Fprintf(&b, "; Seine at %s", run.Commit)
		}
		if run.Load != "" {
			fmt.Fprintf(&b, "; load %s", run.Load)
		}
		b.WriteString(".")
		if run.Note != "" {
			b.WriteString(" " + run.Note)
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Part is which specs of the selection a run takes. The zero Part is the
// whole selection.
type Part struct {
	Focus  *regexp.Regexp // only specs whose text it matches (E2E_FOCUS)
	Only   []string       // only specs whose last verdict is one of these (E2E_ONLY)
	Shard  int            // with Shards: the Shard-th of Shards shards (E2E_SHARD=k/n)
	Shards int
}

// ParsePart reads a part from E2E_FOCUS (a regex), E2E_ONLY (a comma list
// of: missing, a spec without a verdict; failed, one whose last verdict is
// a failure; before=<run ID or a prefix of one>, one whose last verdict is
// older than that, or missing) and E2E_SHARD (k/n). Empty strings take
// everything.
func ParsePart(focus, only, shard string) (Part, error) {
	var p Part
	if focus != "" {
		re, err := regexp.Compile(focus)
		if err != nil {
			return p, fmt.Errorf("E2E_FOCUS: %w", err)
		}
		p.Focus = re
	}
	for _, w := range strings.Split(only, ",") {
		w = strings.TrimSpace(w)
		switch {
		case w == "":
			continue
		case w == "missing", w == "failed":
		case strings.HasPrefix(w, "before=") && len(w) > len("before="):
		default:
			return p, fmt.Errorf("E2E_ONLY: %q: want missing, failed or before=<run, e.g. %q>", w, RunID)
		}
		p.Only = append(p.Only, w)
	}
	if shard != "" {
		k, n, ok := strings.Cut(shard, "/")
		var err1, err2 error
		p.Shard, err1 = strconv.Atoi(k)
		p.Shards, err2 = strconv.Atoi(n)
		if !ok || err1 != nil || err2 != nil || p.Shards < 1 || p.Shard < 1 || p.Shard > p.Shards {
			return Part{}, fmt.Errorf("E2E_SHARD: %q: want k/n with 1 <= k <= n", shard)
		}
	}
	return p, nil
}

// Whole says whether the part is the whole selection.
func (p Part) Whole() bool { return p.Focus == nil && len(p.Only) == 0 && p.Shards == 0 }

// String is what the run record says it ran.
func (p Part) String() string {
	if p.Whole() {
		return "the whole selection"
	}
	var w []string
	if p.Focus != nil {
		w = append(w, "E2E_FOCUS='"+p.Focus.String()+"'")
	}
	if len(p.Only) > 0 {
		w = append(w, "E2E_ONLY="+strings.Join(p.Only, ","))
	}
	if p.Shards > 0 {
		w = append(w, fmt.Sprintf("E2E_SHARD=%d/%d", p.Shard, p.Shards))
	}
	return strings.Join(w, " ")
}

// Pick returns the texts of the specs the part runs, among the specs of
// dry (a dry run's results) that sel runs, in their order. Shards are cut
// from all of those, round robin in their order, before the other filters:
// a spec's shard does not change with the verdicts, so the n shards of one
// selection cover it whatever ran between them.
func (p Part) Pick(dry []Result, sel *Selection, st *Store) []string {
	var out []string
	i := -1
	for _, d := range dry {
		if d.Suite {
			continue
		}
		if runs, _ := sel.Decide(d.Text); !runs {
			continue
		}
		i++
		if p.Shards > 0 && i%p.Shards != p.Shard-1 {
			continue
		}
		if p.Focus != nil && !p.Focus.MatchString(d.Text) {
			continue
		}
		if len(p.Only) > 0 && !p.only(st, d.Text) {
			continue
		}
		out = append(out, d.Text)
	}
	return out
}

func (p Part) only(st *Store, text string) bool {
	v, ok := st.verdict(text)
	for _, w := range p.Only {
		switch {
		case w == "missing" && !ok:
			return true
		case w == "failed" && ok && (Result{State: v.State}).Failed():
			return true
		case strings.HasPrefix(w, "before="):
			if !ok || v.Run < strings.TrimPrefix(w, "before=") {
				return true
			}
		}
	}
	return false
}
