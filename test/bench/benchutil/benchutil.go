// Package benchutil runs a benchmark as a comparison measured in one run:
// the same work done by each side (Seine and a baseline), in rounds whose
// order rotates (A B, B A, A B, ...), so a machine whose speed drifts with
// the load of other work treats every side alike. It prints min / median /
// max per side and the ratio of each round's measurements, and reports them
// with b.ReportMetric. See README.md.
package benchutil

import (
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
)

// Sample is one run's measurements by metric name; a metric's name is its
// unit ("ms", "Gbit/s", "GiB-peak-RSS").
type Sample map[string]float64

// ErrFailedRun marks a run that produced no measurement for a reason
// outside the benchmark's code (iperf3 reported an error, nothing was
// received): the whole round is discarded, so every side keeps the same
// number of successful runs. Wrap it: fmt.Errorf("...: %w", ErrFailedRun).
// Any other error stops the comparison.
var ErrFailedRun = errors.New("failed run")

// Side is one contestant: Run does the work once and returns what it
// measured. It is called once per round; round counts from 0 over every
// attempted round.
type Side struct {
	Name string
	Run  func(round int) (Sample, error)
}

// Ratio names a quotient to report: Num's measurement over Den's, per round.
type Ratio struct{ Num, Den string }

// Comparison describes the rounds to run.
type Comparison struct {
	// Name heads the printed table.
	Name string
	// Metrics are the names every Run returns, in display order.
	Metrics []string
	// Sides[0] is the subject; by default it is compared with each other
	// side.
	Sides []Side
	// Ratios to report; default Sides[0] over each other side.
	Ratios []Ratio
	// Rounds is how many rounds must succeed (every side measured);
	// ShortRounds replaces it under go test -short (default: one round per
	// side, so each side goes first once). SEINE_BENCH_ROUNDS overrides
	// both unless FixedRounds is set.
	Rounds, ShortRounds int
	// FixedRounds says the rounds are the workload itself (one pod each,
	// 200 pods), not repetitions of it: SEINE_BENCH_ROUNDS leaves them be.
	FixedRounds bool
	// MaxFailedRounds is how many discarded rounds are tolerated before
	// the comparison fails (default: Rounds).
	MaxFailedRounds int
}

// RoundsEnv overrides the number of rounds of every comparison.
const RoundsEnv = "SEINE_BENCH_ROUNDS"

// Result holds every successful round's measurements.
type Result struct {
	Name    string
	Metrics []string
	Sides   []string
	// Values[side][metric] lists one value per successful round, in order.
	Values map[string]map[string][]float64
	Ratios []Ratio
	// Failed lists why each discarded round was discarded.
	Failed []string
}

// rounds is the number of successful rounds wanted.
func (c *Comparison) rounds() (int, error) {
	n := c.Rounds
	if testing.Testing() && testing.Short() {
		n = c.ShortRounds
		if n == 0 {
			n = len(c.Sides)
		}
	}
	if v := os.Getenv(RoundsEnv); v != "" && !c.FixedRounds {
		r, err := strconv.Atoi(v)
		if err != nil || r < 1 {
			return 0, fmt.Errorf("%s=%q: want a positive number of rounds", RoundsEnv, v)
		}
		n = r
	}
	if n < 1 {
		return 0, fmt.Errorf("%s: %d rounds", c.Name, n)
	}
	return n, nil
}

// Run runs the rounds: round r starts with side r mod len(Sides) and goes
// on in order, wrapping around. A round in which a side fails with
// ErrFailedRun is discarded; any other error, a sample missing a metric,
// or more than MaxFailedRounds discarded rounds stops it with an error.
func (c Comparison) Run() (*Result, error) {
	if len(c.Sides) < 2 || len(c.Metrics) == 0 {
		return nil, fmt.Errorf("%s: a comparison needs two sides and a metric", c.Name)
	}
	want, err := c.rounds()
	if err != nil {
		return nil, err
	}
	maxFailed := c.MaxFailedRounds
	if maxFailed == 0 {
		maxFailed = want
	}
	r := &Result{Name: c.Name, Metrics: c.Metrics, Values: map[string]map[string][]float64{}, Ratios: c.Ratios}
	for _, m := range c.Metrics {
		if m == "" || strings.ContainsAny(m, " \t\n") {
			return nil, fmt.Errorf("%s: metric %q: want a unit without spaces", c.Name, m)
		}
	}
	for _, s := range c.Sides {
		if s.Name == "" || strings.ContainsAny(s.Name, " \t\n") {
			return nil, fmt.Errorf("%s: side %q: want a name without spaces", c.Name, s.Name)
		}
		if _, dup := r.Values[s.Name]; dup {
			return nil, fmt.Errorf("%s: two sides named %q", c.Name, s.Name)
		}
		r.Sides = append(r.Sides, s.Name)
		r.Values[s.Name] = map[string][]float64{}
	}
	if len(r.Ratios) == 0 {
		for _, s := range c.Sides[1:] {
			r.Ratios = append(r.Ratios, Ratio{c.Sides[0].Name, s.Name})
		}
	}
	for _, q := range r.Ratios {
		if r.Values[q.Num] == nil || r.Values[q.Den] == nil {
			return nil, fmt.Errorf("%s: ratio %s/%s names an unknown side", c.Name, q.Num, q.Den)
		}
	}
	for round, ok := 0, 0; ok < want; round++ {
		samples := make([]Sample, len(c.Sides))
		var failed error
		for k := range c.Sides {
			i := (round + k) % len(c.Sides)
			s, err := c.Sides[i].Run(round)
			if errors.Is(err, ErrFailedRun) {
				failed = fmt.Errorf("round %d, %s: %w", round, c.Sides[i].Name, err)
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: round %d, %s: %w", c.Name, round, c.Sides[i].Name, err)
			}
			for _, m := range c.Metrics {
				if _, has := s[m]; !has {
					return nil, fmt.Errorf("%s: round %d, %s measured no %q", c.Name, round, c.Sides[i].Name, m)
				}
			}
			samples[i] = s
		}
		if failed != nil {
			r.Failed = append(r.Failed, failed.Error())
			if len(r.Failed) > maxFailed {
				return r, fmt.Errorf("%s: %d rounds failed (at most %d allowed) before %d of %d succeeded:\n%s",
					c.Name, len(r.Failed), maxFailed, ok, want, strings.Join(r.Failed, "\n"))
			}
			continue
		}
		for i, s := range c.Sides {
			for _, m := range c.Metrics {
				r.Values[s.Name][m] = append(r.Values[s.Name][m], samples[i][m])
			}
		}
		ok++
	}
	return r, nil
}

