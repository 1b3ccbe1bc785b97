package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
)

// FlowWriter is what the agent does on one OpenFlow connection to its
// bridge. *openflow.Conn implements it.
type FlowWriter interface {
	Bundle(ctx context.Context, msgs ...openflow.Message) error
	BundleFlows(ctx context.Context, command uint8, flows []*openflow.Flow) error
	DeleteFlowsByCookie(ctx context.Context, cookie, mask uint64) error
	DumpFlows(ctx context.Context, table uint8, cookie, mask uint64) ([]openflow.FlowStats, error)
}

// Switch keeps the OpenFlow connection alive. It calls the onConnect it was
// made with on every new connection before handing it out (the agent replays
// its whole flow set there), and Do runs fn on a live connection, waiting
// for one; DoNow returns errNoSwitch at once when there is none.
type Switch interface {
	Run(ctx context.Context) error
	Do(ctx context.Context, fn func(FlowWriter) error) error
	DoNow(ctx context.Context, fn func(FlowWriter) error) error
}

// errNoSwitch: ovs-vswitchd is not connected right now.
var errNoSwitch = errors.New("not connected to ovs-vswitchd")

// NewSwitchFunc makes a Switch for the bridge's management socket; packetIn
// receives the switch's packet-ins (it must not block).
type NewSwitchFunc func(addr string, onConnect func(context.Context, FlowWriter) error, packetIn func(*openflow.PacketIn)) Switch

// OpenFlowSwitch is the production Switch: an openflow.Client.
func OpenFlowSwitch(addr string, onConnect func(context.Context, FlowWriter) error, packetIn func(*openflow.PacketIn)) Switch {
	return observedSwitch(nil)(addr, onConnect, packetIn)
}

// observedSwitch is OpenFlowSwitch telling observe of every flow
// operation (openflow.Config.Observe).
func observedSwitch(observe func(op string, msgs int, d time.Duration, err error)) NewSwitchFunc {
	return func(addr string, onConnect func(context.Context, FlowWriter) error, packetIn func(*openflow.PacketIn)) Switch {
		return ofSwitch{openflow.NewClient(addr, openflow.Config{
			OnConnect: func(ctx context.Context, c *openflow.Conn) error { return onConnect(ctx, c) },
			PacketIn:  packetIn,
			Dialer:    ofDialer,
			// ovs-vswitchd restarts in about a second: keep the retries short so
			// the flows come back soon after it does.
			BackoffMin: 50 * time.Millisecond, BackoffMax: time.Second,
			Observe: observe,
		})}
	}
}

type ofSwitch struct{ cl *openflow.Client }

// Connected reports whether the connection is up (the metrics read it).
func (s ofSwitch) Connected() bool { return s.cl.Live() != nil }

func (s ofSwitch) Run(ctx context.Context) error { return s.cl.Run(ctx) }
func (s ofSwitch) Do(ctx context.Context, fn func(FlowWriter) error) error {
	return s.cl.Do(ctx, func(c *openflow.Conn) error { return fn(c) })
}
func (s ofSwitch) DoNow(_ context.Context, fn func(FlowWriter) error) error {
	c := s.cl.Live()
	if c == nil {
		return errNoSwitch
	}
	return fn(c)
}

// allTables is OFPTT_ALL for flow stats requests.
const allTables = 0xff

// flowWriteTimeout bounds one write that holds the flow lock, so a hung
// ovs-vswitchd cannot keep every other writer (CNI ADD among them) waiting
// longer than that.
const flowWriteTimeout = 30 * time.Second

