// Package policy is the agent's NetworkPolicy controller: it resolves the
// controller's AppliedToGroups, AddressGroups and NetworkPolicies against
// the node's pods, turns them into the pipeline's policy flows
// (core/pipeline PolicyFlows), and installs the difference from what the
// bridge holds in one atomic OpenFlow bundle. It keeps the last State on
// disk so a restarted agent enforces it before the controller is back.
// See README.md.
package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/metrics"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
)

// State is the whole desired policy state of the node, as the controlplane
// watch delivers it. Maps are keyed by object name.
type State struct {
	NetworkPolicies map[string]*controlplane.NetworkPolicy  `json:"networkPolicies,omitempty"`
	AppliedToGroups map[string]*controlplane.AppliedToGroup `json:"appliedToGroups,omitempty"`
	AddressGroups   map[string]*controlplane.AddressGroup   `json:"addressGroups,omitempty"`
}

// Writer applies OpenFlow messages in one atomic bundle and reads flows
// back; *openflow.Conn implements it.
type Writer interface {
	Bundle(ctx context.Context, msgs ...openflow.Message) error
	DumpFlows(ctx context.Context, table uint8, cookie, mask uint64) ([]openflow.FlowStats, error)
}

// Node is what the controller needs from the agent.
type Node interface {
	// LocalPods lists the node's pods that have an OVS port.
	LocalPods() []Pod
	// NodeSources are the addresses the node reaches its own pods from
	// (the gateway IP); ingress policy always lets them in.
	NodeSources() []netip.Addr
	// Install runs fn on the live OpenFlow connection with the round the
	// agent's flows carry, serialized with the agent's own flow changes
	// and full replays (which include Flows). fn does only the OpenFlow
	// exchange: everything it needs is computed before.
	Install(ctx context.Context, fn func(w Writer, r pipeline.Round) error) error
}

// DatapathSettler is an optional interface of Node: SettleDatapath
// returns once no cached datapath flow lets through new connections of the
// narrowed traffic (ovs-vswitchd's datapath flow cache keeps the actions
// of the flow tables it was built from until it is revalidated, and on the
// userspace datapath that was seen to take seconds). Without it,
// connections that a change denies may still be let through for a while
// after Sync returns.
type DatapathSettler interface {
	SettleDatapath(ctx context.Context, narrowed []Narrowed) error
}

// Config configures a Controller.
type Config struct {
	Node   Node
	Logger *slog.Logger
	// StateFile is where the last State is kept ("" keeps nothing).
	StateFile string
	// ExportDenied sends denied connections' first packets to the agent
	// for flow export (pipeline.PolicySet.ExportDenied).
	ExportDenied bool
}

// Retry back-off of a failed install (see Run).
const (
	retryMin = 200 * time.Millisecond
	retryMax = 10 * time.Second
)

// Controller enforces NetworkPolicy on one node.
type Controller struct {
	node         Node
	log          *slog.Logger
	file         string
	exportDenied bool

	// sem serializes the appliers (Sync, PodsChanged, the retry loop) and
	// Load; a channel, so that waiting for it honours a context. It guards
	// state and retry.
	sem   chan struct{}
	state *State // nil until a State was synced or loaded
	// prios are the OpenFlow priorities of tiered rules (guarded by sem).
	prios priorities
	retry bool // the last apply failed: Run tries again
	// inc is what the last apply resolved, for an incremental next one
	// (nil: resolve everything); index holds the flows of the last
	// installed set (nil: build them from the set). Both are dropped
	// when an apply fails. Guarded by sem.
	inc   *incState
	index *pipeline.PolicyIndex
	enc   stateEncoder // the state file's (guarded by sem)
	// deltas counts the applies resolved incrementally (for tests).
	deltas int

	// Pod changes are coalesced: every PodsChanged call takes a ticket,
	// and any apply that starts after the ticket was taken serves it.
	reqMu    sync.Mutex
	ticket   uint64        // last ticket taken
	served   uint64        // tickets up to here are served
	servedBy error         // the result of the apply that served them
	served1  chan struct{} // closed (and replaced) whenever served moves
	kick     chan struct{} // wakes Run: a retry or a deferred pod change

	// flowMu guards what the bridge holds (or the agent's next replay
	// installs). It is taken inside the agent's lock by Flows, so nothing
	// may wait for the agent while holding it.
	flowMu    sync.Mutex
	installed pipeline.PolicySet
	// installedGen counts the changes of installed (flow export's rule
	// names are cached per generation: flowrules.go).
	installedGen uint64
	// have is the installed set's flows by Key as the switch holds them
	// in round haveRound. After an install whose outcome is unknown (the
	// commit may or may not have happened) known is false and the next
	// apply reads the switch's policy flows back instead.
	have      map[string]*openflow.Flow
	haveRound pipeline.Round
	known     bool
	realized  map[string]int64
	failed    map[string]Realization
	// settling counts the datapath waits in flight; latest is the last
	// resolution installed, which becomes realized once none is (nil
	// after a failed install, whose status stands).
	settling int
	latest   *resolved

	changed chan struct{} // signalled when realized or failed changed

	// stateCounts are the object counts of state, for the metrics.
	stateCounts atomic.Pointer[metrics.PolicyCounts]
	// synced is state, for the policy audit log's lookups (audit.go),
	// which never wait for an apply.
	synced  atomic.Pointer[State]
	auditMu sync.Mutex
	audit   *auditIndex
	// flowRulesMu guards flowRules (flowrules.go); flowMu is taken inside it.
	flowRulesMu sync.Mutex
	flowRules   *flowRules
}

