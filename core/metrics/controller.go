package metrics

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The controller's metrics.
var (
	CtrlPolicySyncs = Def{Name: "seine_controller_networkpolicy_syncs_total", Kind: Counter, Component: "controller",
		Help: "Kubernetes NetworkPolicy changes the controller translated into internal policies and groups."}
	CtrlPolicySyncDuration = Def{Name: "seine_controller_networkpolicy_sync_duration_seconds", Kind: Histogram, Component: "controller",
		Help: "Time to translate one NetworkPolicy change (its groups created or found, members computed from the label index).",
		// 10 µs to 0.65 s.
		Buckets: expBuckets(0.00001, 17)}
	CtrlPublishes = Def{Name: "seine_controller_publishes_total", Kind: Counter, Component: "controller",
		Help: "Publications of the changed groups and policies (spans computed, stores updated, agents notified)."}
	CtrlPublishDuration = Def{Name: "seine_controller_publish_duration_seconds", Kind: Histogram, Component: "controller",
		Help: "Time of one publication of the changed groups and policies, with their spans.",
		// 10 µs to 5 s (a cold start at 100k pods).
		Buckets: expBuckets(0.00001, 20)}
	CtrlQueueDepth = Def{Name: "seine_controller_queue_depth", Kind: Gauge, Component: "controller",
		Help: "Items waiting in a work queue of the controller (networkpolicy: NetworkPolicy changes to translate).", Labels: []string{"queue"}}
	CtrlUnpublished = Def{Name: "seine_controller_unpublished_objects", Kind: Gauge, Component: "controller",
		Help: "Objects computed and not published yet, by kind (appliedtogroup, addressgroup, networkpolicy).", Labels: []string{"kind"}}
	CtrlObjects = Def{Name: "seine_controller_objects", Kind: Gauge, Component: "controller",
		Help: "Objects the controller serves, by kind (appliedtogroup, addressgroup, networkpolicy).", Labels: []string{"kind"}}
	CtrlWatchers = Def{Name: "seine_controller_watchers", Kind: Gauge, Component: "controller",
		Help: "Open watches of the controlplane API, by resource.", Labels: []string{"resource"}}
	CtrlConnectedAgents = Def{Name: "seine_controller_connected_agents", Kind: Gauge, Component: "controller",
		Help: "Nodes whose agent has a watch of networkpolicies open."}
	CtrlReports = Def{Name: "seine_controller_node_reports_total", Kind: Counter, Component: "controller",
		Help: "Realization reports (NodePolicyStatus) the controller accepted from agents."}
	CtrlRealizationLag = Def{Name: "seine_controller_realization_lag_seconds", Kind: Histogram, Component: "controller",
		Help: "From the controller's last change of a policy (its rules or its span) to a node of its span reporting that generation realized.",
		// 10 ms to 164 s.
		Buckets: expBuckets(0.01, 15)}
	CtrlTraceflows = Def{Name: "seine_controller_traceflows_running", Kind: Gauge, Component: "controller",
		Help: "Traceflows holding a data-plane tag (at most 63 run at once); 0 while the cluster does not serve traceflows.crd.seine.io."}
)

func controllerDefs() []Def {
	return []Def{CtrlPolicySyncs, CtrlPolicySyncDuration, CtrlPublishes, CtrlPublishDuration, CtrlQueueDepth, CtrlUnpublished,
		CtrlObjects, CtrlWatchers, CtrlConnectedAgents, CtrlReports, CtrlRealizationLag, CtrlTraceflows}
}

// Controller holds the controller's event metrics; its methods do nothing
// on a nil *Controller.
type Controller struct {
	syncs, publishes, reports prometheus.Counter
	syncDur, publishDur, lag  prometheus.Histogram
}

// NewController creates the controller's event metrics and registers them
// with reg.
func NewController(reg prometheus.Registerer) (*Controller, error) {
	m := &Controller{
		syncs: CtrlPolicySyncs.Counter(), syncDur: CtrlPolicySyncDuration.Histogram(),
		publishes: CtrlPublishes.Counter(), publishDur: CtrlPublishDuration.Histogram(),
		reports: CtrlReports.Counter(), lag: CtrlRealizationLag.Histogram(),
	}
	if err := register(reg, m.syncs, m.syncDur, m.publishes, m.publishDur, m.reports, m.lag); err != nil {
		return nil, err
	}
	return m, nil
}

