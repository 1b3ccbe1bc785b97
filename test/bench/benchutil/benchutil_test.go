package benchutil

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
)

// recorder is a side that records the order sides ran in and returns
// values from a list.
func recorder(name string, order *[]string, values ...float64) Side {
	return Side{Name: name, Run: func(round int) (Sample, error) {
		*order = append(*order, fmt.Sprintf("%d%s", round, name))
		return Sample{"ms": values[round%len(values)], "MB": 1.5}, nil
	}}
}

func TestRunRotatesOrder(t *testing.T) {
	t.Setenv(RoundsEnv, "")
	var order []string
	c := Comparison{Name: "t", Metrics: []string{"ms"}, Rounds: 4,
		Sides: []Side{recorder("a", &order, 1), recorder("b", &order, 2), recorder("c", &order, 4)}}
	r, err := c.Run()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"0a", "0b", "0c", "1b", "1c", "1a", "2c", "2a", "2b", "3a", "3b", "3c"}
	if !slices.Equal(order, want) {
		t.Errorf("order %v, want %v", order, want)
	}
	if r.Rounds() != 4 {
		t.Errorf("%d rounds, want 4", r.Rounds())
	}
	if got := r.Ratio("a", "b", "ms"); got != 0.5 {
		t.Errorf("a/b = %v, want 0.5", got)
	}
	if got := r.Ratio("a", "c", "ms"); got != 0.25 {
		t.Errorf("a/c = %v, want 0.25", got)
	}
	if len(r.Ratios) != 2 || r.Ratios[0] != (Ratio{"a", "b"}) || r.Ratios[1] != (Ratio{"a", "c"}) {
		t.Errorf("default ratios %v, want a/b and a/c", r.Ratios)
	}
}

// A failed run discards its whole round: both sides keep the same number
// of measurements, and the failed side's partner in that round is dropped.
func TestRunDiscardsFailedRounds(t *testing.T) {
	t.Setenv(RoundsEnv, "")
	flaky := Side{Name: "flaky", Run: func(round int) (Sample, error) {
		if round == 1 || round == 2 {
			return nil, fmt.Errorf("iperf3: nothing received: %w", ErrFailedRun)
		}
		return Sample{"ms": float64(10 + round)}, nil
	}}
	steady := Side{Name: "steady", Run: func(round int) (Sample, error) { return Sample{"ms": float64(100 + round)}, nil }}
	r, err := Comparison{Name: "t", Metrics: []string{"ms"}, Rounds: 3, Sides: []Side{flaky, steady}}.Run()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.Values["flaky"]["ms"], []float64{10, 13, 14}; !slices.Equal(got, want) {
		t.Errorf("flaky %v, want %v", got, want)
	}
	// Round 1 started with steady (rotation), which succeeded; it is dropped too.
	if got, want := r.Values["steady"]["ms"], []float64{100, 103, 104}; !slices.Equal(got, want) {
		t.Errorf("steady %v, want %v", got, want)
	}
	if len(r.Failed) != 2 || !strings.Contains(r.Failed[0], "round 1, flaky") {
		t.Errorf("failed %q", r.Failed)
	}
	if !strings.Contains(r.Table(), "2 discarded") {
		t.Errorf("table does not say rounds were discarded:\n%s", r.Table())
	}
}