func countState(s *State) *metrics.PolicyCounts {
	return &metrics.PolicyCounts{NetworkPolicies: len(s.NetworkPolicies), AppliedToGroups: len(s.AppliedToGroups), AddressGroups: len(s.AddressGroups)}
}

// Counts returns the number of policies and groups of the desired state,
// and of the rules installed by direction.
func (c *Controller) Counts() metrics.PolicyCounts {
	var out metrics.PolicyCounts
	if p := c.stateCounts.Load(); p != nil {
		out = *p
	}
	c.flowMu.Lock()
	defer c.flowMu.Unlock()
	for _, r := range c.installed.Rules {
		if r.Direction == pipeline.PolicyIngress {
			out.IngressRules++
		} else {
			out.EgressRules++
		}
	}
	return out
}

// Realization is how one policy stands on the node.
type Realization struct {
	// Generation is the generation whose flows are installed, or, with
	// Error, the generation the node could not fully enforce.
	Generation int64
	// Error says which rules the node could not express (an invalid port,
	// protocol or address); their traffic is denied. Empty when realized.
	Error string
}

// New returns a controller that enforces nothing until Load or Sync.
func New(cfg Config) (*Controller, error) {
	if cfg.Node == nil || cfg.Logger == nil {
		return nil, errors.New("policy controller: node and logger are required")
	}
	return &Controller{
		node: cfg.Node, log: cfg.Logger, file: cfg.StateFile, exportDenied: cfg.ExportDenied,
		sem:     make(chan struct{}, 1),
		served1: make(chan struct{}), kick: make(chan struct{}, 1),
		realized: map[string]int64{}, failed: map[string]Realization{},
		changed: make(chan struct{}, 1),
	}, nil
}

// lock takes sem, or returns ctx's error.
func (c *Controller) lock(ctx context.Context) error {
	select {
	case c.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Controller) unlock() { <-c.sem }

// Load reads the State kept on disk, if any, and makes its flows the
// controller's installed set without touching the bridge: the agent's next
// full replay (which asks Flows) installs them in the same bundle as the
// pods' flows, so a restarted agent enforces the last known policies
// before any pod flow allows traffic. Call it after the agent knows its
// pods and before its first OpenFlow connection. A missing file is not an
// error.
func (c *Controller) Load() error {
	c.sem <- struct{}{}
	defer c.unlock()
	if c.file == "" {
		return nil
	}
	s, err := readState(c.file)
	if err != nil {
		return err
	}
	if s == nil {
		return nil
	}
	c.state = s
	c.stateCounts.Store(countState(s))
	c.synced.Store(s)
	c.inc, c.index = nil, nil
	r, _ := c.resolve()
	if _, err := pipeline.PolicyFlows(r.set, 0); err != nil {
		return fmt.Errorf("policies on disk: %w", err)
	}
	c.flowMu.Lock()
	c.installed, c.have, c.haveRound = r.set, nil, 0
	c.installedGen++
	c.setRealizedLocked(r)
	c.flowMu.Unlock()
	c.log.Info("policies loaded from disk", "policies", len(s.NetworkPolicies), "rules", len(r.set.Rules))
	return nil
}

// Sync makes s the desired state: it is written to disk, then the
// difference between the flows it needs and those installed goes to the
// bridge in one atomic bundle. s is owned by the controller afterwards,
// and so are its objects: a policy or group that changes must come as a
// new object (as the watch decodes it), never changed in place, since
// only the objects that are not the ones of the last Sync are resolved
// and encoded again (incremental.go). Should the install fail, Run
// retries it until it succeeds or another Sync replaces s.
func (c *Controller) Sync(ctx context.Context, s State) error {
	if err := c.lock(ctx); err != nil {
		return err
	}
	c.state = &s
	c.stateCounts.Store(countState(&s))
	c.synced.Store(&s)
	if c.file != "" {
		if err := c.enc.write(c.file, &s); err != nil {
			c.unlock()
			return err
		}
	}
	done, err := c.applyLocked(ctx, true)
	c.unlock()
	if err != nil {
		return err
	}
	return done(ctx)
}

// PodsChanged recomputes the flows after local pods were added or removed
// and returns once an install that saw the change is done, with its
// error. Calls that come together share one install: 50 pods added at
// once cost one or two recomputations, not 50. Should the install fail,
// Run retries it.
func (c *Controller) PodsChanged(ctx context.Context) error {
	ticket := c.takeTicket()
	for {
		c.reqMu.Lock()
		served, err, next := c.served, c.servedBy, c.served1
		c.reqMu.Unlock()
		if served >= ticket {
			return err
		}
		select {
		case c.sem <- struct{}{}:
			c.reqMu.Lock()
			served, err = c.served, c.servedBy
			c.reqMu.Unlock()
			if served < ticket {
				_, err = c.applyLocked(ctx, false)
			}
			c.unlock()
			return err
		case <-next:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// PodsChangedLater asks Run to recompute the flows after a pod change,
// without waiting for it (CNI DEL: a pod that is gone needs no flows).
func (c *Controller) PodsChangedLater() {
	c.takeTicket()
	c.wake()
}

func (c *Controller) takeTicket() uint64 {
	c.reqMu.Lock()
	defer c.reqMu.Unlock()
	c.ticket++
	return c.ticket
}

func (c *Controller) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Run installs deferred pod changes and retries failed installs, with a
// back-off from 200 ms doubling to 10 s, until ctx ends. A failed install
// of flows whose outcome is unknown (the switch may or may not have
// committed them) is retried from the switch's own flows, read back.
// Input the pipeline refuses (pipeline.ErrBadPolicy) is not retried: the
// next Sync brings other input.
func (c *Controller) Run(ctx context.Context) {
	delay := retryMin
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		}
		for {
			err := c.applyPending(ctx)
			if err == nil || ctx.Err() != nil {
				delay = retryMin
				break
			}
			c.log.Warn("policy flows not installed, retrying", "err", err, "in", delay)
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay + rand.N(delay/4)):
			}
			delay = min(2*delay, retryMax)
		}
	}
}

