package upstream

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

// Result is one spec of a run, as the table shows it.
type Result struct {
	Text  string        // the spec's full text, as Ginkgo matches it
	State string        // passed, failed, skipped, timedout, panicked, ...
	Time  time.Duration // the spec's run time
	// Why: for a failure, the cause found for it (a known rule) and the
	// first line of Ginkgo's message; for a skip, the selection's reason
	// or the spec's own Skip message.
	Why string
	// Message is the first line of Ginkgo's message alone (a failure's, or
	// the spec's own Skip message): what a merged table keeps, to give it
	// the causes known when it is written (Store).
	Message string
	// Suite marks a suite node (BeforeSuite, ReportAfterSuite, ...), not a
	// spec: the run's, not any spec's.
	Suite bool
}

// Passed, Failed and Skipped group Ginkgo's states the way the table counts them.
func (r Result) Passed() bool  { return r.State == "passed" }
func (r Result) Skipped() bool { return r.State == "skipped" || r.State == "pending" }
func (r Result) Failed() bool  { return !r.Passed() && !r.Skipped() && !r.NotRun() }

// NotRun is a spec of a merged table that no run has given a verdict yet.
func (r Result) NotRun() bool { return r.State == NotRun }

// NotRun is the state of a spec no run has given a verdict (Store.Rows).
const NotRun = "not run"

// The parts of Ginkgo's JSON report (--ginkgo.json-report) the table needs.
type ginkgoReport struct {
	SuiteDescription string
	SpecReports      []struct {
		ContainerHierarchyTexts []string
		LeafNodeType            string
		LeafNodeText            string
		State                   string
		RunTime                 time.Duration
		Failure                 struct{ Message string }
	}
}

// Results reads a Ginkgo JSON report and returns every spec the selection
// focuses on (run or skipped), sorted by text, plus the suite-level nodes
// (BeforeSuite, AfterSuite, ...) that failed: a failed setup fails the run
// even when no spec did. Specs no focus rule selects are left out.
func Results(r io.Reader, sel *Selection) ([]Result, error) {
	var reports []ginkgoReport
	if err := json.NewDecoder(r).Decode(&reports); err != nil {
		return nil, fmt.Errorf("read Ginkgo JSON report: %w", err)
	}
	if len(reports) == 0 {
		return nil, fmt.Errorf("read Ginkgo JSON report: no suite in it")
	}
	var out []Result
	for _, rep := range reports {
		for _, s := range rep.SpecReports {
			texts := append([]string{}, s.ContainerHierarchyTexts...)
			if s.LeafNodeText != "" {
				texts = append(texts, s.LeafNodeText)
			}
			text := strings.Join(nonEmpty(texts), " ")
			msg := firstLine(s.Failure.Message)
			res := Result{Text: text, State: s.State, Time: s.RunTime, Message: msg}
			if s.LeafNodeType != "It" {
				if res.Passed() || res.Skipped() {
					continue
				}
				res.Text = strings.TrimSpace(s.LeafNodeType + " " + text)
				res.Why, res.Suite = msg, true
				out = append(out, res)
				continue
			}
			runs, why := sel.Decide(text)
			if !runs && why == "not selected" {
				continue
			}
			switch {
			case res.Skipped() && !runs:
				res.Why = why
			case res.Skipped():
				res.Why = msg
			case res.Failed():
				res.Why = msg
				if cause := sel.KnownCause(text); cause != "" {
					res.Why = cause + " — " + msg
				}
			}
			out = append(out, res)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Text < out[j].Text })
	return out, nil
}

// Summary is the table's last line: how many specs were selected, passed,
// failed and skipped, and the total spec time.
func Summary(results []Result) string {
	var passed, failed, skipped int
	var total time.Duration
	for _, r := range results {
		switch {
		case r.Passed():
			passed++
		case r.Skipped():
			skipped++
		default:
			failed++
		}
		total += r.Time
	}
	return fmt.Sprintf("%d selected: %d passed, %d failed, %d skipped; %s of spec time",
		len(results), passed, failed, skipped, total.Round(time.Second))
}

// WriteTable writes the results as a Markdown table (test, result, time,
// why) followed by the summary line.
func WriteTable(w io.Writer, results []Result) error {
	var b strings.Builder
	b.WriteString("| test | result | time | why |\n|---|---|---|---|\n")
	for _, r := range results {
		t := "—"
		if !r.Skipped() {
			t = r.Time.Round(100 * time.Millisecond).String()
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", cell(r.Text), r.State, t, cell(r.Why))
	}
	fmt.Fprintf(&b, "\n%s\n", Summary(results))
	_, err := io.WriteString(w, b.String())
	return err
}

func nonEmpty(ss []string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = strings.TrimSpace(s[:i])
	}
	const max = 200
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "") + "…"
	}
	return s
}

// cell escapes what would break a Markdown table cell.
func cell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

// The markers around the results in test/e2e/upstream/README.md.
const (
	ResultsBegin = "<!-- results: written by go tool mage e2eUpstream -->"
	ResultsEnd   = "<!-- end of results -->"
)

// ReplaceResults puts table between the results markers of the file at
// path, leaving the rest of it as it was; a file without both markers, in
// order, is an error and is not changed.
func ReplaceResults(path, table string) error {
	return ReplaceSection(path, ResultsBegin, ResultsEnd, table)
}

// ReplaceSection puts table between the markers begin and end of the file
// at path (the network-policy-api suite's README has a begin marker of its
// own), as ReplaceResults does.
func ReplaceSection(path, begin, end, table string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(b)
	i := strings.Index(s, begin)
	j := strings.Index(s, end)
	if i < 0 || j < i {
		return fmt.Errorf("%s: no %q ... %q section for the results", path, begin, end)
	}
	s = s[:i+len(begin)] + "\n\n" + strings.TrimSpace(table) + "\n\n" + s[j:]
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