func TestRunErrors(t *testing.T) {
	t.Setenv(RoundsEnv, "")
	ok := Side{Name: "ok", Run: func(int) (Sample, error) { return Sample{"ms": 1}, nil }}
	broken := errors.New("ovs-ofctl: exit status 1")
	for _, tc := range []struct {
		name string
		c    Comparison
		want string
	}{
		{"one side", Comparison{Metrics: []string{"ms"}, Rounds: 1, Sides: []Side{ok}}, "two sides"},
		{"broken side", Comparison{Metrics: []string{"ms"}, Rounds: 1, Sides: []Side{ok, {Name: "b", Run: func(int) (Sample, error) { return nil, broken }}}}, "exit status 1"},
		{"missing metric", Comparison{Metrics: []string{"ms", "MB"}, Rounds: 1, Sides: []Side{ok, {Name: "b", Run: ok.Run}}}, `measured no "MB"`},
		{"always failing", Comparison{Metrics: []string{"ms"}, Rounds: 2, MaxFailedRounds: 3, Sides: []Side{ok, {Name: "b", Run: func(int) (Sample, error) { return nil, ErrFailedRun }}}}, "4 rounds failed (at most 3 allowed) before 0 of 2"},
		{"duplicate side", Comparison{Metrics: []string{"ms"}, Rounds: 1, Sides: []Side{ok, ok}}, "two sides named"},
		{"unknown ratio", Comparison{Metrics: []string{"ms"}, Rounds: 1, Sides: []Side{ok, {Name: "b", Run: ok.Run}}, Ratios: []Ratio{{"ok", "c"}}}, "unknown side"},
		{"space in a unit", Comparison{Metrics: []string{"m s"}, Rounds: 1, Sides: []Side{ok, {Name: "b", Run: ok.Run}}}, "without spaces"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.c.Run()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestRoundsEnvOverrides(t *testing.T) {
	t.Setenv(RoundsEnv, "3")
	n := 0
	s := Side{Name: "a", Run: func(int) (Sample, error) { n++; return Sample{"ms": 1}, nil }}
	r, err := Comparison{Metrics: []string{"ms"}, Rounds: 7, ShortRounds: 1, Sides: []Side{s, {Name: "b", Run: s.Run}}}.Run()
	if err != nil {
		t.Fatal(err)
	}
	if r.Rounds() != 3 || n != 6 {
		t.Errorf("%d rounds, %d runs; want 3 and 6", r.Rounds(), n)
	}
	r, err = Comparison{Metrics: []string{"ms"}, Rounds: 2, FixedRounds: true, Sides: []Side{s, {Name: "b", Run: s.Run}}}.Run()
	if err != nil {
		t.Fatal(err)
	}
	if r.Rounds() != 2 {
		t.Errorf("%d fixed rounds, want 2 whatever %s says", r.Rounds(), RoundsEnv)
	}
	t.Setenv(RoundsEnv, "zero")
	if _, err := (Comparison{Metrics: []string{"ms"}, Rounds: 1, Sides: []Side{s, {Name: "b", Run: s.Run}}}).Run(); err == nil {
		t.Error("a malformed SEINE_BENCH_ROUNDS was accepted")
	}
}

func TestSummarize(t *testing.T) {
	st := Summarize([]float64{5, 1, 4, 2})
	if st.N != 4 || st.Min != 1 || st.Max != 5 || st.Median != 3 {
		t.Errorf("stats %+v", st)
	}
	if st := Summarize([]float64{3, 1, 2}); st.Median != 2 {
		t.Errorf("odd median %v, want 2", st.Median)
	}
	var v []float64
	for i := 1; i <= 200; i++ {
		v = append(v, float64(i))
	}
	p := Summarize(v)
	if p.Percentile(50) != 100 || p.Percentile(99) != 198 || p.Percentile(100) != 200 || p.Percentile(0) != 1 {
		t.Errorf("percentiles 50=%v 99=%v 100=%v 0=%v", p.Percentile(50), p.Percentile(99), p.Percentile(100), p.Percentile(0))
	}
	if !math.IsNaN(Summarize(nil).Median) {
		t.Error("the median of nothing is a number")
	}
}

func TestTable(t *testing.T) {
	t.Setenv(RoundsEnv, "")
	var order []string
	r, err := Comparison{Name: "install 10k", Metrics: []string{"ms"}, Rounds: 2,
		Sides: []Side{recorder("library", &order, 100, 300), recorder("ovs-ofctl", &order, 200, 400)}}.Run()
	if err != nil {
		t.Fatal(err)
	}
	tab := r.Table()
	for _, want := range []string{
		"install 10k: 2 rounds",
		"     side  metric  min  median  max\n",
		"  library      ms  100     200  300\n",
		"ovs-ofctl      ms  200     300  400\n",
		"library / ovs-ofctl (ms): 0.625 (rounds 0.500-0.750; ratio of medians 0.667)",
	} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
}