// applyPending applies when a pod change is waiting or the last apply
// failed; otherwise it does nothing.
func (c *Controller) applyPending(ctx context.Context) error {
	if err := c.lock(ctx); err != nil {
		return err
	}
	c.reqMu.Lock()
	pending := c.ticket > c.served
	c.reqMu.Unlock()
	if c.state == nil || !pending && !c.retry {
		c.unlock()
		return nil
	}
	done, err := c.applyLocked(ctx, true)
	c.unlock()
	if err != nil {
		if errors.Is(err, pipeline.ErrBadPolicy) {
			return nil
		}
		return err
	}
	return done(ctx)
}

// Flows returns the installed policy flows under round r, for the agent's
// full replay.
func (c *Controller) Flows(r pipeline.Round) ([]*openflow.Flow, error) {
	c.flowMu.Lock()
	defer c.flowMu.Unlock()
	if emptySet(c.installed) {
		return nil, nil
	}
	return pipeline.PolicyFlows(c.installed, r)
}

// Realized returns the generation of every policy whose flows are
// installed, by policy name.
func (c *Controller) Realized() map[string]int64 {
	c.flowMu.Lock()
	defer c.flowMu.Unlock()
	return maps.Clone(c.realized)
}

// Realizations returns every realized policy (by name, without Error) and
// every policy with a rule the node cannot enforce (with Error): what the
// node reports to the controller. A policy still waiting for its groups is
// in neither.
func (c *Controller) Realizations() map[string]Realization {
	c.flowMu.Lock()
	defer c.flowMu.Unlock()
	out := make(map[string]Realization, len(c.realized)+len(c.failed))
	for name, gen := range c.realized {
		out[name] = Realization{Generation: gen}
	}
	maps.Copy(out, c.failed)
	return out
}

// RealizationsChanged is signalled (without blocking the controller) after
// the result of Realizations changed. It has one slot: a single reader
// sees at least one signal after any burst of changes.
func (c *Controller) RealizationsChanged() <-chan struct{} { return c.changed }

// setRealizedLocked records what r realizes and signals a change; the
// caller holds flowMu.
func (c *Controller) setRealizedLocked(r resolved) {
	if maps.Equal(c.realized, r.gens) && maps.Equal(c.failed, r.failed) {
		return
	}
	c.realized, c.failed = r.gens, r.failed
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// setInstallFailedLocked records that the flows of r could not be
// installed. The installed flows still enforce what they enforced, so
// realized generations stay; every policy r would bring to another
// generation reports the error, as do r's invalid rules. The next
// successful apply replaces all of it. The caller holds flowMu.
func (c *Controller) setInstallFailedLocked(r resolved, err error) {
	failed := maps.Clone(r.failed)
	for name, gen := range r.gens {
		if have, ok := c.realized[name]; !ok || have != gen {
			failed[name] = Realization{Generation: gen, Error: "flows not installed: " + err.Error()}
		}
	}
	if maps.Equal(c.failed, failed) {
		return
	}
	c.failed = failed
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// resolve resolves c.state against the node's pods; it also returns the
// pods' addresses by OpenFlow port.
func (c *Controller) resolve() (resolved, map[uint32][]netip.Addr) {
	pods := c.node.LocalPods()
	r := resolve(*c.state, pods, c.node.NodeSources())
	r.set.ExportDenied = c.exportDenied
	if _, err := c.prios.assign(&r.set, r.orders); err != nil {
		r.problems = append(r.problems, err.Error())
	}
	for _, p := range r.problems {
		c.log.Warn("policy not enforced", "problem", p)
	}
	ips := make(map[uint32][]netip.Addr, len(pods))
	for _, p := range pods {
		ips[p.OFPort] = p.IPs
	}
	return r, ips
}
