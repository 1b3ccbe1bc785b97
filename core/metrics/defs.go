// Package metrics defines every Prometheus metric Seine's agent and
// controller expose, once, as a Def: the docs' list (README.md) is
// generated from these definitions and a test fails when they differ, when
// a name breaks Prometheus' rules (promlint), or when a definition is not
// registered. The agent's and the controller's collectors that read state
// on scrape live here too, platform-neutral: they reach OVS only through
// the small interfaces of source.go. See README.md.
package metrics

import (
	"fmt"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// Kind is a metric's Prometheus type.
type Kind string

const (
	Counter   Kind = "counter"
	Gauge     Kind = "gauge"
	Histogram Kind = "histogram"
)

// Def is one metric: its full name, type, help, variable labels and, for
// a histogram, its buckets (sized to the range it measures).
type Def struct {
	Name    string
	Kind    Kind
	Help    string
	Labels  []string
	Buckets []float64
	// Component is who exposes it: "agent" or "controller".
	Component string
	// From says where the series come from when it is not Seine's own
	// code (a library Seine configures, e.g. libovsdb).
	From string
	// When names the condition without which it has no series (a feature
	// off by default, e.g. "flow export on"); "" when always exposed.
	When string
}

func (d Def) opts() prometheus.Opts { return prometheus.Opts{Name: d.Name, Help: d.Help} }

func (d Def) must(k Kind, labels bool) {
	if d.Kind != k || (len(d.Labels) > 0) != labels {
		panic(fmt.Sprintf("metric %s is a %s with labels %v", d.Name, d.Kind, d.Labels))
	}
}

// Counter returns a new counter of d (which has no labels).
func (d Def) Counter() prometheus.Counter {
	d.must(Counter, false)
	return prometheus.NewCounter(prometheus.CounterOpts(d.opts()))
}

// CounterVec returns a new counter vector of d.
func (d Def) CounterVec() *prometheus.CounterVec {
	d.must(Counter, true)
	return prometheus.NewCounterVec(prometheus.CounterOpts(d.opts()), d.Labels)
}

// Gauge returns a new gauge of d (which has no labels).
func (d Def) Gauge() prometheus.Gauge {
	d.must(Gauge, false)
	return prometheus.NewGauge(prometheus.GaugeOpts(d.opts()))
}

// Histogram returns a new histogram of d (which has no labels).
func (d Def) Histogram() prometheus.Histogram {
	d.must(Histogram, false)
	return prometheus.NewHistogram(prometheus.HistogramOpts{Name: d.Name, Help: d.Help, Buckets: d.Buckets})
}

// HistogramVec returns a new histogram vector of d.
func (d Def) HistogramVec() *prometheus.HistogramVec {
	d.must(Histogram, true)
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: d.Name, Help: d.Help, Buckets: d.Buckets}, d.Labels)
}

// Desc is d's descriptor, for collectors that build metrics on scrape.
func (d Def) Desc() *prometheus.Desc {
	return prometheus.NewDesc(d.Name, d.Help, d.Labels, nil)
}

// valueType is d's type for const metrics.
func (d Def) valueType() prometheus.ValueType {
	if d.Kind == Counter {
		return prometheus.CounterValue
	}
	return prometheus.GaugeValue
}

// Catalog is every metric Seine defines, sorted by name.
func Catalog() []Def {
	var all []Def
	for _, c := range [][]Def{agentDefs(), proxyDefs(), libovsdbDefs(), controllerDefs()} {
		all = append(all, c...)
	}
	slices.SortFunc(all, func(a, b Def) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return all
}

// register registers every collector with reg.
func register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// expBuckets is n exponential buckets from start, doubling.
func expBuckets(start float64, n int) []float64 { return prometheus.ExponentialBuckets(start, 2, n) }
