package proxier

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/core/proxy"
	"github.com/seine-cni/seine/ovs/openflow"
)

// Retry back-off of a failed sync, and the period of the affinity sweep.
const (
	retryMin      = 200 * time.Millisecond
	retryMax      = 10 * time.Second
	sweepInterval = 10 * time.Second
)

// Run installs changes until ctx ends: every change is coalesced with
// those that arrive while a sync runs, a failed sync is retried with
// back-off, and learned affinity longer than OpenFlow's timeouts is
// expired. It also answers rejected connections.
func (c *Controller) Run(ctx context.Context) {
	go c.answerRejects(ctx)
	sweep := time.NewTicker(sweepInterval)
	defer sweep.Stop()
	delay := time.Duration(0)
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		case <-retry:
		case <-sweep.C:
			if err := c.sweepAffinity(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("affinity sweep", "err", err)
			}
			continue
		}
		retry = nil
		if err := c.Sync(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			delay = min(max(2*delay, retryMin), retryMax)
			c.log.Error("service sync failed, retrying", "err", err, "in", delay)
			retry = time.After(delay)
			continue
		}
		delay = 0
		select {
		case <-ctx.Done():
			return
		case <-time.After(c.cfg.MinSyncInterval):
		}
	}
}

// Sync installs what changed since the last sync, in one bundle. On
// failure the Services are marked changed again.
func (c *Controller) Sync(ctx context.Context) error {
	c.mu.Lock()
	if !c.primed {
		c.mu.Unlock()
		return nil // Prime has not run: the informers have not synced
	}
	keys := c.tracker.Changed()
	wants := make(map[string]*proxy.Service, len(keys))
	triggers := map[string][]time.Time{}
	for _, k := range keys {
		wants[k] = c.tracker.Service(k)
		tt := append(c.pending[k], c.tracker.TriggerTimes(k)...)
		delete(c.pending, k)
		if len(tt) > 0 {
			triggers[k] = tt
		}
	}
	c.mu.Unlock()
	if len(keys) == 0 {
		return nil
	}
	start := time.Now()
	var olds map[string]*proxy.Service
	err := c.node.Install(ctx, func(w Writer, n *pipeline.NodeConfig, r pipeline.Round) error {
		c.instMu.Lock()
		defer c.instMu.Unlock()
		p, err := c.plan(*n, r, keys, wants)
		if err != nil {
			return err
		}
		if len(p.msgs) > 0 {
			if err := w.Bundle(ctx, p.msgs...); err != nil {
				if !definite(err) {
					for _, k := range keys {
						c.unknown[k] = true
					}
				}
				return fmt.Errorf("install %d services (%d messages): %w", len(keys), len(p.msgs), err)
			}
		}
		olds = p.commit(c)
		return nil
	})
	if err != nil {
		c.mu.Lock()
		c.tracker.Retry(keys...)
		for k, tt := range triggers {
			// Kept: the retry's latency counts from them.
			c.pending[k] = append(c.pending[k], tt...)
		}
		c.mu.Unlock()
		if errors.Is(err, ErrNotReady) {
			return nil // the first replay installs them
		}
		return err
	}
	done := time.Now()
	if m := c.cfg.Metrics; m != nil {
		m.SyncDuration.Observe(done.Sub(start).Seconds())
		for _, tt := range triggers {
			for _, t := range tt {
				m.ProgrammingDuration.Observe(done.Sub(t).Seconds())
			}
		}
		m.Services.Set(float64(c.installedCount()))
	}
	c.afterInstall(ctx, keys, olds, wants)
	if c.cfg.Installed != nil {
		c.cfg.Installed()
	}
	return nil
}

func (c *Controller) installedCount() int {
	c.instMu.Lock()
	defer c.instMu.Unlock()
	return len(c.installed)
}

// definite reports whether a failed bundle certainly changed nothing: the
// switch rejected it (the bundle was discarded). Anything else (the
// connection went away, the context ended after the commit was sent) may
// or may not have committed.
func definite(err error) bool {
	var oe *openflow.Error
	return errors.As(err, &oe)
}

// plan is one sync's bundle and the state it leaves.
type plan struct {
	msgs  []openflow.Message
	after map[string]*installed // nil entry: the Service is gone
	sets  map[string]pipeline.ServiceFlowSet
	keys  []string
	ids   map[string]map[string]uint32
	wants map[string]*proxy.Service
}

