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
	"net/netip"
	"slices"
	"sync"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
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

// Writer applies OpenFlow messages in one atomic bundle; *openflow.Conn
// implements it.
type Writer interface {
	Bundle(ctx context.Context, msgs ...openflow.Message) error
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
	// and full replays (which include Flows).
	Install(ctx context.Context, fn func(w Writer, r pipeline.Round) error) error
}

// DatapathSettler is an optional interface of Node: WaitDatapath returns
// once the datapath's flow cache reflects the flow tables (ovs-vswitchd's
// revalidator/wait). Without it, connections that a change denies may
// still be let through by cached datapath flows for a few milliseconds
// after Sync returns.
type DatapathSettler interface {
	WaitDatapath(ctx context.Context) error
}

// Config configures a Controller.
type Config struct {
	Node   Node
	Logger *slog.Logger
	// StateFile is where the last State is kept ("" keeps nothing).
	StateFile string
}

// Controller enforces NetworkPolicy on one node.
type Controller struct {
	node Node
	log  *slog.Logger
	file string

	// mu serializes Sync, PodsChanged and Load.
	mu    sync.Mutex
	state *State // nil until a State was synced or loaded

	// flowMu guards what the bridge holds (or the agent's next replay
	// installs). It is taken inside the agent's lock by Flows, so nothing
	// may wait for the agent while holding it.
	flowMu    sync.Mutex
	installed pipeline.PolicySet
	realized  map[string]int64
	failed    map[string]Realization

	changed chan struct{} // signalled when realized or failed changed
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
		node: cfg.Node, log: cfg.Logger, file: cfg.StateFile,
		realized: map[string]int64{}, failed: map[string]Realization{},
		changed: make(chan struct{}, 1),
	}, nil
}

// Load reads the State kept on disk, if any, and makes its flows the
// controller's installed set without touching the bridge: the agent's next
// full replay (which asks Flows) installs them in the same bundle as the
// pods' flows, so a restarted agent enforces the last known policies
// before any pod flow allows traffic. Call it after the agent knows its
// pods and before its first OpenFlow connection. A missing file is not an
// error.
func (c *Controller) Load() error {
	c.mu.Lock()
	defer c.mu.Unlock()
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
	r := c.resolve()
	if _, err := pipeline.PolicyFlows(r.set, 0); err != nil {
		return fmt.Errorf("policies on disk: %w", err)
	}
	c.flowMu.Lock()
	c.installed = r.set
	c.setRealizedLocked(r)
	c.flowMu.Unlock()
	c.log.Info("policies loaded from disk", "policies", len(s.NetworkPolicies), "rules", len(r.set.Rules))
	return nil
}

// Sync makes s the desired state: it is written to disk, then the
// difference between the flows it needs and those installed goes to the
// bridge in one atomic bundle. s is owned by the controller afterwards.
func (c *Controller) Sync(ctx context.Context, s State) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state = &s
	if c.file != "" {
		if err := writeState(c.file, &s); err != nil {
			return err
		}
	}
	return c.apply(ctx, true)
}

