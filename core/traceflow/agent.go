package traceflow

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	crd "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// Writer is what the agent does on its OpenFlow connection for traces.
// *openflow.Conn implements it.
type Writer interface {
	Bundle(ctx context.Context, msgs ...openflow.Message) error
	Apply(ctx context.Context, msgs ...openflow.Message) error
	DumpFlows(ctx context.Context, table uint8, cookie, mask uint64) ([]openflow.FlowStats, error)
	DeleteFlowsByCookie(ctx context.Context, cookie, mask uint64) error
}

// allTables is OFPTT_ALL for flow stats requests.
const allTables = 0xff

// LocalPod is a pod of this node as the switch knows it.
type LocalPod struct {
	Port uint32
	MAC  net.HardwareAddr
	IP   netip.Addr
}

// AgentNode is what the agent side needs from the agent.
type AgentNode interface {
	// Install runs fn on the live OpenFlow connection under the agent's
	// flow lock, with the node's configuration and the round its flows
	// carry (an error before node setup).
	Install(ctx context.Context, fn func(w Writer, n *pipeline.NodeConfig, r pipeline.Round) error) error
	// LocalPod finds a pod of this node by name or (name "") by IP.
	LocalPod(namespace, name string, ip netip.Addr) (LocalPod, bool)
	// IsolatedBy names the policies that isolate the pod on port.
	IsolatedBy(ingress bool, port uint32) []string
	// TieredRule names the tiered policy and rule whose flows sit in a
	// tier table at an OpenFlow priority (see RuleLookup).
	TieredRule(table uint8, priority uint16) (policy, rule string, ok bool)
	// FlushDatapath deletes every flow the datapath cached (megaflows),
	// so that the next packet of any traffic is translated against the
	// flow tables as they are now (see "The datapath's cached flows" in
	// the README).
	FlushDatapath(ctx context.Context) error
}

// Agent is seine-agent's side of Traceflow: it installs the tagged copies
// of every running trace, reports them installed, injects the packet of
// the traces whose source pod it hosts once every node on the path is
// ready, and turns packet-ins into its node's observations.
type Agent struct {
	nodeName string
	node     AgentNode
	log      *slog.Logger
	inf      cache.SharedIndexInformer
	queue    workqueue.TypedRateLimitingInterface[string]
	reports  chan Report
	// apply writes this node's result (applyStatus; tests record it).
	apply func(ctx context.Context, name string, st *crd.TraceflowStatus) error

	mu           sync.Mutex
	traces       map[string]*agentTrace // by name
	clusterCIDRs []netip.Prefix         // the node's ClusterPodCIDRs
	// shadow is the switch's flows the installed traces' copies follow
	// (follow.go); nil while no trace's copies are on the switch.
	shadow    *Shadow
	following atomic.Bool // shadow != nil
}

type agentTrace struct {
	tag       uint8
	in        Injected
	installed bool           // the copies are on the switch
	round     pipeline.Round // ...in this round
	settled   bool           // ...and the datapath forgot what it cached before them
	reported  bool           // flowsInstalled is in the status
	injected  bool
	obs       []crd.Observation
	live      liveTrace // live traffic (agent_live.go)
}

// NewAgent makes the agent side for nodeName; Run starts it.
func NewAgent(nodeName string, dyn dynamic.Interface, node AgentNode, log *slog.Logger) *Agent {
	f := dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0)
	a := &Agent{nodeName: nodeName, node: node, log: log,
		inf:     f.ForResource(crd.TraceflowsResource).Informer(),
		queue:   workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		reports: make(chan Report, 64), traces: map[string]*agentTrace{}}
	a.apply = func(ctx context.Context, name string, st *crd.TraceflowStatus) error {
		return applyStatus(ctx, dyn, name, AgentManager(nodeName), st)
	}
	enqueue := func(obj any) {
		if k, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			a.queue.Add(k)
		}
	}
	a.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, o any) { enqueue(o) }, DeleteFunc: enqueue,
	})
	return a
}