// Rounds is the number of successful rounds.
func (r *Result) Rounds() int {
	return len(r.Values[r.Sides[0]][r.Metrics[0]])
}

// Stats summarizes one side's metric.
func (r *Result) Stats(side, metric string) Stats { return Summarize(r.Values[side][metric]) }

// RoundRatios is num/den of metric in each successful round.
func (r *Result) RoundRatios(num, den, metric string) []float64 {
	a, b := r.Values[num][metric], r.Values[den][metric]
	out := make([]float64, len(a))
	for i := range a {
		out[i] = a[i] / b[i]
	}
	return out
}

// Ratio is the median over the rounds of num/den of metric: each round's
// two measurements were taken next to each other, under the same load.
func (r *Result) Ratio(num, den, metric string) float64 {
	return Summarize(r.RoundRatios(num, den, metric)).Median
}

// Stats are the order statistics of a set of measurements.
type Stats struct {
	N                int
	Min, Median, Max float64
	sorted           []float64
}

// Summarize computes Stats; the median of an even count is the mean of the
// middle two.
func Summarize(v []float64) Stats {
	s := slices.Clone(v)
	slices.Sort(s)
	st := Stats{N: len(s), sorted: s, Min: math.NaN(), Median: math.NaN(), Max: math.NaN()}
	if len(s) == 0 {
		return st
	}
	st.Min, st.Max = s[0], s[len(s)-1]
	if len(s)%2 == 1 {
		st.Median = s[len(s)/2]
	} else {
		st.Median = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return st
}

// Percentile is the nearest-rank percentile p (0-100) of the values.
func (s Stats) Percentile(p float64) float64 {
	if s.N == 0 {
		return math.NaN()
	}
	k := int(math.Ceil(p/100*float64(s.N))) - 1
	return s.sorted[max(0, min(k, s.N-1))]
}

// Table renders the result for a person: per side and metric min, median
// and max over the rounds, then each ratio (median over the rounds, and
// its range).
func (r *Result) Table() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s: %d rounds, order rotated each round", r.Name, r.Rounds())
	if len(r.Failed) > 0 {
		fmt.Fprintf(&sb, ", %d discarded (%s)", len(r.Failed), strings.Join(r.Failed, "; "))
	}
	sb.WriteString("\n")
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "side\tmetric\tmin\tmedian\tmax\t")
	for _, m := range r.Metrics {
		for _, s := range r.Sides {
			st := r.Stats(s, m)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", s, m, num(st.Min), num(st.Median), num(st.Max))
		}
	}
	tw.Flush()
	for _, q := range r.Ratios {
		for _, m := range r.Metrics {
			st := Summarize(r.RoundRatios(q.Num, q.Den, m))
			fmt.Fprintf(&sb, "  %s / %s (%s): %.3f (rounds %.3f-%.3f; ratio of medians %.3f)\n", q.Num, q.Den, m,
				st.Median, st.Min, st.Max, r.Stats(q.Num, m).Median/r.Stats(q.Den, m).Median)
		}
	}
	return sb.String()
}

func num(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

// Report prints the table on standard output (go test shortens a
// benchmark's log to ten lines unless -v is given) and reports, for go
// test -bench's result line,
// each side's min and median of every metric ("<side>-min-<metric>",
// "<side>-median-<metric>") and each ratio ("<num>/<den>-<metric>-ratio").
func (r *Result) Report(b *testing.B) {
	b.Helper()
	fmt.Printf("%s:\n%s", b.Name(), r.Table())
	for _, s := range r.Sides {
		for _, m := range r.Metrics {
			st := r.Stats(s, m)
			b.ReportMetric(st.Min, s+"-min-"+m)
			b.ReportMetric(st.Median, s+"-median-"+m)
		}
	}
	for _, q := range r.Ratios {
		for _, m := range r.Metrics {
			b.ReportMetric(r.Ratio(q.Num, q.Den, m), q.Num+"/"+q.Den+"-"+m+"-ratio")
		}
	}
	b.ReportMetric(float64(len(r.Failed)), "discarded-rounds")
}
