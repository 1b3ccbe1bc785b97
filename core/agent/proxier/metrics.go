package proxier

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the proxy's Prometheus metrics.
type Metrics struct {
	// ProgrammingDuration is kube-proxy's network programming latency:
	// from the endpoints.kubernetes.io/last-change-trigger-time of an
	// EndpointSlice change (when a pod or Service change triggered it) to
	// the moment the bridge holds the result.
	ProgrammingDuration prometheus.Histogram
	// SyncDuration is the time of one sync (plan and bundle).
	SyncDuration prometheus.Histogram
	// Services is the number of Services installed.
	Services prometheus.Gauge
	// Rejected counts the connections answered as refused (a Service port
	// without endpoints).
	Rejected prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		ProgrammingDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "seine", Subsystem: "proxy", Name: "network_programming_duration_seconds",
			Help: "From the last-change-trigger-time of an EndpointSlice change to its flows installed on the node.",
			// kube-proxy's buckets: 0.25 s to 5 min, finer below 1 min;
			// and below 0.25 s, where Seine lives.
			Buckets: append(prometheus.ExponentialBuckets(0.001, 2, 8),
				append(prometheus.LinearBuckets(0.25, 0.25, 3), append(prometheus.LinearBuckets(1, 1, 59),
					append(prometheus.LinearBuckets(60, 5, 12), prometheus.LinearBuckets(120, 30, 7)...)...)...)...),
		}),
		SyncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "seine", Subsystem: "proxy", Name: "sync_duration_seconds",
			Help:    "Time of one sync of the changed Services to the bridge.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		Services: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "seine", Subsystem: "proxy", Name: "services_installed",
			Help: "Services whose flows the bridge holds.",
		}),
		Rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "seine", Subsystem: "proxy", Name: "rejected_connections_total",
			Help: "Connections to a Service port without endpoints answered as refused.",
		}),
	}
	for _, c := range []prometheus.Collector{m.ProgrammingDuration, m.SyncDuration, m.Services, m.Rejected} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