// HandlePacketIn takes the bridge's packet-ins; it reports whether the
// packet-in was a trace's. It never blocks.
func (a *Agent) HandlePacketIn(pi *openflow.PacketIn) bool {
	r, err := FromPacketIn(pi)
	if errors.Is(err, ErrNotTraceflow) {
		return false
	}
	if err != nil {
		a.log.Debug("traceflow packet-in", "err", err)
		return true
	}
	select {
	case a.reports <- r:
	default:
	}
	return true
}

// Resync installs every running trace's copies again: the agent calls it
// after replaying its flows under a new round (which deleted them).
func (a *Agent) Resync() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.dropShadowLocked()
	for name, t := range a.traces {
		t.installed, t.live.armed = false, false
		a.queue.Add(name)
	}
}

// Following reports whether any trace's copies are on the switch, so that
// the agent's flow changes must go through Follow.
func (a *Agent) Following() bool { return a.following.Load() }

// Follow keeps the running traces' copies in step with msgs, a bundle of
// flow changes the caller (holding the agent's flow lock) just sent to the
// switch, which answered sendErr: the copies of the flows it added or
// replaced are added, those of the flows it deleted deleted, with bundle
// (the connection's, right after the change and under the same lock). A
// change it cannot follow, one whose outcome is unknown, or a failed
// bundle of copies makes every trace copy the switch's flows again.
func (a *Agent) Follow(ctx context.Context, bundle func(context.Context, ...openflow.Message) error, msgs []openflow.Message, sendErr error) {
	if !a.following.Load() {
		return
	}
	if sendErr != nil {
		var oe *openflow.Error
		if !errors.As(sendErr, &oe) && !errors.Is(sendErr, openflow.ErrTooLarge) {
			a.recopy("a flow change of unknown outcome", sendErr)
		}
		return // refused: the switch holds what it held
	}
	a.mu.Lock()
	if a.shadow == nil {
		a.mu.Unlock()
		return
	}
	changes, err := a.shadow.Follow(msgs)
	a.mu.Unlock()
	if err != nil {
		a.recopy("a flow change", err)
		return
	}
	if len(changes) == 0 {
		return
	}
	if err := bundle(ctx, changes...); err != nil {
		a.recopy("the copies' changes", err)
		return
	}
	a.log.Debug("traceflow copies follow a flow change", "changes", len(msgs), "copy_changes", len(changes))
}

// recopy makes every trace copy the switch's flows again (after a change
// Follow could not keep them in step with).
func (a *Agent) recopy(what string, err error) {
	a.log.Info("traceflow: copying the flows again", "after", what, "err", err)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.dropShadowLocked()
	for name, t := range a.traces {
		t.installed = false
		a.queue.Add(name)
	}
}

func (a *Agent) dropShadowLocked() {
	a.shadow = nil
	a.following.Store(false)
}

// Run runs until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	defer a.queue.ShutDown()
	go a.inf.Run(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), a.inf.HasSynced) {
		return ctx.Err()
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				a.queue.ShutDown()
				return
			case r := <-a.reports:
				if name := a.observe(r); name != "" {
					a.queue.Add(name)
				}
			}
		}
	}()
	for {
		name, quit := a.queue.Get()
		if quit {
			return nil
		}
		if err := a.sync(ctx, name); err != nil && ctx.Err() == nil {
			a.log.Warn("traceflow", "traceflow", name, "err", err)
			a.queue.AddRateLimited(name)
		} else {
			a.queue.Forget(name)
		}
		a.queue.Done(name)
	}
}

// observe records a report as its trace's observations; it returns the
// trace's name ("" if the report is nobody's). The policy lookup runs
// without a.mu: it may wait for a policy install, which waits for the
// flow lock that install holds while it takes a.mu.
func (a *Agent) observe(r Report) string {
	a.mu.Lock()
	var name string
	var t *agentTrace
	for n, tr := range a.traces {
		if tr.tag == r.Packet.Tag && tr.in.Matches(r) {
			name, t = n, tr
			break
		}
	}
	cidrs := a.clusterCIDRs
	if t != nil && t.in.Live && !t.live.take(r) {
		t = nil // a live packet after the traced one, or one to correlate later
	}
	a.mu.Unlock()
	if t == nil {
		return name
	}
	obs, _ := Observe(t.in, r, Node{ClusterCIDRs: cidrs, Policies: a.node.IsolatedBy, Rules: a.node.TieredRule})
	a.mu.Lock()
	t.obs = append(t.obs, obs...)
	a.mu.Unlock()
	a.log.Info("traceflow packet-in", "traceflow", name, "tag", t.tag, "table", pipeline.Table(r.Table).String(), "observations", len(obs))
	return name
}

