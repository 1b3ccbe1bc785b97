package policy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
)

// applyLocked installs the difference between the flows of c.state and
// what the switch holds; the caller holds sem. It serves every pod-change
// ticket taken before it started. On success it returns what is left to do
// once sem is released: with settle, a change that may deny something
// waits for the datapath (see DatapathSettler), and only then do the new
// generations count as realized. A pod change does not settle: a pod that
// just got its port has no cached flows, and one that went has no
// traffic.
func (c *Controller) applyLocked(ctx context.Context, settle bool) (func(context.Context) error, error) {
	c.reqMu.Lock()
	ticket := c.ticket
	c.reqMu.Unlock()
	if c.state == nil {
		c.serve(ticket, nil)
		return noWait, nil
	}
	r, d, ips := c.resolveIncremental()
	c.flowMu.Lock()
	old, oldKnown := c.installed, c.known || c.have == nil
	c.flowMu.Unlock()
	narrows, err := c.install(ctx, r, d)
	c.serve(ticket, err)
	c.flowMu.Lock()
	defer c.flowMu.Unlock()
	if err != nil {
		c.retry = !errors.Is(err, pipeline.ErrBadPolicy)
		if c.retry {
			c.wake()
		}
		c.latest = nil
		c.inc, c.index = nil, nil // the next apply starts from the installed set
		c.setInstallFailedLocked(r, err)
		return nil, err
	}
	c.retry = false
	c.latest = &r
	st, ok := c.node.(DatapathSettler)
	var narrowed []Narrowed
	if ok && narrows && settle {
		switch {
		case oldKnown && d != nil:
			narrowed = narrowedTraffic(d.old, d.cur, ips)
		case oldKnown:
			narrowed = narrowedTraffic(old, r.set, ips)
		default:
			narrowed = []Narrowed{{}} // the switch's flows were read back: anything may have changed
		}
	}
	if len(narrowed) == 0 {
		if c.settling == 0 {
			c.setRealizedLocked(r)
		}
		return noWait, nil
	}
	// Only once no cached datapath flow lets through what the change
	// denies is it realized. A change that only allows more needs no wait.
	c.settling++
	return func(ctx context.Context) error {
		if err := st.SettleDatapath(ctx, narrowed); err != nil {
			c.log.Warn("waiting for the datapath to take the policy change", "err", err)
		}
		c.flowMu.Lock()
		defer c.flowMu.Unlock()
		c.settling--
		if c.settling == 0 && c.latest != nil {
			c.setRealizedLocked(*c.latest)
		}
		return nil
	}, nil
}

func noWait(context.Context) error { return nil }

// serve marks the tickets up to t as served by an apply that ended with
// err, and wakes their waiters.
func (c *Controller) serve(t uint64, err error) {
	c.reqMu.Lock()
	defer c.reqMu.Unlock()
	if t <= c.served {
		return
	}
	c.served, c.servedBy = t, err
	close(c.served1)
	c.served1 = make(chan struct{})
}

// resolveIncremental resolves c.state against the node's pods: only the
// policies that changed since the last apply when it can (see incState),
// with d what changed; everything otherwise (d nil). It also returns the
// pods' addresses by OpenFlow port.
func (c *Controller) resolveIncremental() (r resolved, d *delta, ips map[uint32][]netip.Addr) {
	pods, sources := c.node.LocalPods(), c.node.NodeSources()
	if c.inc != nil {
		if rr, dd, ok := c.resolveDelta(c.inc, pods, sources); ok {
			r, d = rr, &dd
			c.deltas++
		} else {
			c.inc = nil
		}
	}
	if d == nil {
		r, c.inc = c.resolveFull(pods, sources)
	}
	r.set.ExportDenied = c.exportDenied
	for _, p := range r.problems {
		c.log.Warn("policy not enforced", "problem", p)
	}
	ips = make(map[uint32][]netip.Addr, len(pods))
	for _, p := range pods {
		ips[p.OFPort] = p.IPs
	}
	return r, d, ips
}

