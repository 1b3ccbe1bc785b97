package agent

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seine-cni/seine/core/agent/policy"
	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/fqdn"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
)

// Domain-name peers (core/fqdn/README.md). The controller sends a rule's
// domain names as they are (NetworkPolicyPeer.DomainNames); their
// addresses exist only on the node, in the DNS answers its pods receive.
// fqdnPeers stands between the policy watch and the policy controller:
// every pattern becomes an AddressGroup of the node's own, "fqdn:<pattern>",
// whose members are the addresses the answers gave, and every rule naming
// the pattern names that group as well. The policy controller then treats
// them as any group: a new address re-resolves only the policies that use
// the pattern, an expired one narrows them (their cached datapath flows go
// before the change counts as realized).
//
// While patterns exist, pipeline.DNSInterceptFlows sends every DNS answer
// to a local pod here, paused: fqdnPeers learns it, installs what grew
// (policy.Controller.Sync returns once the bundle is in), and only then
// resumes the answer, so the pod's first connection to the address meets
// the flows that allow it.

// fqdnGroupPrefix names the node's own AddressGroups of domain names (the
// controller's are hashes: no clash).
const fqdnGroupPrefix = "fqdn:"

// fqdnQueue bounds the answers waiting for the agent: the meter already
// bounds the rate; one beyond the queue is resumed unlearned.
const fqdnQueue = 256

type fqdnPeers struct {
	a    *Agent
	next interface {
		Sync(ctx context.Context, s policy.State) error
	}
	pins chan *openflow.PacketIn
	// intercepting: the DNS flow is (to be) on the bridge; read by
	// replays under the flow lock, so not under mu.
	intercepting atomic.Bool
	now          func() time.Time

	mu    sync.Mutex // serializes the syncs: the watch's and the answers'
	cache fqdn.Cache
	last  *policy.State
	// rewritten are the policies with domain names as handed on, by name,
	// with the object they were made from (same object: same copy, so the
	// policy controller sees no change).
	rewritten map[string][2]*controlplane.NetworkPolicy
	// groups are the node's own groups by pattern (same addresses: same
	// object).
	groups map[string]*controlplane.AddressGroup
}

func newFQDNPeers(a *Agent, next interface {
	Sync(ctx context.Context, s policy.State) error
}) *fqdnPeers {
	return &fqdnPeers{a: a, next: next, pins: make(chan *openflow.PacketIn, fqdnQueue), now: time.Now,
		rewritten: map[string][2]*controlplane.NetworkPolicy{}, groups: map[string]*controlplane.AddressGroup{}}
}

// Sync takes the node's whole policy state from the watch: the patterns
// its rules name become what the cache learns, the DNS flow goes on the
// bridge before the first rule with a pattern is installed (and off after
// the last is gone), and the state goes on with the node's own groups.
func (f *fqdnPeers) Sync(ctx context.Context, s policy.State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.last = &s
	pats := patternsOf(s)
	f.cache.SetPatterns(pats)
	if len(pats) > 0 && !f.intercepting.Load() {
		if err := f.setIntercept(ctx, true); err != nil {
			return err
		}
	}
	err := f.next.Sync(ctx, f.augment(s))
	if len(pats) == 0 && f.intercepting.Load() {
		if err := f.setIntercept(ctx, false); err != nil {
			f.a.log.Warn("removing the DNS answers' flow", "err", err)
		}
	}
	return err
}

// patternsOf is every domain-name pattern of s's egress rules.
func patternsOf(s policy.State) []fqdn.Pattern {
	seen := map[fqdn.Pattern]bool{}
	for _, np := range s.NetworkPolicies {
		if np == nil {
			continue
		}
		for _, r := range np.Rules {
			for _, d := range r.To.DomainNames {
				if p, err := fqdn.ParsePattern(d); err == nil {
					seen[p] = true
				}
			}
		}
	}
	return slices.Collect(maps.Keys(seen))
}