func (a *Agent) sync(ctx context.Context, name string) error {
	obj, exists, err := a.inf.GetStore().GetByKey(name)
	if err != nil {
		return err
	}
	var tf *crd.Traceflow
	if exists {
		if tf, err = fromUnstructured(obj); err != nil {
			return err
		}
	}
	a.mu.Lock()
	t := a.traces[name]
	a.mu.Unlock()
	if tf == nil || tf.Status.Phase != crd.Running || tf.Status.DataplaneTag <= 0 || tf.Status.DataplaneTag > MaxTag {
		if t == nil {
			return nil
		}
		return a.forget(ctx, name, t.tag)
	}
	tag := uint8(tf.Status.DataplaneTag)
	if t == nil || t.tag != tag {
		in, err := injected(tf)
		if err != nil {
			return err
		}
		t = &agentTrace{tag: tag, in: in, live: liveTrace{tagging: tf.Status.SourceNode == a.nodeName, droppedOnly: tf.Spec.DroppedOnly}}
		a.mu.Lock()
		a.traces[name] = t
		a.mu.Unlock()
	}
	if !t.installed {
		if err := a.install(ctx, name, t); err != nil {
			return err
		}
	}
	// Nothing depends on the copies (the acknowledgement, the injection,
	// the tagging flow) before the datapath stopped using what it cached
	// without them.
	if err := a.settle(ctx, name, t); err != nil {
		return err
	}
	if t.in.Live {
		a.correlate(tf, t)
	}
	// The source node knows its own copies are in: it injects once every
	// other node of the path acknowledged, without waiting for its own
	// acknowledgement to come back through its watch (for a trace within
	// one node, a whole write and watch round trip).
	if tf.Status.SourceNode == a.nodeName && !t.in.Live && !t.injected && readyWith(tf.Status, a.nodeName) {
		if err := a.inject(ctx, tf, t); err != nil {
			return err
		}
	}
	a.mu.Lock()
	obs, reported, captured := append([]crd.Observation(nil), t.obs...), t.reported, t.live.captured
	a.mu.Unlock()
	// A node the injection does not wait for (not in status.nodes) writes
	// its result only once it has observations: its acknowledgement alone
	// would be one more write (and watch event for every agent and the
	// controller) per node of the cluster and trace, which nobody reads.
	onPath := tf.Status.SourceNode == a.nodeName || slices.Contains(tf.Status.Nodes, a.nodeName)
	if !reported && onPath || len(obs) > len(resultOf(tf, a.nodeName).Observations) {
		st := crd.TraceflowStatus{Results: []crd.NodeResult{{Node: a.nodeName, FlowsInstalled: true, Observations: obs, CapturedPacket: captured}}}
		t0 := time.Now()
		if err := a.apply(ctx, name, &st); err != nil {
			return err
		}
		a.log.Info("traceflow result written", "traceflow", name, "observations", len(obs), "ms", ms(time.Since(t0)))
		a.mu.Lock()
		t.reported = true
		a.mu.Unlock()
	}
	if tf.Status.SourceNode == a.nodeName && t.in.Live && Ready(tf.Status) {
		return a.armLive(ctx, tf, t)
	}
	if tf.Status.SourceNode == a.nodeName && !t.injected && Ready(tf.Status) {
		if err := a.inject(ctx, tf, t); err != nil {
			return err
		}
	}
	return nil
}

func resultOf(tf *crd.Traceflow, node string) crd.NodeResult {
	for _, r := range tf.Status.Results {
		if r.Node == node {
			return r
		}
	}
	return crd.NodeResult{}
}

