// Package agent is Seine's node agent: it sets up the node's bridge through
// the platform backend, programs the OpenFlow pipeline, serves the CNI
// requests of the node's runtime (pod ADD/DEL/CHECK/STATUS/GC), follows the
// other nodes to reach their pods, and recovers its state from OVSDB and IPAM
// after a restart. See README.md.
package agent

import (
	"context"
	"errors"
	"fmt"
	"github.com/seine-cni/seine/core/hostport"
	"log/slog"
	"maps"
	"net/netip"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/seine-cni/seine/cni/server"
	"github.com/seine-cni/seine/core/agent/policy"
	"github.com/seine-cni/seine/core/agent/policywatch"
	"github.com/seine-cni/seine/core/agent/proxier"
	"github.com/seine-cni/seine/core/auditlog"
	"github.com/seine-cni/seine/core/bundle"
	"github.com/seine-cni/seine/core/flowexport"
	"github.com/seine-cni/seine/core/ipam"
	"github.com/seine-cni/seine/core/metrics"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/core/sriov"
	"github.com/seine-cni/seine/core/traceflow"
	"github.com/seine-cni/seine/ovs/openflow"
	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

// OVSDB is what the agent needs from the Open_vSwitch database;
// *ovsdb.Client implements it.
type OVSDB interface {
	platform.OVSDB
	ListPorts(ctx context.Context, match map[string]string) ([]ovsdb.PortInfo, error)
}

// Options are the agent's collaborators. Everything but Switch is required.
type Options struct {
	Config  *Config
	Logger  *slog.Logger
	Kube    kubernetes.Interface
	OVSDB   OVSDB
	Backend platform.Backend
	// NewSwitch defaults to OpenFlowSwitch.
	NewSwitch NewSwitchFunc
	// ControlPlane, when set, is how the agent reaches seine-controller's
	// controlplane.seine.io API (through the kube-apiserver's aggregation):
	// the agent watches its node's policies there. Without it the agent
	// enforces only the policies kept on disk.
	ControlPlane *rest.Config
	// Metrics, when set, receives the agent's metrics; the health
	// endpoint serves it at /metrics. Default: a registry of its own.
	Metrics *prometheus.Registry
	// RecentLog, when set, holds the agent's latest log lines for its
	// part of a support bundle (supportbundle.go).
	RecentLog *bundle.LogRing
}

// Agent is one node's agent.
type Agent struct {
	// policyRejects are the packet-ins of connections tiered rules
	// rejected, waiting for their answer (policyreject.go).
	policyRejects chan *openflow.PacketIn
	// fqdn keeps the addresses of domain-name peers (fqdn.go): the policy
	// watch syncs through it.
	fqdn *fqdnPeers
	// audit is the policy audit log (policylog.go).
	audit *auditlog.Logger

	cfg     *Config
	log     *slog.Logger
	kube    kubernetes.Interface
	db      OVSDB
	backend platform.Backend
	sw      Switch
	// controlPlane reaches seine-controller's API (Options.ControlPlane).
	controlPlane *rest.Config

	mode   pipeline.TrafficMode
	tunnel pipeline.TunnelType
	topo   platform.Topology

	nodes       corelisters.NodeLister
	nodesSynced cache.InformerSynced
	factory     informers.SharedInformerFactory
	kick        chan struct{}

	ipam      *ipam.Allocator
	nodeState platform.NodeState
	podMTU    int
	gateways  []netip.Prefix

	// mu guards the desired flow state and the round its flows carry. It
	// is held only briefly, never across a call to OVS: see lockFlows for
	// what serializes the writes of flows.
	mu   sync.Mutex
	node *pipeline.NodeConfig // nil until node setup is done
	pods map[ipam.Key]*podState
	// hostPorts are the local pods' host ports, reserved by ADD
	// (hostports.go).
	hostPorts hostport.Table
	peers     []pipeline.Peer
	round     pipeline.Round

	// flowLock is the flow lock (lockFlows); onSwitch, guarded by it, is
	// the pipeline's flows (all but policy) of the current round as the
	// last writes installed them, by Key, or nil when that is unknown.
	flowLock chan struct{}
	onSwitch map[string]*openflow.Flow

	hostMu     sync.Mutex
	lastHost   string
	hostResync time.Duration // see keepHostRules

	nextHops nextHops // peers' next-hop MACs for the noEncap direct path

	tnlKick  chan struct{} // asks keepTunnelNeighbours for a check
	vswitchd func(context.Context) (vswitchdControl, error)

	// Datapath flow cache purges by policy changes (DatapathStats).
	dpFlushes, dpDeleted atomic.Int64

	// Flow export (flowexport.go): what it waits for, its resolver, and
	// the exporter once it runs (read by the metrics).
	flowExportSynced []cache.InformerSynced
	flowResolver     flowexport.Resolver
	flowExporter     atomic.Pointer[flowexport.Exporter]

	ready  atomic.Bool
	reason atomic.Value // string: why not ready
	// serveCNI starts answering the runtime (serveCNISocket); the unit
	// tests under Wine, which has no AF_UNIX sockets, call the handler
	// directly instead.
	serveCNI func() (stop func(), err error)

	policy *policy.Controller
	tf     atomic.Pointer[traceflow.Agent] // nil without a kube-apiserver
	// pwatch follows the controller's policies; nil without a
	// kube-apiserver (its connection is in the node's SeineAgentInfo).
	pwatch atomic.Pointer[policywatch.Watcher]

	late lateConns // pods waiting for their interface (late.go)
	// recentLog is Options.RecentLog.
	recentLog *bundle.LogRing

	sriovInfo atomic.Pointer[sriov.NodeInfo] // set by node setup (vf.go)

	// The service proxy (nil in the kube-proxy mode).
	proxy             *proxier.Controller
	proxySynced       []cache.InformerSynced
	serviceCIDRLister networkinglisters.ServiceCIDRLister
	healthChecks      *proxier.HealthChecks
	noNodePortsLogged bool
	metrics           *prometheus.Registry
	m                 *metrics.Agent // the agent's event metrics (metrics.go)
	connectedOnce     atomic.Bool    // a connection to ovs-vswitchd was made
}

var errNotReady = errors.New("node setup is not done yet")

// TunnelPort is the name of the tunnel port on the bridge.
const TunnelPort = "seine-tun0"

// New checks the options and returns an agent that has not started.
func New(o Options) (*Agent, error) {
	if o.Config == nil || o.Kube == nil || o.OVSDB == nil || o.Backend == nil || o.Logger == nil {
		return nil, errors.New("agent: config, logger, kube client, OVSDB and backend are required")
	}
	if err := o.Config.Validate(); err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	a := &Agent{
		cfg: o.Config, log: o.Logger, controlPlane: o.ControlPlane, kube: o.Kube, db: o.OVSDB, backend: o.Backend,
		pods: map[ipam.Key]*podState{}, flowLock: make(chan struct{}, 1),
		kick: make(chan struct{}, 1), tnlKick: make(chan struct{}, 1),
		policyRejects: make(chan *openflow.PacketIn, policyRejectQueue),
		vswitchd:      dialVswitchd(o.Config.OVS.RunDir),
		hostResync:    o.Config.hostRulesResyncPeriod(),
	}
	a.serveCNI = a.serveCNISocket
	a.topo, _ = a.cfg.topology()
	a.mode, _ = a.cfg.trafficMode()
	if a.mode != pipeline.NoEncap {
		a.tunnel, _ = a.cfg.tunnelType()
	}
	a.metrics = o.Metrics
	a.recentLog = o.RecentLog
	if a.metrics == nil {
		a.metrics = prometheus.NewRegistry()
	}
	if err := a.setupMetrics(); err != nil {
		return nil, err
	}
	newSwitch := o.NewSwitch
	if newSwitch == nil {
		newSwitch = observedSwitch(a.m.FlowOperation)
	}
	a.sw = newSwitch("unix:"+filepath.Join(a.cfg.OVS.RunDir, a.cfg.OVS.Bridge+".mgmt"), a.onConnectCounted, a.onPacketIn)
	// The informers' caches hold every Node, Service and EndpointSlice:
	// their managed fields (often the largest part) are never read.
	a.factory = informers.NewSharedInformerFactoryWithOptions(a.kube, 0, informers.WithTransform(stripManagedFields))
	inf := a.factory.Core().V1().Nodes()
	a.nodes = inf.Lister()
	a.nodesSynced = inf.Informer().HasSynced
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { a.nodeEvent(o) },
		UpdateFunc: func(_, o any) { a.nodeEvent(o) },
		DeleteFunc: func(any) { a.poke() },
	}); err != nil {
		return nil, fmt.Errorf("node informer: %w", err)
	}
	if err := a.watchServiceCIDRs(); err != nil {
		return nil, err
	}
	if a.cfg.proxyMode() == ProxyModeSeine {
		if err := a.setupProxy(a.metrics); err != nil {
			return nil, err
		}
	}
	if err := a.setupFlowExport(); err != nil {
		return nil, err
	}
	audit, err := auditlog.New(auditlog.Config{Path: a.cfg.PolicyAuditLogFile})
	if err != nil {
		return nil, err
	}
	a.audit = audit
	pc, err := policy.New(policy.Config{Node: policyNode{a}, Logger: a.log.With("component", "policy"), StateFile: policyStateFile(a.cfg),
		ExportDenied: a.cfg.FlowExport != nil && a.cfg.FlowExport.Collector != ""})
	if err != nil {
		return nil, err
	}
	a.policy = pc
	a.fqdn = newFQDNPeers(a, pc)
	a.setNotReady("starting")
	return a, nil
}

