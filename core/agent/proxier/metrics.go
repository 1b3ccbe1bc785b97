package proxier

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/seine-cni/seine/core/metrics"
)

// Metrics are the proxy's Prometheus metrics (defined in core/metrics).
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
		ProgrammingDuration: metrics.ProxyProgrammingDuration.Histogram(),
		SyncDuration:        metrics.ProxySyncDuration.Histogram(),
		Services:            metrics.ProxyServices.Gauge(),
		Rejected:            metrics.ProxyRejected.Counter(),
	}
	for _, c := range []prometheus.Collector{m.ProgrammingDuration, m.SyncDuration, m.Services, m.Rejected} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