// PolicySynced records the translation of one NetworkPolicy change.
func (m *Controller) PolicySynced(d time.Duration) {
	if m != nil {
		m.syncs.Inc()
		m.syncDur.Observe(d.Seconds())
	}
}

// Published records one publication.
func (m *Controller) Published(d time.Duration) {
	if m != nil {
		m.publishes.Inc()
		m.publishDur.Observe(d.Seconds())
	}
}

// Report records an accepted node report.
func (m *Controller) Report() {
	if m != nil {
		m.reports.Inc()
	}
}

// Realized records the lag of one policy generation on one node.
func (m *Controller) Realized(lag time.Duration) {
	if m != nil {
		m.lag.Observe(max(lag, 0).Seconds())
	}
}

// Kinds of controlplane objects, as the kind label spells them.
var ObjectKinds = []string{"appliedtogroup", "addressgroup", "networkpolicy"}

// ObjectCounts are counts per kind, in ObjectKinds' order.
type ObjectCounts [3]int

// ControllerState is what ControllerCollector reads on every scrape.
type ControllerState interface {
	// QueueDepth is the NetworkPolicy work queue's length.
	QueueDepth() int
	Unpublished() ObjectCounts
	Stored() ObjectCounts
}

// ServerState is what the controlplane API server reports on scrape.
type ServerState interface {
	// Watchers are the open watches per kind (ObjectKinds' order).
	WatcherCounts() ObjectCounts
	ConnectedAgents() int
}

// ControllerCollector reads the controller's and its API server's state
// on every scrape (in memory, under their locks briefly).
type ControllerCollector struct {
	ctrl ControllerState
	srv  ServerState
	// traceflows counts the running Traceflows (SetTraceflows).
	traceflows atomic.Pointer[func() int]

	queue, unpublished, objects, watchers, agents, tfRunning *prometheus.Desc
}

// SetTraceflows gives the collector the Traceflow controller's count of
// running traces (core/traceflow's Controller.Running), once it runs.
func (c *ControllerCollector) SetTraceflows(running func() int) { c.traceflows.Store(&running) }

// NewControllerCollector registers the collector of ctrl's and srv's state
// with reg.
func NewControllerCollector(reg prometheus.Registerer, ctrl ControllerState, srv ServerState) (*ControllerCollector, error) {
	c := &ControllerCollector{ctrl: ctrl, srv: srv,
		queue: CtrlQueueDepth.Desc(), unpublished: CtrlUnpublished.Desc(), objects: CtrlObjects.Desc(),
		watchers: CtrlWatchers.Desc(), agents: CtrlConnectedAgents.Desc(), tfRunning: CtrlTraceflows.Desc()}
	if err := register(reg, c); err != nil {
		return nil, err
	}
	return c, nil
}

// Describe implements prometheus.Collector.
func (c *ControllerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.queue, c.unpublished, c.objects, c.watchers, c.agents, c.tfRunning} {
		ch <- d
	}
}

// watchResources are the resources of ObjectKinds as the API names them.
var watchResources = []string{"appliedtogroups", "addressgroups", "networkpolicies"}

// Collect implements prometheus.Collector.
func (c *ControllerCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	gauge(c.queue, c.ctrl.QueueDepth(), "networkpolicy")
	unpub, stored, watch := c.ctrl.Unpublished(), c.ctrl.Stored(), c.srv.WatcherCounts()
	for i, k := range ObjectKinds {
		gauge(c.unpublished, unpub[i], k)
		gauge(c.objects, stored[i], k)
		gauge(c.watchers, watch[i], watchResources[i])
	}
	gauge(c.agents, c.srv.ConnectedAgents())
	running := 0
	if fn := c.traceflows.Load(); fn != nil {
		running = (*fn)()
	}
	gauge(c.tfRunning, running)
}