// stripManagedFields drops what the agent never reads from an object before
// an informer caches it.
func stripManagedFields(o any) (any, error) {
	if m, ok := o.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return o, nil
}

// nodeEvent pokes the peer loop and gives the proxy this node's labels
// (its topology zone).
func (a *Agent) nodeEvent(o any) {
	if n, ok := o.(*corev1.Node); ok && n.Name == a.cfg.NodeName && a.proxy != nil {
		a.proxy.SetNodeLabels(n.Labels)
	}
	a.poke()
}

func (a *Agent) poke() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

func (a *Agent) setNotReady(why string) {
	a.ready.Store(false)
	a.reason.Store(why)
}

// Ready reports whether node setup is done and the CNI server is serving.
func (a *Agent) Ready() (bool, string) {
	if a.ready.Load() {
		return true, "ready"
	}
	s, _ := a.reason.Load().(string)
	return false, s
}

// Run sets the node up, serves CNI requests and follows the other nodes
// until ctx ends. Ending ctx, also during start-up, is not an error.
func (a *Agent) Run(ctx context.Context) error {
	err := a.run(ctx)
	if ctx.Err() != nil {
		if err != nil {
			a.log.Info("stopped during start-up", "err", err)
		}
		return nil
	}
	return err
}

func (a *Agent) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	// Whatever ends Run, the informers and the OpenFlow connection stop
	// with it.
	defer func() {
		cancel()
		wg.Wait()
		a.late.wait()
		a.factory.Shutdown()
	}()
	if a.cfg.MetricsAddress != "" {
		stop, err := a.serveMetrics(a.cfg.MetricsAddress)
		if err != nil {
			return err
		}
		defer stop()
	}
	if a.cfg.HealthAddress != "" {
		stop, err := a.serveHealth(a.cfg.HealthAddress)
		if err != nil {
			return err
		}
		defer stop()
	}
	a.late.setContext(ctx)
	a.factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), a.nodesSynced) {
		return fmt.Errorf("node informer: %w", context.Cause(ctx))
	}
	if err := a.requireServiceCIDRAPI(ctx); err != nil {
		return err
	}
	if !cache.WaitForCacheSync(ctx.Done(), a.proxySynced...) {
		return fmt.Errorf("service informers: %w", context.Cause(ctx))
	}
	if a.proxy != nil {
		defer a.healthChecks.Close()
	}
	if err := retry(ctx, a.log, "node setup", a.setupNode); err != nil {
		return err
	}
	if err := a.recoverPods(ctx); err != nil {
		return fmt.Errorf("recover pods: %w", err)
	}
	a.refreshPeers()
	a.mu.Lock()
	a.node = a.nodeConfigLocked()
	a.mu.Unlock()
	// Every Service known now, so the first replay installs them with the
	// pods' flows: a restarted agent never runs without its Services.
	if a.proxy != nil {
		a.proxy.Prime()
	}
	// The last policies, so the first replay enforces them along with the
	// pods' flows even while the controller is unreachable.
	if err := a.policy.Load(); err != nil {
		a.log.Error("policies kept on disk not loaded; enforcing none until the controller syncs", "err", err)
	}

	wg.Add(1)
	go func() {
		defer wg.Done()
		a.answerPolicyRejects(ctx)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.fqdn.run(ctx)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if a.audit == nil {
			return
		}
		if err := a.audit.Run(ctx); err != nil {
			a.log.Error("policy audit log stopped", "err", err)
		}
	}()
	// Deferred pod changes and retries of failed policy installs.
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.policy.Run(ctx)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := a.sw.Run(ctx); err != nil && ctx.Err() == nil {
			a.log.Error("OpenFlow connection", "err", err)
		}
	}()
	// The first connection replays every flow (onConnect).
	if err := a.sw.Do(ctx, func(FlowWriter) error { return nil }); err != nil {
		return fmt.Errorf("openflow: %w", err)
	}
	// A Sync that came before node setup was done is installed now.
	if err := a.policy.PodsChanged(ctx); err != nil {
		a.log.Error("policy flows after start-up; retrying", "err", err)
	}
	if a.proxy != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.proxy.Run(ctx)
		}()
	}
	if a.controlPlane != nil {
		pw, err := policywatch.New(a.controlPlane, a.cfg.NodeName, a.fqdn, a.log.With("component", "policywatch"), policywatch.Options{Report: a.policy})
		if err != nil {
			return fmt.Errorf("policy watch: %w", err)
		}
		a.pwatch.Store(pw)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := pw.Run(ctx); err != nil && ctx.Err() == nil {
				a.log.Error("policy watch ended", "err", err)
			}
		}()
	}
	runTraceflow, err := a.startTraceflow()
	if err != nil {
		return err
	}
	if runInventory, err := a.startInventory(); err != nil {
		return err
	} else if runInventory != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = runInventory(ctx)
		}()
	}
	if runTraceflow != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := runTraceflow(ctx); err != nil && ctx.Err() == nil {
				a.log.Error("traceflow ended", "err", err)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.runPolicyStats(ctx)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := a.runFlowExport(ctx); err != nil && ctx.Err() == nil {
			a.log.Error("flow export ended", "err", err)
		}
	}()
	if err := a.syncHost(ctx); err != nil {
		a.log.Error("host rules", "err", err) // retried on the next peer change or resync
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.keepHostRules(ctx)
	}()
	// Before the node reports ready, so that a pod's first packet to a
	// peer does not wait for ovs-vswitchd to resolve its next hop.
	complete := a.checkTunnelNeighbours(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.keepTunnelNeighbours(ctx, complete)
	}()
	stopCNI, err := a.serveCNI()
	if err != nil {
		return err
	}
	defer stopCNI()
	if err := a.updateReady(); err != nil {
		return err
	}
	// Also when not ready: the runtime needs the configuration for DEL.
	if err := a.writeCNIConfig(); err != nil {
		return err
	}
	if ok, why := a.Ready(); ok {
		a.log.Info("node ready", "pods", len(a.pods), "peers", len(a.peers))
	} else {
		a.log.Error("node not ready", "reason", why)
	}
	err = a.followPeers(ctx)
	a.setNotReady("shutting down")
	return err
}

