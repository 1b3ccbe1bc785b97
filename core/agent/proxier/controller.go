// Package proxier is the agent's service proxy: it feeds Services and
// EndpointSlices to a core/proxy Tracker, turns the Services that changed
// into pipeline flows and groups (core/pipeline ServiceFlows), and installs
// the difference from what the bridge holds in one atomic OpenFlow bundle,
// ordered so that no flow ever references a missing group. It also answers
// the packet-ins of rejected connections, expires day-long affinity,
// flushes stale UDP conntrack entries, serves the health-check node ports
// and exports the network programming latency. See README.md.
package proxier

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/core/proxy"
	"github.com/seine-cni/seine/ovs/openflow"
)

// Writer applies OpenFlow messages on the live connection; *openflow.Conn
// implements it.
type Writer interface {
	// Bundle applies msgs atomically and in order.
	Bundle(ctx context.Context, msgs ...openflow.Message) error
	// Apply sends msgs outside a bundle (meters, packet-outs).
	Apply(ctx context.Context, msgs ...openflow.Message) error
	DumpFlows(ctx context.Context, table uint8, cookie, mask uint64) ([]openflow.FlowStats, error)
}

// ErrNotReady is returned by Node.Install before node setup is done.
var ErrNotReady = errors.New("node setup is not done yet")

// Node is what the controller needs from the agent.
type Node interface {
	// Install runs fn on the live OpenFlow connection with the node's
	// pipeline configuration and the round its flows carry, serialized
	// with the agent's other flow changes and full replays (which include
	// ReplayMessages). It returns ErrNotReady before node setup.
	Install(ctx context.Context, fn func(w Writer, n *pipeline.NodeConfig, r pipeline.Round) error) error
}

// ConntrackFlusher removes conntrack entries of the bridge's datapath. The
// zones the proxy uses are Open vSwitch's on every OS (the userspace
// datapath's own tracker, the kernel's or the Windows extension's), so the
// agent implements it with ovs-vswitchd's dpctl/flush-conntrack.
type ConntrackFlusher interface {
	// FlushConntrack removes the entries of zone matching orig (and reply,
	// when not empty): partial tuples in dpctl syntax, such as
	// "ct_nw_proto=17,ct_nw_dst=10.96.0.10,ct_tp_dst=53".
	FlushConntrack(ctx context.Context, zone uint16, orig, reply string) error
}

// Config configures a Controller.
type Config struct {
	NodeName string
	// ProxyName also takes Services labelled
	// service.kubernetes.io/service-proxy-name=<ProxyName>.
	ProxyName string
	Node      Node
	Logger    *slog.Logger
	// Conntrack, when set, receives the stale UDP entries to remove.
	Conntrack ConntrackFlusher
	// Metrics, when set, receives the proxy's metrics.
	Metrics *Metrics
	// HealthChecks, when set, serves the health-check node ports of
	// Services with externalTrafficPolicy Local.
	HealthChecks *HealthChecks
	// MinSyncInterval coalesces changes: after a sync, the next waits at
	// least this long (default 10 ms).
	MinSyncInterval time.Duration
	// Installed, when set, is called after every sync that changed what
	// the bridge holds (the agent re-syncs the host's service routes).
	Installed func()
}

// Controller is one node's service proxy.
type Controller struct {
	cfg  Config
	log  *slog.Logger
	node Node

	// mu guards the tracker and what the informers have synced.
	mu      sync.Mutex
	tracker *proxy.Tracker
	primed  bool // the first state was computed (Prime)
	// pending are trigger times of changes whose sync failed: the
	// latency of the retry counts from them.
	pending map[string][]time.Time

	// instMu guards what the bridge holds (or the agent's next replay
	// installs). It is taken under the agent's flow lock (Sync, and the
	// replay's ReplayMessages) or its state lock (Services), so nothing
	// may wait for the agent while holding it.
	instMu    sync.Mutex
	installed map[string]*installed
	host      hostRefs        // counted over installed (setInstalled)
	unknown   map[string]bool // the last install's outcome is unknown
	ids       *portIDs

	kick    chan struct{}
	rejects chan *openflow.PacketIn
}

// installed is one Service as the bridge holds it.
type installed struct {
	svc   *proxy.Service
	ids   map[string]uint32         // port key -> port ID
	flows map[string]*openflow.Flow // by table, priority and match
	// groups are the fingerprints of the Service's groups (groupPrint):
	// the buckets are not kept, a replay builds them again.
	groups map[uint32]uint64
	// affinity maps the learned-flow IDs of the Service's endpoints to
	// their timeouts in seconds.
	affinity map[uint64]uint32
}