// augment is s with the node's own groups: one per pattern, named by the
// rules that name the pattern. Called with mu held.
func (f *fqdnPeers) augment(s policy.State) policy.State {
	if len(f.cache.Patterns()) == 0 {
		clear(f.rewritten)
		clear(f.groups)
		return s
	}
	out := policy.State{NetworkPolicies: maps.Clone(s.NetworkPolicies), AppliedToGroups: s.AppliedToGroups,
		AddressGroups: maps.Clone(s.AddressGroups)}
	if out.AddressGroups == nil {
		out.AddressGroups = map[string]*controlplane.AddressGroup{}
	}
	now := f.now()
	used := map[string]bool{}
	for name, np := range s.NetworkPolicies {
		if np == nil || !hasDomainNames(np) {
			continue
		}
		if rw, ok := f.rewritten[name]; ok && rw[0] == np {
			out.NetworkPolicies[name] = rw[1]
		} else {
			cp := np.DeepCopy()
			for i := range cp.Rules {
				for _, d := range cp.Rules[i].To.DomainNames {
					cp.Rules[i].To.AddressGroups = append(cp.Rules[i].To.AddressGroups, fqdnGroupPrefix+d)
				}
			}
			f.rewritten[name] = [2]*controlplane.NetworkPolicy{np, cp}
			out.NetworkPolicies[name] = cp
		}
		used[name] = true
	}
	for name := range f.rewritten {
		if !used[name] {
			delete(f.rewritten, name)
		}
	}
	pats := f.cache.Patterns()
	for _, p := range pats {
		key := p.String()
		addrs := f.cache.Addrs(p, now)
		g := f.groups[key]
		if g == nil || !slices.Equal(groupAddrs(g), addrs) {
			g = &controlplane.AddressGroup{ObjectMeta: metav1.ObjectMeta{Name: fqdnGroupPrefix + key}}
			for _, a := range addrs {
				g.Members = append(g.Members, controlplane.GroupMember{IPs: []controlplane.IPAddress{a.AsSlice()}})
			}
			f.groups[key] = g
		}
		out.AddressGroups[g.Name] = g
	}
	for key := range f.groups {
		if !slices.ContainsFunc(pats, func(p fqdn.Pattern) bool { return p.String() == key }) {
			delete(f.groups, key)
		}
	}
	return out
}

func hasDomainNames(np *controlplane.NetworkPolicy) bool {
	for _, r := range np.Rules {
		if len(r.To.DomainNames) > 0 {
			return true
		}
	}
	return false
}

func groupAddrs(g *controlplane.AddressGroup) []netip.Addr {
	var out []netip.Addr
	for _, m := range g.Members {
		for _, ip := range m.IPs {
			if a, ok := netip.AddrFromSlice(ip); ok {
				out = append(out, a.Unmap())
			}
		}
	}
	return out
}

// setIntercept adds or deletes the DNS answers' flow (and its meter
// first), under the flow lock so a replay sees the flag and the bridge
// agree.
func (f *fqdnPeers) setIntercept(ctx context.Context, on bool) error {
	f.a.log.Info("DNS answers to local pods go through the agent", "on", on)
	return f.a.doLocked(ctx, f.a.sw.Do, func(w FlowWriter, node *pipeline.NodeConfig, round pipeline.Round) error {
		f.intercepting.Store(on)
		if node == nil {
			return nil // the first replay installs it
		}
		if !on {
			return w.BundleFlows(ctx, openflow.FlowDeleteStrict, pipeline.DNSInterceptFlows(round))
		}
		if err := installMeters(ctx, w, pipeline.DNSMeters()); err != nil {
			return err
		}
		return w.BundleFlows(ctx, openflow.FlowAdd, pipeline.DNSInterceptFlows(round))
	})
}