// serveCNISocket starts the CNI server on the configured socket (the
// agent's serveCNI); stop shuts it down.
func (a *Agent) serveCNISocket() (stop func(), err error) {
	srv, err := server.New(server.Options{SocketPath: a.cfg.CNISocket, Handler: meteredCNI{a}, Logger: a.log.With("component", "cni-server")})
	if err != nil {
		return nil, err
	}
	if err := srv.Start(); err != nil {
		return nil, fmt.Errorf("cni server: %w", err)
	}
	return func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		if err := srv.Shutdown(sctx); err != nil {
			a.log.Warn("cni server shutdown", "err", err)
		}
	}, nil
}

// retry runs fn until it succeeds or ctx ends, with a capped backoff.
func retry(ctx context.Context, log *slog.Logger, what string, fn func(context.Context) error) error {
	delay := 200 * time.Millisecond
	for {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), err)
		}
		log.Warn(what+" failed, retrying", "err", err, "in", delay)
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}

func sortedKeys(m map[ipam.Key]*podState) []ipam.Key {
	return slices.SortedFunc(maps.Keys(m), func(a, b ipam.Key) int {
		if a.ContainerID != b.ContainerID {
			if a.ContainerID < b.ContainerID {
				return -1
			}
			return 1
		}
		if a.IfName < b.IfName {
			return -1
		} else if a.IfName > b.IfName {
			return 1
		}
		return 0
	})
}

// nodeOS is the OS the pipeline is built for: the configured flowSetOS, or
// the one the agent runs on.
func nodeOS(cfg *Config) pipeline.OS {
	if cfg.FlowSetOS != "" {
		return pipeline.OS(cfg.FlowSetOS)
	}
	if runtime.GOOS == "windows" {
		return pipeline.OSWindows
	}
	return pipeline.OSLinux
}