// install brings the switch's policy flows to those of r.set in one
// bundle. The flows are kept in c.index: with d (an incremental
// resolution) only the rules d changed are built again, otherwise the
// index is built from r.set; both before the agent's lock is taken. Under
// it the flows only get the round's cookie and are compared with what the
// switch holds: with d and the switch's flows known in this round, only
// the flows the index changed; otherwise every flow against the flows of
// the last install, or, after a replay, the installed set's flows under
// the new round, or, after an install whose outcome is unknown, the flows
// read back from the switch. narrows reports whether the change may deny
// something the old flows allowed.
func (c *Controller) install(ctx context.Context, r resolved, d *delta) (narrows bool, err error) {
	idx := c.index
	c.index = nil
	switch {
	case emptySet(r.set):
		idx, d = nil, nil
	case d != nil && idx != nil:
		if err := idx.Update(d.update, d.remove); err != nil {
			return false, fmt.Errorf("policy flows: %w", err)
		}
		idx.SetIsolated(r.set.IngressIsolated, r.set.EgressIsolated)
	default:
		d = nil
		if idx, err = pipeline.NewPolicyIndex(r.set); err != nil {
			return false, fmt.Errorf("policy flows: %w", err)
		}
	}
	err = c.node.Install(ctx, func(w Writer, round pipeline.Round) error {
		stamp := func(f *openflow.Flow) *openflow.Flow {
			return f.Cookie(uint64(pipeline.NewCookie(round, pipeline.CategoryPolicy, pipeline.Cookie(f.CookieValue()).ID())))
		}
		c.flowMu.Lock()
		have, known, haveRound, installed := c.have, c.known, c.haveRound, c.installed
		c.flowMu.Unlock()
		var msgs []openflow.Message
		var want []*openflow.Flow
		var changed []string
		partial := d != nil && known && have != nil && haveRound == round
		if partial {
			// Only the flows the change touched.
			changed = idx.Changed()
			sub := make(map[string]*openflow.Flow, len(changed))
			for _, k := range changed {
				if f := idx.Flow(k); f != nil {
					want = append(want, stamp(f))
				}
				if h := have[k]; h != nil {
					sub[k] = h
				}
			}
			msgs, narrows = diff(sub, want)
		} else {
			if idx != nil {
				want = idx.Flows()
				for _, f := range want {
					stamp(f)
				}
			}
			switch {
			case haveRound != round || have == nil && known:
				// A replay under this round installed the installed set.
				if have, err = flowMap(installed, round); err != nil {
					return err
				}
				fallthrough
			case known:
				msgs, narrows = diff(have, want)
			default:
				stats, err := w.DumpFlows(ctx, openflow.TableAll, uint64(pipeline.NewCookie(0, pipeline.CategoryPolicy, 0)), categoryMask)
				if err != nil {
					return fmt.Errorf("read the policy flows back: %w", err)
				}
				msgs = diffDump(stats, want)
				narrows = true
				c.log.Info("policy flows read back after an install of unknown outcome", "flows", len(stats), "changes", len(msgs))
			}
		}
		if len(msgs) > 0 {
			if err := w.Bundle(ctx, msgs...); err != nil {
				c.flowMu.Lock()
				if !knownOutcome(err) {
					c.known, c.haveRound = false, round
				}
				c.flowMu.Unlock()
				return fmt.Errorf("install %d policy flow changes: %w", len(msgs), err)
			}
			c.log.Debug("policy flows changed", "changes", len(msgs), "rules", len(r.set.Rules))
		}
		if partial {
			// have is the switch's: change it in place.
			c.flowMu.Lock()
			for _, k := range changed {
				if f := idx.Flow(k); f != nil {
					have[k] = f
				} else {
					delete(have, k)
				}
			}
			c.installed = r.set
			c.installedGen++
			c.flowMu.Unlock()
			return nil
		}
		have = make(map[string]*openflow.Flow, len(want))
		for _, f := range want {
			have[f.Key()] = f
		}
		c.flowMu.Lock()
		c.installed, c.have, c.haveRound, c.known = r.set, have, round, true
		c.installedGen++
		c.flowMu.Unlock()
		return nil
	})
	if err == nil && idx != nil {
		idx.ClearChanged()
		c.index = idx
	}
	return narrows, err
}

// categoryMask selects the category of a cookie, in any round.
const categoryMask = pipeline.CategoryMask &^ pipeline.RoundMask

// knownOutcome tells the errors after which the switch is known to hold
// what it held before the bundle: the switch refused it (and discarded
// it), or the encoder refused a message before anything was committed.
// After any other error (the context ended or the connection died while
// the bundle was committing) the switch may hold either state.
func knownOutcome(err error) bool {
	var oe *openflow.Error
	return errors.As(err, &oe) || errors.Is(err, openflow.ErrTooLarge)
}