// plan builds the bundle for the changed Services: groups added or
// replaced first, then the Services whose state is unknown cleared by
// cookie, flows added or replaced, flows and learned affinity of removed
// endpoints deleted, and last the groups nothing uses any more. The caller
// holds instMu.
func (c *Controller) plan(n pipeline.NodeConfig, r pipeline.Round, keys []string, wants map[string]*proxy.Service) (*plan, error) {
	p := &plan{sets: map[string]pipeline.ServiceFlowSet{}, keys: keys, ids: map[string]map[string]uint32{}, wants: wants}
	var groupAdds, clears, flowAdds, flowDels, learnedDels, groupDels []openflow.Message
	for _, k := range keys {
		old := c.installed[k]
		want := wants[k]
		var set pipeline.ServiceFlowSet
		if want != nil {
			ids := c.ids.assign(want)
			s, err := pipeline.ServiceFlows(n, want, ids, r)
			if err != nil {
				// Not expressible (another family, a bad address): the
				// Service gets no flows, and says why.
				c.log.Error("service not installed", "service", k, "err", err)
				want = nil
			} else {
				set, p.ids[k] = s, ids
			}
		}
		p.sets[k] = set
		unknown := c.unknown[k]
		if unknown {
			cookie, mask := serviceSelector(k)
			clears = append(clears, openflow.DeleteFlows(openflow.TableAll, nil, cookie, mask))
		}
		for _, g := range set.Groups {
			if print, ok := old.groupPrint(g.ID); !unknown && ok && print == groupPrint(g) {
				continue
			}
			mods, err := openflow.GroupMods(openflow.GroupAddOrModify, g)
			if err != nil {
				return nil, fmt.Errorf("service %s: %w", k, err)
			}
			groupAdds = append(groupAdds, mods...)
		}
		want_ := map[string]bool{}
		for _, f := range set.Flows {
			fk := flowKey(f)
			want_[fk] = true
			if !unknown && old != nil && sameFlow(old.flows[fk], f) {
				continue
			}
			flowAdds = append(flowAdds, flowMod(openflow.FlowAdd, f))
		}
		if old == nil {
			continue
		}
		if !unknown {
			for fk, f := range old.flows {
				if !want_[fk] {
					flowDels = append(flowDels, flowMod(openflow.FlowDeleteStrict, f))
				}
			}
		}
		keep := map[uint64]bool{}
		if want != nil {
			for _, a := range affinityIDs(want, p.ids[k]) {
				keep[a] = true
			}
		}
		for a := range old.affinity {
			if !keep[a] {
				learnedDels = append(learnedDels, openflow.DeleteFlows(uint8(pipeline.SessionAffinity), nil,
					uint64(pipeline.NewCookie(0, pipeline.CategoryAffinity, a)), affinityMask))
			}
		}
		for id := range old.groups {
			if !slices.ContainsFunc(set.Groups, func(g *openflow.GroupEntry) bool { return g.ID == id }) {
				groupDels = append(groupDels, openflow.DeleteGroup(id))
			}
		}
	}
	for _, part := range [][]openflow.Message{groupAdds, clears, flowAdds, flowDels, learnedDels, groupDels} {
		p.msgs = append(p.msgs, part...)
	}
	return p, nil
}

// commit records the plan as installed and returns the Services as they
// were before. The caller holds instMu.
func (p *plan) commit(c *Controller) map[string]*proxy.Service {
	olds := map[string]*proxy.Service{}
	for _, k := range p.keys {
		if old := c.installed[k]; old != nil {
			olds[k] = old.svc
		}
		delete(c.unknown, k)
		want := p.wants[k]
		if ids, ok := p.ids[k]; ok && want != nil {
			c.record(k, want, ids, p.sets[k])
			c.ids.release(k, ids)
			continue
		}
		c.setInstalled(k, nil)
		c.ids.release(k, nil)
	}
	return olds
}

// affinityMask selects the learned flows of one endpoint of one Service
// port: category and ID, whatever round. (CategoryMask &^ RoundMask, the
// category alone, took every Service's learned flows on the node with any
// one endpoint's: the upstream spec of UDP ClientIP affinity failed beside
// another Service's teardown.)
const affinityMask = pipeline.ObjectMask &^ pipeline.RoundMask

func affinityIDs(s *proxy.Service, ids map[string]uint32) []uint64 {
	var out []uint64
	for i := range s.Ports {
		p := &s.Ports[i]
		if p.AffinitySeconds == 0 {
			continue
		}
		for _, eps := range [][]proxy.Endpoint{p.ClusterEndpoints, p.LocalEndpoints} {
			for _, e := range eps {
				out = append(out, pipeline.AffinityID(ids[p.Key()], e.AddrPort()))
			}
		}
	}
	return out
}

// serviceSelector selects every flow of Service k, whatever round.
func serviceSelector(k string) (cookie, mask uint64) {
	return uint64(pipeline.NewCookie(0, pipeline.CategoryService, pipeline.ServiceID(k))), pipeline.ObjectMask &^ pipeline.RoundMask
}

func flowMod(command uint8, f *openflow.Flow) *openflow.FlowMod {
	return &openflow.FlowMod{Command: command, Flow: f, OutPort: openflow.PortAny, OutGroup: openflow.GroupAny, BufferID: openflow.NoBuffer}
}

// flowKey names a flow as OVS tells flows apart: table, priority, match
// (their bytes: the installed state keeps one key per flow of every
// Service, and hex doubled it).
func flowKey(f *openflow.Flow) string {
	m := f.MatchBytes()
	b := make([]byte, 3, 3+len(m))
	b[0], b[1], b[2] = f.TableID(), byte(f.Priority()>>8), byte(f.Priority())
	return string(append(b, m...))
}

// sameFlow reports whether f's actions equal old's (the round in the
// cookie does not matter).
func sameFlow(old, f *openflow.Flow) bool {
	return old != nil && bytes.Equal(old.InstructionBytes(), f.InstructionBytes())
}

// groupPrint is the fingerprint of one of the installed Service's groups.
func (in *installed) groupPrint(id uint32) (uint64, bool) {
	if in == nil {
		return 0, false
	}
	p, ok := in.groups[id]
	return p, ok
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