// install adds the trace's copies of the switch's terminal flows.
func (a *Agent) install(ctx context.Context, name string, t *agentTrace) error {
	return a.node.Install(ctx, func(w Writer, n *pipeline.NodeConfig, r pipeline.Round) error {
		a.mu.Lock()
		a.clusterCIDRs = n.ClusterPodCIDRs
		a.mu.Unlock()
		t0 := time.Now()
		stats, err := w.DumpFlows(ctx, allTables, 0, 0)
		if err != nil {
			return fmt.Errorf("dump flows: %w", err)
		}
		t1 := time.Now()
		base := make([]*openflow.Flow, 0, len(stats))
		for _, s := range stats {
			base = append(base, s.Flow)
		}
		mode := Mode{Live: t.in.Live, DroppedOnly: t.live.droppedOnly, ClusterCIDRs: n.ClusterPodCIDRs}
		// The shadow of the flows, which every later flow change keeps
		// the copies in step with (Follow), starts from this dump.
		a.mu.Lock()
		if a.shadow == nil {
			a.shadow, err = NewShadow(base)
		} else {
			err = a.shadow.Rebase(base)
		}
		var copies, skipped []*openflow.Flow
		if err == nil {
			copies, skipped, err = a.shadow.Trace(t.tag, Cookie(r, t.tag), mode)
		}
		if err != nil {
			a.dropShadowLocked()
			a.mu.Unlock()
			return err
		}
		a.following.Store(true)
		a.mu.Unlock()
		if len(skipped) > 0 {
			a.log.Warn("traceflow: flows without a tagged copy (their neighbour one priority up could overlap it); packets they decide are not observed",
				"tag", t.tag, "flows", len(skipped), "first", skipped[0].String())
		}
		// Copies an earlier install left (of flows since gone) go in the
		// same bundle; a live trace's tagging flow stays.
		c, m := copySelector(t.tag)
		msgs := make([]openflow.Message, 0, len(copies)+1)
		msgs = append(msgs, openflow.DeleteFlows(openflow.TableAll, nil, c, m))
		for _, f := range copies {
			msgs = append(msgs, openflow.AddFlow(f))
		}
		t2 := time.Now()
		if err := w.Bundle(ctx, msgs...); err != nil {
			a.mu.Lock()
			if a.shadow != nil && a.shadow.Forget(t.tag) == 0 {
				a.dropShadowLocked()
			}
			a.mu.Unlock()
			return fmt.Errorf("install %d tagged flows of tag %d: %w", len(copies), t.tag, err)
		}
		a.log.Info("traceflow copies installed", "traceflow", name, "tag", t.tag, "flows", len(stats), "copies", len(copies),
			"dump_ms", ms(t1.Sub(t0)), "copy_ms", ms(t2.Sub(t1)), "bundle_ms", ms(time.Since(t2)))
		a.mu.Lock()
		t.installed, t.settled, t.round = true, false, r
		a.mu.Unlock()
		return nil
	})
}

// settle flushes the datapath's cached flows once after the trace's
// copies went in (again after every new install of them): until then a
// tagged packet may take a cached flow made before the copies existed,
// which does not look at its DSCP, and go its way unseen.
func (a *Agent) settle(ctx context.Context, name string, t *agentTrace) error {
	a.mu.Lock()
	settled := t.settled
	a.mu.Unlock()
	if settled {
		return nil
	}
	start := time.Now()
	if err := a.node.FlushDatapath(ctx); err != nil {
		return fmt.Errorf("flush the datapath's cached flows after the copies of tag %d: %w", t.tag, err)
	}
	a.mu.Lock()
	// A new install meanwhile (installed false) flushes again after it.
	t.settled = t.installed
	a.mu.Unlock()
	a.log.Info("traceflow datapath flushed", "traceflow", name, "tag", t.tag, "ms", ms(time.Since(start)))
	return nil
}