// replayFlows is what a full replay adds for domain names: the DNS flow
// and its meter while patterns exist. The caller holds the flow lock.
func (f *fqdnPeers) replayFlows(ctx context.Context, w FlowWriter, r pipeline.Round) ([]*openflow.Flow, error) {
	if !f.intercepting.Load() {
		return nil, nil
	}
	if err := installMeters(ctx, w, pipeline.DNSMeters()); err != nil {
		return nil, err
	}
	return pipeline.DNSInterceptFlows(r), nil
}

// handlePacketIn takes a paused DNS answer; it reports whether the
// packet-in was one. It never blocks the OpenFlow reader.
func (f *fqdnPeers) handlePacketIn(pi *openflow.PacketIn) bool {
	if len(pi.Userdata) == 0 || pi.Userdata[0] != pipeline.PacketInDNSResponse {
		return false
	}
	select {
	case f.pins <- pi:
	default:
		go f.resume(context.Background(), pi)
	}
	return true
}

// run learns the queued answers and resumes them, and forgets addresses as
// they expire, until ctx ends.
func (f *fqdnPeers) run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		f.mu.Lock()
		next, ok := f.cache.NextExpiry()
		f.mu.Unlock()
		wait := time.Hour
		if ok {
			wait = max(next.Sub(f.now()), 0)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case pi := <-f.pins:
			batch := []*openflow.PacketIn{pi}
		drain:
			for len(batch) < fqdnQueue {
				select {
				case pi := <-f.pins:
					batch = append(batch, pi)
				default:
					break drain
				}
			}
			f.learn(ctx, batch)
			for _, pi := range batch {
				f.resume(ctx, pi)
			}
		case <-timer.C:
			f.mu.Lock()
			if changed := f.cache.Expire(f.now()); len(changed) > 0 {
				f.resyncLocked(ctx, "expired", changed)
			}
			f.mu.Unlock()
		}
	}
}

// learn reads the answers and installs what they taught before it returns.
func (f *fqdnPeers) learn(ctx context.Context, batch []*openflow.PacketIn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var grew []fqdn.Pattern
	for _, pi := range batch {
		_, msg, err := fqdn.ResponseFrame(pi.Packet)
		if err != nil {
			f.a.log.Info("a DNS answer not read", "err", err)
			continue
		}
		g, err := f.cache.Learn(f.now(), msg)
		if err != nil {
			f.a.log.Info("a DNS answer not read", "err", err)
			continue
		}
		grew = append(grew, g...)
	}
	if len(grew) == 0 {
		return
	}
	f.resyncLocked(ctx, "learned", grew)
	// A cached datapath drop of a moment ago must not meet the pod's first
	// connection to an address the answer opened.
	var addrs []netip.Addr
	now := f.now()
	for _, p := range grew {
		addrs = append(addrs, f.cache.Addrs(p, now)...)
	}
	if err := f.a.OpenDatapath(ctx, addrs); err != nil && ctx.Err() == nil {
		f.a.log.Warn("deleting cached drops of addresses a DNS answer allowed", "err", err)
	}
}

// resyncLocked hands the last state on again with the cache's addresses.
func (f *fqdnPeers) resyncLocked(ctx context.Context, why string, pats []fqdn.Pattern) {
	if f.last == nil {
		return
	}
	start := time.Now()
	err := f.next.Sync(ctx, f.augment(*f.last))
	f.a.log.Info("domain-name peers "+why, "patterns", len(pats), "first", pats[0].String(), "took", time.Since(start).Round(time.Microsecond), "err", err)
	if err != nil && ctx.Err() == nil {
		f.a.log.Warn("installing domain-name peers", "why", why, "err", err)
	}
}

// resume sends a paused answer on to its pod.
func (f *fqdnPeers) resume(ctx context.Context, pi *openflow.PacketIn) {
	err := f.a.sw.Do(ctx, func(w FlowWriter) error {
		aw, ok := w.(applier)
		if !ok {
			return nil
		}
		return aw.Apply(ctx, &openflow.Resume{PacketIn: pi})
	})
	if err != nil && ctx.Err() == nil {
		f.a.log.Warn("resuming a DNS answer", "err", err)
	}
}