// New returns a controller that installs nothing until Prime and Run.
func New(cfg Config) (*Controller, error) {
	if cfg.Node == nil || cfg.Logger == nil {
		return nil, errors.New("proxier: node and logger are required")
	}
	if cfg.MinSyncInterval == 0 {
		cfg.MinSyncInterval = 10 * time.Millisecond
	}
	tr, err := proxy.New(proxy.Config{NodeName: cfg.NodeName, ProxyName: cfg.ProxyName})
	if err != nil {
		return nil, err
	}
	return &Controller{
		cfg: cfg, log: cfg.Logger, node: cfg.Node, tracker: tr, pending: map[string][]time.Time{},
		installed: map[string]*installed{}, unknown: map[string]bool{}, ids: newPortIDs(),
		kick: make(chan struct{}, 1), rejects: make(chan *openflow.PacketIn, 64),
	}, nil
}

func (c *Controller) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// UpdateService, DeleteService, UpdateSlice, DeleteSlice and SetNodeLabels
// are the informers' handlers.
func (c *Controller) UpdateService(s *corev1.Service) {
	c.update(func(t *proxy.Tracker) { t.UpdateService(s) })
}

func (c *Controller) DeleteService(namespace, name string) {
	c.update(func(t *proxy.Tracker) { t.DeleteService(namespace, name) })
}

func (c *Controller) UpdateSlice(s *discoveryv1.EndpointSlice) {
	c.UpdateParsedSlice(proxy.ParseSlice(s))
}

func (c *Controller) DeleteSlice(s *discoveryv1.EndpointSlice) {
	c.DeleteParsedSlice(proxy.ParseSlice(s))
}

// UpdateParsedSlice and DeleteParsedSlice take slices the informer's
// transform parsed (proxy.ParseSlice); the tracker keeps s itself.
func (c *Controller) UpdateParsedSlice(s *proxy.Slice) {
	c.update(func(t *proxy.Tracker) { t.UpdateParsedSlice(s) })
}

func (c *Controller) DeleteParsedSlice(s *proxy.Slice) {
	c.update(func(t *proxy.Tracker) { t.DeleteParsedSlice(s) })
}

func (c *Controller) SetNodeLabels(labels map[string]string) {
	c.update(func(t *proxy.Tracker) { t.SetNodeLabels(labels) })
}

// update applies one informer event to the tracker and wakes the loop.
func (c *Controller) update(fn func(*proxy.Tracker)) {
	c.mu.Lock()
	fn(c.tracker)
	c.mu.Unlock()
	c.wake()
}

// Prime takes every Service the informers have delivered as installed
// without touching the bridge: the agent's next full replay (which asks
// ReplayMessages) installs them with the pods' flows. Call it once the
// informers have synced and before the first OpenFlow connection, so a
// restarted agent never runs a moment without its Services.
func (c *Controller) Prime() {
	c.mu.Lock()
	keys := c.tracker.Changed()
	wants := make(map[string]*proxy.Service, len(keys))
	for _, k := range keys {
		wants[k] = c.tracker.Service(k)
	}
	c.primed = true
	c.mu.Unlock()
	c.instMu.Lock()
	defer c.instMu.Unlock()
	for _, k := range keys {
		if w := wants[k]; w != nil {
			c.setInstalled(k, &installed{svc: w, ids: c.ids.assign(w), flows: map[string]*openflow.Flow{},
				groups: map[uint32]uint64{}, affinity: map[uint64]uint32{}})
			c.unknown[k] = true // built by the replay
		}
	}
}

// ReplayMessages returns what a full replay under round r installs for the
// Services: the meters to ensure (outside the bundle), then a bundle's
// messages: every group deleted and added again, and the flows that use
// them. The agent sends the bundle's messages before its own flows, and
// deletes the previous rounds' flows afterwards. It is called under the
// agent's flow lock.
func (c *Controller) ReplayMessages(n pipeline.NodeConfig, r pipeline.Round) (meters []*openflow.MeterEntry, msgs []openflow.Message, flows []*openflow.Flow, err error) {
	c.instMu.Lock()
	defer c.instMu.Unlock()
	msgs = append(msgs, openflow.DeleteGroup(openflow.GroupAll))
	for _, k := range sortedKeys(c.installed) {
		in := c.installed[k]
		set, err := pipeline.ServiceFlows(n, in.svc, in.ids, r)
		if err != nil {
			c.log.Error("service left out of the replay", "service", k, "err", err)
			c.setInstalled(k, nil)
			continue
		}
		for _, g := range set.Groups {
			mods, err := openflow.GroupMods(openflow.GroupAdd, g)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("service %s: %w", k, err)
			}
			// Encoded now: every Service's groups are held until the
			// bundle is sent, as bytes (at 10,000 Services of 10
			// endpoints 14.6 MB, against 27.5 MB as group objects).
			for _, m := range mods {
				e, err := openflow.Encoded(m)
				if err != nil {
					return nil, nil, nil, fmt.Errorf("service %s: %w", k, err)
				}
				msgs = append(msgs, e)
			}
		}
		flows = append(flows, set.Flows...)
		c.record(k, in.svc, in.ids, set)
		delete(c.unknown, k)
	}
	return pipeline.ServiceMeters(), msgs, flows, nil
}

