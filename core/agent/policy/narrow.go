package policy

import (
	"fmt"
	"net/netip"

	"github.com/seine-cni/seine/core/pipeline"
)

// Narrowed is traffic a policy change may have stopped allowing, which
// cached datapath flows could still let through: new connections between
// Targets (local pods' addresses: the destination of an ingress packet,
// the source of an egress one) and Peers (the other end), for Services.
// No Peers or no Services means any. The zero Narrowed (no Direction)
// means any traffic at all: the settler cannot be more precise than
// flushing everything.
type Narrowed struct {
	Direction pipeline.PolicyDirection
	Targets   []netip.Addr
	Peers     []netip.Prefix
	Services  []pipeline.PolicyService
}

// Everything reports whether n is the zero Narrowed: any traffic.
func (n Narrowed) Everything() bool { return n.Direction == 0 }

func (n Narrowed) String() string {
	if n.Everything() {
		return "everything"
	}
	return fmt.Sprintf("%s targets=%v peers=%v services=%v", n.Direction, n.Targets, n.Peers, n.Services)
}

// narrowedTraffic is what going from the policy set old to new may stop
// allowing, rule by rule: a rule that went takes its whole traffic; a rule
// that lost targets, peers or services takes the traffic of what it lost
// (with the rest of the rule); a tiered deny or Pass rule that came or
// changed takes its traffic, a tiered rule that moved in the order its old
// traffic; a pod newly isolated in a direction takes all its traffic in
// that direction; a node source that went narrows everything. Peers are taken whole, without their
// excepts (a superset). ips gives a local pod's addresses by OpenFlow
// port; a pod without any (it went) has no traffic left to narrow.
func narrowedTraffic(old, cur pipeline.PolicySet, ips map[uint32][]netip.Addr) []Narrowed {
	var out []Narrowed
	add := func(dir pipeline.PolicyDirection, ports []uint32, peers []pipeline.PolicyPeer, svcs []pipeline.PolicyService) {
		n := Narrowed{Direction: dir, Services: svcs}
		for _, p := range ports {
			n.Targets = append(n.Targets, ips[p]...)
		}
		for _, p := range peers {
			if p.CIDR.Addr().Unmap().Is4() {
				n.Peers = append(n.Peers, p.CIDR.Masked())
			}
		}
		if len(n.Targets) > 0 && (len(peers) == 0 || len(n.Peers) > 0) {
			out = append(out, n)
		}
	}
	now := make(map[string]*pipeline.PolicyRule, len(cur.Rules))
	for i := range cur.Rules {
		r := &cur.Rules[i]
		now[r.Policy+"/"+r.Key] = r
	}
	for i := range old.Rules {
		o := &old.Rules[i]
		n := now[o.Policy+"/"+o.Key]
		if n == nil || n.Direction != o.Direction {
			add(o.Direction, o.Targets, o.Peers, o.Services)
			continue
		}
		if gone := minus(o.Targets, n.Targets); len(gone) > 0 {
			add(o.Direction, gone, o.Peers, o.Services)
		}
		if gone := minusPeers(o.Peers, n.Peers); len(gone) > 0 {
			add(o.Direction, o.Targets, gone, o.Services)
		}
		switch {
		case len(o.Services) == 0 && len(n.Services) > 0:
			add(o.Direction, o.Targets, o.Peers, nil) // all services, now some
		default:
			if gone := minus(o.Services, n.Services); len(gone) > 0 {
				add(o.Direction, o.Targets, o.Peers, gone)
			}
		}
	}
	// A tiered rule also narrows by coming or changing: a Drop, Reject or
	// Pass (a Pass hands the decision to Kubernetes policy, which may
	// isolate) that is new or changed takes its whole traffic; a tiered
	// rule whose priority moved takes its old traffic (a deny may now come
	// before it).
	was := make(map[string]*pipeline.PolicyRule, len(old.Rules))
	for i := range old.Rules {
		was[old.Rules[i].Policy+"/"+old.Rules[i].Key] = &old.Rules[i]
	}
	for i := range cur.Rules {
		n := &cur.Rules[i]
		if n.Tier == pipeline.TierNone {
			continue
		}
		o := was[n.Policy+"/"+n.Key]
		switch {
		case n.Action != pipeline.ActionAllow && (o == nil || !sameRule(o, n)):
			add(n.Direction, n.Targets, n.Peers, n.Services)
		case o != nil && o.Priority != n.Priority:
			add(o.Direction, o.Targets, o.Peers, o.Services)
		}
	}
	if len(minus(old.NodeSources, cur.NodeSources)) > 0 {
		// The node's own sources passed every ingress policy: any pod's
		// ingress may have narrowed.
		return []Narrowed{{}}
	}
	if gone := minus(cur.IngressIsolated, old.IngressIsolated); len(gone) > 0 {
		add(pipeline.PolicyIngress, gone, nil, nil)
	}
	if gone := minus(cur.EgressIsolated, old.EgressIsolated); len(gone) > 0 {
		add(pipeline.PolicyEgress, gone, nil, nil)
	}
	return out
}

// sameRule reports whether two resolved rules match and act alike.
func sameRule(a, b *pipeline.PolicyRule) bool {
	return a.Direction == b.Direction && a.Tier == b.Tier && a.Action == b.Action && a.Priority == b.Priority &&
		len(minus(a.Targets, b.Targets))+len(minus(b.Targets, a.Targets)) == 0 &&
		len(minusPeers(a.Peers, b.Peers))+len(minusPeers(b.Peers, a.Peers)) == 0 &&
		len(minus(a.Services, b.Services))+len(minus(b.Services, a.Services)) == 0
}

// minus returns the elements of a that are not in b.
func minus[T comparable](a, b []T) []T {
	in := make(map[T]bool, len(b))
	for _, x := range b {
		in[x] = true
	}
	var out []T
	for _, x := range a {
		if !in[x] {
			out = append(out, x)
		}
	}
	return out
}

// minusPeers returns the peers of a that are not in b (with the same
// excepts).
func minusPeers(a, b []pipeline.PolicyPeer) []pipeline.PolicyPeer {
	key := func(p pipeline.PolicyPeer) string { return fmt.Sprint(p.CIDR, p.Except) }
	in := make(map[string]bool, len(b))
	for _, p := range b {
		in[key(p)] = true
	}
	var out []pipeline.PolicyPeer
	for _, p := range a {
		if !in[key(p)] {
			out = append(out, p)
		}
	}
	return out
}