// lockFlows takes the flow lock, which serializes the agent's writers of
// flows: the full replay on a new connection, a pod's flows, a peer
// change and a policy bundle. It is held across one OpenFlow exchange and
// taken inside Switch.Do (never while waiting for a connection), before
// a.mu, which is only ever held briefly and never across a call to OVS.
func (a *Agent) lockFlows(ctx context.Context) error {
	select {
	case a.flowLock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (a *Agent) unlockFlows() { <-a.flowLock }

// replayFlows installs the whole desired flow set under a round that no flow
// on the bridge carries yet, then deletes every other round: OpenFlow's add
// replaces a flow with the same match in place, so traffic never meets a gap.
// The caller holds the flow lock.
func (a *Agent) replayFlows(ctx context.Context, w FlowWriter) error {
	a.mu.Lock()
	if a.node == nil {
		a.mu.Unlock()
		return nil // nothing to install before node setup
	}
	st, cur := a.flowState(), a.round
	a.mu.Unlock()
	defer tightGC()()
	present, err := presentRounds(ctx, w)
	if err != nil {
		return err
	}
	next := cur.Next()
	if len(present) > 0 {
		next = present[len(present)-1].Next()
	}
	for slices.Contains(present, next) {
		next++
	}
	flows, err := pipeline.Build(st, next)
	if err != nil {
		return fmt.Errorf("build flows: %w", err)
	}
	// Policy flows ride in the same bundle, so pods never run unpoliced;
	// their meters go first.
	if err := installPolicyMeters(ctx, w); err != nil {
		return fmt.Errorf("policy meters: %w", err)
	}
	pf, err := a.policy.Flows(next)
	if err != nil {
		return fmt.Errorf("build policy flows: %w", err)
	}
	// So do the Services' groups (first) and flows.
	groups, sf, err := a.replayServices(ctx, w, next)
	if err != nil {
		return fmt.Errorf("build service flows: %w", err)
	}
	// And the DNS answers' way to the agent, while domain names are peers.
	var df []*openflow.Flow
	if a.fqdn != nil {
		if df, err = a.fqdn.replayFlows(ctx, w, next); err != nil {
			return fmt.Errorf("dns meter: %w", err)
		}
	}
	a.onSwitch = nil
	all := slices.Concat(flows, pf, sf, df)
	if len(groups) == 0 {
		err = w.BundleFlows(ctx, openflow.FlowAdd, all)
	} else {
		err = bundleGroupsAndFlows(ctx, w, groups, all)
	}
	if err != nil {
		return fmt.Errorf("install %d flows of round %d: %w", len(all), next, err)
	}
	for _, r := range present {
		if r == next {
			continue
		}
		c, m := pipeline.RoundSelector(r)
		if err := w.DeleteFlowsByCookie(ctx, c, m); err != nil {
			return fmt.Errorf("delete flows of round %d: %w", r, err)
		}
	}
	a.log.Info("flows replayed", "round", next, "flows", len(all), "groups", len(groups), "old_rounds", fmt.Sprint(present))
	a.mu.Lock()
	a.round = next
	a.mu.Unlock()
	a.onSwitch = flowMap(flows)
	// The replay built every flow and group message at once (at 10,000
	// Services ~120 MB allocated, its peak well above what the agent
	// keeps): hand that memory back to the OS now rather than over the
	// runtime's next minutes. Replays are rare (start, a new OpenFlow
	// connection, a peer change); one collection is cheap against them.
	debug.FreeOSMemory()
	return nil
}

// replayGCPercent is the GC target while a full replay runs. A replay
// builds every flow and group message at once on top of the agent's state
// (at 10,000 Services ~25 MB more live, ~120 MB allocated); at the agent's
// usual target its RSS was 182 MB when a cold start's probe answered,
// against 114 MB settled; with this, 113 MB (test/bench/README.md).
const replayGCPercent = 20

var gcMu struct {
	sync.Mutex
	n    int // replays running (agents in one process: tests)
	prev int
}

// tightGC sets replayGCPercent until the returned func is called; the
// first of overlapping callers saves the target, the last restores it.
func tightGC() func() {
	gcMu.Lock()
	if gcMu.n == 0 {
		gcMu.prev = debug.SetGCPercent(replayGCPercent)
	}
	gcMu.n++
	gcMu.Unlock()
	return func() {
		gcMu.Lock()
		if gcMu.n--; gcMu.n == 0 {
			debug.SetGCPercent(gcMu.prev)
		}
		gcMu.Unlock()
	}
}

func flowMap(flows []*openflow.Flow) map[string]*openflow.Flow {
	m := make(map[string]*openflow.Flow, len(flows))
	for _, f := range flows {
		m[f.Key()] = f
	}
	return m
}

// bundleGroupsAndFlows installs groups (and their deletes) and then flows
// in one atomic bundle.
func bundleGroupsAndFlows(ctx context.Context, w FlowWriter, groups []openflow.Message, flows []*openflow.Flow) error {
	msgs := groups
	for _, f := range flows {
		msgs = append(msgs, openflow.AddFlow(f))
	}
	return w.Bundle(ctx, msgs...)
}

// presentRounds lists the rounds of the flows on the bridge. Learned flows
// (CategoryAffinity) belong to no round and are left out.
func presentRounds(ctx context.Context, w FlowWriter) ([]pipeline.Round, error) {
	stats, err := w.DumpFlows(ctx, allTables, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("dump flows: %w", err)
	}
	var rounds []pipeline.Round
	for _, s := range stats {
		if pipeline.Cookie(s.Flow.CookieValue()).Category() == pipeline.CategoryAffinity {
			continue
		}
		r := pipeline.Cookie(s.Flow.CookieValue()).Round()
		if !slices.Contains(rounds, r) {
			rounds = append(rounds, r)
		}
	}
	slices.Sort(rounds)
	return rounds, nil
}

// flowState is the pipeline's view of the agent's state. The caller holds a.mu.
func (a *Agent) flowState() pipeline.State {
	s := pipeline.State{Node: *a.node, Peers: slices.Clone(a.peers)}
	for _, k := range sortedKeys(a.pods) {
		s.Pods = append(s.Pods, a.pods[k].pipelinePod())
	}
	return s
}

// syncFlows brings the pipeline's flows (all but policy) to the desired
// state after a peer change: the whole set is built and compared with what
// the last writes installed, and only the difference goes to the switch,
// in one bundle. When that is unknown (a write whose outcome is unknown)
// the whole set is replayed under a new round instead.
func (a *Agent) syncFlows(ctx context.Context) error {
	return a.sw.Do(ctx, func(w FlowWriter) error {
		if err := a.lockFlows(ctx); err != nil {
			return err
		}
		defer a.unlockFlows()
		ctx, cancel := context.WithTimeout(ctx, flowWriteTimeout)
		defer cancel()
		if a.onSwitch == nil {
			if err := a.replayFlows(ctx, w); err != nil {
				return err
			}
			// The replay deleted the old round's flows, running traces'
			// copies too.
			if tf := a.tf.Load(); tf != nil {
				tf.Resync()
			}
			return nil
		}
		w = a.traced(w)
		a.mu.Lock()
		if a.node == nil {
			a.mu.Unlock()
			return nil
		}
		st, r := a.flowState(), a.round
		a.mu.Unlock()
		flows, err := pipeline.Build(st, r)
		if err != nil {
			return fmt.Errorf("build flows: %w", err)
		}
		var add, del []openflow.Message
		want := flowMap(flows)
		for _, f := range flows {
			if h, ok := a.onSwitch[f.Key()]; !ok || h.CookieValue() != f.CookieValue() || string(h.InstructionBytes()) != string(f.InstructionBytes()) {
				add = append(add, openflow.AddFlow(f))
			}
		}
		for _, k := range slices.Sorted(maps.Keys(a.onSwitch)) {
			if want[k] == nil {
				del = append(del, openflow.DeleteFlowStrict(a.onSwitch[k]))
			}
		}
		if len(add)+len(del) == 0 {
			return nil
		}
		if err := w.Bundle(ctx, slices.Concat(add, del)...); err != nil {
			a.forgetOnUnknown(err)
			return fmt.Errorf("install %d flow changes: %w", len(add)+len(del), err)
		}
		a.onSwitch = want
		a.log.Debug("flows changed", "added", len(add), "deleted", len(del))
		return nil
	})
}

// forgetOnUnknown forgets what the switch holds after a write whose outcome
// is unknown (the switch may or may not have committed it); the next peer
// change then replays everything. The caller holds the flow lock.
func (a *Agent) forgetOnUnknown(err error) {
	var oe *openflow.Error
	if !errors.As(err, &oe) && !errors.Is(err, openflow.ErrTooLarge) {
		a.onSwitch = nil
	}
}

// onConnect runs on every new OpenFlow connection (agent start,
// ovs-vswitchd restart).
func (a *Agent) onConnect(ctx context.Context, w FlowWriter) error {
	if err := a.lockFlows(ctx); err != nil {
		return err
	}
	err := a.replayFlows(ctx, w)
	a.unlockFlows()
	if err != nil {
		a.log.Error("replaying flows on a new OpenFlow connection", "err", err)
		return err
	}
	// A restarted ovs-vswitchd has forgotten the tunnel neighbours too.
	a.kickTunnelNeighbours()
	// The replay deleted the old round's flows, running traces' copies too.
	if tf := a.tf.Load(); tf != nil {
		tf.Resync()
	}
	// The replay installed the policy flows last installed; a Sync that
	// failed while the switch was away is installed now.
	a.policy.PodsChangedLater()
	return nil
}

// doLocked runs fn through do (a.sw.Do or a.sw.DoNow) holding the flow
// lock, with the node's configuration (nil until node setup is done) and
// the round the agent's flows carry, read under a.mu.
func (a *Agent) doLocked(ctx context.Context, do func(context.Context, func(FlowWriter) error) error, fn func(w FlowWriter, node *pipeline.NodeConfig, round pipeline.Round) error) error {
	return do(ctx, func(w FlowWriter) error {
		if err := a.lockFlows(ctx); err != nil {
			return err
		}
		defer a.unlockFlows()
		a.mu.Lock()
		node, round := a.node, a.round
		a.mu.Unlock()
		return fn(a.traced(w), node, round)
	})
}

// installPodFlows adds one pod's flows and records the pod, atomically with
// respect to replays.
func (a *Agent) installPodFlows(ctx context.Context, p *podState) error {
	return a.doLocked(ctx, a.sw.Do, func(w FlowWriter, node *pipeline.NodeConfig, round pipeline.Round) error {
		if node == nil {
			return errNotReady
		}
		flows, err := pipeline.PodFlows(*node, p.pipelinePod(), round)
		if err != nil {
			return fmt.Errorf("build pod flows: %w", err)
		}
		if err := w.BundleFlows(ctx, openflow.FlowAdd, flows); err != nil {
			a.forgetOnUnknown(err)
			return fmt.Errorf("install pod flows: %w", err)
		}
		a.mu.Lock()
		a.pods[p.key] = p
		a.mu.Unlock()
		if a.onSwitch != nil {
			for _, f := range flows {
				a.onSwitch[f.Key()] = f
			}
		}
		return nil
	})
}

// removePodFlows forgets the pod and deletes its flows one by one (strict
// delete), so another sandbox of the same pod keeps its flows even though
// both share a cookie. The pod is forgotten even when the delete fails: a
// replay then leaves its flows out. With now, it does not wait for
// ovs-vswitchd: while there is no connection, the replay that comes with
// the next one is what removes the flows.
func (a *Agent) removePodFlows(ctx context.Context, p *podState, now bool) error {
	a.mu.Lock()
	delete(a.pods, p.key)
	a.mu.Unlock()
	do := a.sw.Do
	if now {
		do = a.sw.DoNow
	}
	return a.doLocked(ctx, do, func(w FlowWriter, node *pipeline.NodeConfig, round pipeline.Round) error {
		if node == nil || p.ofport == 0 {
			return nil
		}
		flows, err := pipeline.PodFlows(*node, p.pipelinePod(), round)
		if err != nil {
			return fmt.Errorf("build pod flows: %w", err)
		}
		if err := w.BundleFlows(ctx, openflow.FlowDeleteStrict, flows); err != nil {
			a.forgetOnUnknown(err)
			return fmt.Errorf("delete pod flows: %w", err)
		}
		if a.onSwitch != nil {
			for _, f := range flows {
				delete(a.onSwitch, f.Key())
			}
		}
		return nil
	})
}

// missingPodFlows lists the pod's flows that the bridge lacks.
func (a *Agent) missingPodFlows(ctx context.Context, p *podState) ([]string, error) {
	var missing []string
	err := a.sw.Do(ctx, func(w FlowWriter) error {
		a.mu.Lock()
		node, round := a.node, a.round
		a.mu.Unlock()
		if node == nil {
			return errNotReady
		}
		want, err := pipeline.PodFlows(*node, p.pipelinePod(), round)
		if err != nil {
			return err
		}
		c, m := pipeline.ObjectSelector(round, pipeline.CategoryPod, pipeline.PodID(p.ref.Namespace, p.ref.Name))
		have, err := w.DumpFlows(ctx, allTables, c, m)
		if err != nil {
			return err
		}
		keys := map[string]bool{}
		for _, s := range have {
			keys[flowID(s.Flow)] = true
		}
		missing = nil
		for _, f := range want {
			if !keys[flowID(f)] {
				missing = append(missing, f.String())
			}
		}
		return nil
	})
	return missing, err
}

// flowID names a flow by table, priority and match, with the match's fields
// sorted: a switch may hand back the fields of a match in another order.
func flowID(f *openflow.Flow) string {
	fields := strings.Split(f.MatchString(), ",")
	slices.Sort(fields)
	return fmt.Sprintf("%d/%d/%s", f.TableID(), f.Priority(), strings.Join(fields, ","))
}