// ms is d in milliseconds, for the logs.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// forget removes a finished or deleted trace's copies.
func (a *Agent) forget(ctx context.Context, name string, tag uint8) error {
	err := a.node.Install(ctx, func(w Writer, _ *pipeline.NodeConfig, _ pipeline.Round) error {
		c, m := Selector(tag)
		if err := w.DeleteFlowsByCookie(ctx, c, m); err != nil {
			return err
		}
		a.mu.Lock()
		if a.shadow != nil && a.shadow.Forget(tag) == 0 {
			a.dropShadowLocked()
		}
		a.mu.Unlock()
		return nil
	})
	if err != nil {
		return fmt.Errorf("remove the flows of tag %d: %w", tag, err)
	}
	a.mu.Lock()
	delete(a.traces, name)
	a.mu.Unlock()
	return nil
}

// inject sends the trace's packet from its source pod's port.
func (a *Agent) inject(ctx context.Context, tf *crd.Traceflow, t *agentTrace) error {
	src, ok := a.node.LocalPod(tf.Spec.Source.Namespace, tf.Spec.Source.Pod, netip.Addr{})
	if !ok {
		return fmt.Errorf("source pod %s/%s has no port on this node", tf.Spec.Source.Namespace, tf.Spec.Source.Pod)
	}
	return a.node.Install(ctx, func(w Writer, n *pipeline.NodeConfig, _ pipeline.Round) error {
		p := Packet{SrcMAC: src.MAC, DstMAC: n.GatewayMAC, SrcIP: t.in.SrcIP, DstIP: t.in.DstIP, Proto: t.in.Proto,
			SrcPort: t.in.SrcPort, DstPort: t.in.DstPort, TCPFlags: uint8(tf.Spec.Packet.TCPFlags), TTL: uint8(tf.Spec.Packet.TTL),
			Tag: t.tag, ID: t.in.ID, Length: int(tf.Spec.Packet.Length), ICMPID: t.in.ID, ICMPSeq: 1}
		if p.Proto == ProtoTCP && p.TCPFlags == 0 {
			p.TCPFlags = 0x02
		}
		if dst, ok := a.node.LocalPod("", "", t.in.DstIP); ok {
			p.DstMAC = dst.MAC // a pod on its own subnet sends to the pod's MAC
		}
		frame, err := p.Frame()
		if err != nil {
			return err
		}
		out := openflow.NewPacketOut(src.Port, frame, openflow.NewActions().Output(openflow.PortTable))
		if err := w.Apply(ctx, out); err != nil {
			return fmt.Errorf("inject: %w", err)
		}
		a.mu.Lock()
		t.injected = true
		a.mu.Unlock()
		a.log.Info("traceflow injected", "traceflow", tf.Name, "tag", t.tag, "packet", fmt.Sprintf("%s:%d > %s:%d", p.SrcIP, p.SrcPort, p.DstIP, p.DstPort))
		return nil
	})
}

// injected derives the injected packet's identity from the Traceflow
// alone, so every node knows it: the IPv4 ID (and a source port when the
// spec has none) come from the Traceflow's UID.
func injected(tf *crd.Traceflow) (Injected, error) {
	if tf.Spec.LiveTraffic {
		return liveInjected(tf)
	}
	proto, err := Protocol(tf.Spec.Packet.Protocol)
	if err != nil {
		return Injected{}, err
	}
	src, err1 := netip.ParseAddr(tf.Status.SrcIP)
	dst, err2 := netip.ParseAddr(tf.Status.DstIP)
	if err := errors.Join(err1, err2); err != nil {
		return Injected{}, fmt.Errorf("traceflow %s status addresses: %w", tf.Name, err)
	}
	h := fnv.New32a()
	h.Write([]byte(tf.UID))
	sum := h.Sum32()
	in := Injected{Tag: uint8(tf.Status.DataplaneTag), ID: uint16(sum) | 1, Proto: proto, SrcIP: src, DstIP: dst}
	if proto != ProtoICMP {
		in.SrcPort = uint16(tf.Spec.Packet.SrcPort)
		if in.SrcPort == 0 {
			in.SrcPort = 32768 + uint16(sum>>16)%28000
		}
		in.DstPort = uint16(tf.Status.DstPort)
	}
	return in, nil
}