// PodsChanged recomputes the flows after local pods were added or removed.
// Errors are logged; the next Sync or PodsChanged retries.
func (c *Controller) PodsChanged(ctx context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == nil {
		return
	}
	if err := c.apply(ctx, false); err != nil {
		c.log.Error("policy flows after a pod change", "err", err)
	}
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

func (c *Controller) resolve() resolved {
	r := resolve(*c.state, c.node.LocalPods(), c.node.NodeSources())
	for _, p := range r.problems {
		c.log.Warn("policy not enforced", "problem", p)
	}
	return r
}

// apply installs the difference between the flows of c.state and the
// installed ones and, with settle, waits for the datapath to drop cached
// flows of the old state (see DatapathSettler). Pod changes do not settle:
// a pod that just got its port has no cached flows, and one that went has
// no traffic. The caller holds c.mu.
func (c *Controller) apply(ctx context.Context, settle bool) error {
	r := c.resolve()
	if _, err := pipeline.PolicyFlows(r.set, 0); err != nil {
		return fmt.Errorf("policy flows: %w", err)
	}
	narrowed := false // the change may deny what the old flows allowed
	err := c.node.Install(ctx, func(w Writer, round pipeline.Round) error {
		c.flowMu.Lock()
		defer c.flowMu.Unlock()
		msgs, narrows, err := diff(c.installed, r.set, round)
		if err != nil {
			return err
		}
		if len(msgs) > 0 {
			if err := w.Bundle(ctx, msgs...); err != nil {
				return fmt.Errorf("install %d policy flow changes: %w", len(msgs), err)
			}
			c.log.Debug("policy flows changed", "changes", len(msgs), "rules", len(r.set.Rules))
			narrowed = narrows
		}
		c.installed = r.set
		return nil
	})
	if err != nil {
		c.flowMu.Lock()
		c.setInstallFailedLocked(r, err)
		c.flowMu.Unlock()
		return err
	}
	// Cached datapath flows of the old policies are gone once the
	// revalidators have run: only then is a change that denies something
	// realized. A change that only allows more needs no wait.
	if st, ok := c.node.(DatapathSettler); ok && narrowed && settle {
		if err := st.WaitDatapath(ctx); err != nil {
			c.log.Warn("waiting for the datapath to take the policy change", "err", err)
		}
	}
	c.flowMu.Lock()
	c.setRealizedLocked(r)
	c.flowMu.Unlock()
	return nil
}

// diff returns the flow-mods that turn the flows of from into those of to,
// in this order: new isolation drops, deletes of other flows, adds of other
// flows, deletes of isolation drops. The bundle is atomic, so packets see
// the old or the new set only; the order is the safe one even so (a pod is
// isolated before its old allows go and stays isolated until its new
// allows are in).
//
// narrows reports whether the change may deny something the old flows
// allowed: a delete, a replaced flow or a new isolation drop. Adding flows
// only widens what is allowed.
func diff(from, to pipeline.PolicySet, r pipeline.Round) (msgs []openflow.Message, narrows bool, err error) {
	var old, want []*openflow.Flow
	if !emptySet(from) {
		if old, err = pipeline.PolicyFlows(from, r); err != nil {
			return nil, false, err
		}
	}
	if !emptySet(to) {
		if want, err = pipeline.PolicyFlows(to, r); err != nil {
			return nil, false, err
		}
	}
	have := map[string]*openflow.Flow{}
	for _, f := range old {
		have[f.Key()] = f
	}
	wanted := map[string]bool{}
	var isoAdd, add, del, isoDel []openflow.Message
	for _, f := range want {
		wanted[f.Key()] = true
		h, replaced := have[f.Key()]
		if replaced && h.CookieValue() == f.CookieValue() && string(h.InstructionBytes()) == string(f.InstructionBytes()) {
			continue
		}
		narrows = narrows || replaced
		if isIsolation(f) {
			isoAdd = append(isoAdd, openflow.AddFlow(f))
		} else {
			add = append(add, openflow.AddFlow(f))
		}
	}
	for _, f := range old {
		if wanted[f.Key()] {
			continue
		}
		if isIsolation(f) {
			isoDel = append(isoDel, openflow.DeleteFlowStrict(f))
		} else {
			del = append(del, openflow.DeleteFlowStrict(f))
		}
	}
	narrows = narrows || len(isoAdd) > 0 || len(del) > 0
	return slices.Concat(isoAdd, del, add, isoDel), narrows, nil
}

// isIsolation tells the default-drop flows of isolated pods: the only
// policy flows without actions.
func isIsolation(f *openflow.Flow) bool { return len(f.InstructionBytes()) == 0 }

func emptySet(s pipeline.PolicySet) bool {
	return len(s.Rules) == 0 && len(s.IngressIsolated) == 0 && len(s.EgressIsolated) == 0
}