// record makes set what the bridge holds for Service k.
func (c *Controller) record(k string, svc *proxy.Service, ids map[string]uint32, set pipeline.ServiceFlowSet) {
	in := &installed{svc: svc, ids: ids, flows: make(map[string]*openflow.Flow, len(set.Flows)),
		groups: make(map[uint32]uint64, len(set.Groups)), affinity: map[uint64]uint32{}}
	for _, f := range set.Flows {
		in.flows[flowKey(f)] = f
	}
	for _, g := range set.Groups {
		in.groups[g.ID] = groupPrint(g)
	}
	for i := range svc.Ports {
		p := &svc.Ports[i]
		if p.AffinitySeconds == 0 {
			continue
		}
		for _, eps := range [][]proxy.Endpoint{p.ClusterEndpoints, p.LocalEndpoints} {
			for _, e := range eps {
				in.affinity[pipeline.AffinityID(ids[p.Key()], e.AddrPort())] = p.AffinitySeconds
			}
		}
	}
	c.setInstalled(k, in)
}

// setInstalled records in as what the bridge holds for Service k (nil:
// nothing) and keeps the host's addresses and node ports counted. The
// caller holds instMu.
func (c *Controller) setInstalled(k string, in *installed) {
	if old := c.installed[k]; old != nil {
		c.host.count(old.svc, -1)
	}
	if in == nil {
		delete(c.installed, k)
		return
	}
	c.host.count(in.svc, 1)
	c.installed[k] = in
}

// NodePort is a node port of an installed Service.
type NodePort struct {
	Protocol uint8
	Port     uint16
}

// hostRefs counts, over the installed Services, the IPv4 external and
// load-balancer IPs the host routes into the bridge and the node ports it
// redirects: the agent's host sync after every change reads the sets, not
// every Service.
type hostRefs struct {
	ips   map[netip.Addr]int
	ports map[NodePort]int
}

func (h *hostRefs) count(s *proxy.Service, d int) {
	if h.ips == nil {
		h.ips, h.ports = map[netip.Addr]int{}, map[NodePort]int{}
	}
	for i := range s.Ports {
		p := &s.Ports[i]
		for _, ips := range [][]netip.Addr{p.ExternalIPs, p.LoadBalancerIPs} {
			for _, ip := range ips {
				if ip.Is4() {
					if h.ips[ip] += d; h.ips[ip] <= 0 {
						delete(h.ips, ip)
					}
				}
			}
		}
		if p.NodePort != 0 {
			np := NodePort{Protocol: p.Protocol, Port: p.NodePort}
			if h.ports[np] += d; h.ports[np] <= 0 {
				delete(h.ports, np)
			}
		}
	}
}

// HostAddresses returns the IPv4 external and load-balancer IPs and the
// node ports of the installed Services, sorted: what the host routes into
// the bridge and redirects there. Its cost is theirs, not the Services'.
func (c *Controller) HostAddresses() ([]netip.Addr, []NodePort) {
	c.instMu.Lock()
	defer c.instMu.Unlock()
	ips := slices.SortedFunc(maps.Keys(c.host.ips), netip.Addr.Compare)
	ports := slices.SortedFunc(maps.Keys(c.host.ports), func(x, y NodePort) int {
		if x.Protocol != y.Protocol {
			return int(x.Protocol) - int(y.Protocol)
		}
		return int(x.Port) - int(y.Port)
	})
	return ips, ports
}

// groupPrint fingerprints a group by its type and the encoding of its
// buckets.
func groupPrint(g *openflow.GroupEntry) uint64 {
	h := fnv.New64a()
	h.Write([]byte{g.Type})
	h.Write([]byte(g.SelectionMethod))
	h.Write(g.BucketBytes())
	return h.Sum64()
}