func flowMap(s pipeline.PolicySet, r pipeline.Round) (map[string]*openflow.Flow, error) {
	m := map[string]*openflow.Flow{}
	if emptySet(s) {
		return m, nil
	}
	flows, err := pipeline.PolicyFlows(s, r)
	if err != nil {
		return nil, err
	}
	for _, f := range flows {
		m[f.Key()] = f
	}
	return m, nil
}

// diff returns the flow-mods that turn the flows have into want, in this
// order: new isolation drops, deletes of other flows, adds of other flows,
// deletes of isolation drops. The bundle is atomic, so packets see the
// old or the new set only; the order is the safe one even so (a pod is
// isolated before its old allows go and stays isolated until its new
// allows are in).
//
// narrows reports whether the change may deny something the old flows
// allowed: a delete, a replaced flow or a new isolation drop. Adding flows
// only widens what is allowed.
func diff(have map[string]*openflow.Flow, want []*openflow.Flow) (msgs []openflow.Message, narrows bool) {
	return plan(have, want, (*openflow.Flow).Key, func(h, f *openflow.Flow) bool {
		return string(h.InstructionBytes()) == string(f.InstructionBytes())
	})
}

// diffDump is diff against the flows the switch dumped, which name the
// same match with their fields in the switch's order: flows are compared
// by table, priority and sorted match text, and by the text of their
// actions. A dumped flow with another cookie (another round) is replaced.
func diffDump(dumped []openflow.FlowStats, want []*openflow.Flow) []openflow.Message {
	have := make(map[string]*openflow.Flow, len(dumped))
	for _, s := range dumped {
		have[textKey(s.Flow)] = s.Flow
	}
	msgs, _ := plan(have, want, textKey, func(h, f *openflow.Flow) bool {
		return h.ActionsString() == f.ActionsString()
	})
	return msgs
}

// plan is the messages that turn have (keyed by key) into want, in the
// order diff documents: a flow of want whose key have holds with the same
// cookie and the same actions (sameActions) is left alone. narrows as diff.
func plan(have map[string]*openflow.Flow, want []*openflow.Flow, key func(*openflow.Flow) string,
	sameActions func(h, f *openflow.Flow) bool) (msgs []openflow.Message, narrows bool) {
	wanted := make(map[string]bool, len(want))
	var isoAdd, add, del, isoDel []openflow.Message
	for _, f := range want {
		k := key(f)
		wanted[k] = true
		h, replaced := have[k]
		if replaced && h.CookieValue() == f.CookieValue() && sameActions(h, f) {
			continue
		}
		narrows = narrows || replaced
		if isIsolation(f) {
			isoAdd = append(isoAdd, openflow.AddFlow(f))
		} else {
			add = append(add, openflow.AddFlow(f))
		}
	}
	for k, f := range have {
		if wanted[k] {
			continue
		}
		if isIsolation(f) {
			isoDel = append(isoDel, openflow.DeleteFlowStrict(f))
		} else {
			del = append(del, openflow.DeleteFlowStrict(f))
		}
	}
	sortMsgs(del)
	sortMsgs(isoDel)
	narrows = narrows || len(isoAdd) > 0 || len(del) > 0
	return slices.Concat(isoAdd, del, add, isoDel), narrows
}

// textKey names a flow by table, priority and match with its fields
// sorted: the switch may hand a match back with its fields reordered.
func textKey(f *openflow.Flow) string {
	fields := strings.Split(f.MatchString(), ",")
	slices.Sort(fields)
	return fmt.Sprintf("%d/%s", f.TableID(), strings.Join(fields, ","))
}

// sortMsgs orders deletes built from a map, so a bundle is reproducible.
func sortMsgs(msgs []openflow.Message) {
	slices.SortFunc(msgs, func(a, b openflow.Message) int {
		return strings.Compare(a.(*openflow.FlowMod).Flow.Key(), b.(*openflow.FlowMod).Flow.Key())
	})
}

// isIsolation tells the flows that only deny: the default-drop flows of
// isolated pods (which send the packet to the agent first when denied
// connections are exported) and the other flows without actions.
func isIsolation(f *openflow.Flow) bool {
	return len(f.InstructionBytes()) == 0 || pipeline.IsIsolationFlow(f)
}

func emptySet(s pipeline.PolicySet) bool {
	return len(s.Rules) == 0 && len(s.IngressIsolated) == 0 && len(s.EgressIsolated) == 0
}
