package controller

import (
	"slices"
	"strings"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
)

// flush publishes what changed since the last flush so that no node ever
// holds a view that opens what both the state before and the state after
// deny. Agents get the three resources on three independent watches and
// may act between any two events of each (core/agent/policywatch never
// acts on a view in which a policy refers to a group it lacks), so the
// order matters within each store:
//
//  1. Growth: AppliedToGroups, then AddressGroups, then NetworkPolicies,
//     each published with the members and span it will have plus any it
//     is about to lose (a group that gains and loses members at once is
//     first published with both; one that only loses waits for step 2), so
//     a pod moving from one policy's group to another's is in the new
//     group before it leaves the old, and a policy entering a node's span
//     arrives there before one leaving it goes. Groups come before the
//     policies that refer to them.
//  2. Shrinking: NetworkPolicies, then AppliedToGroups, then AddressGroups
//     take their final span and members.
//  3. Deletion: NetworkPolicies, then the groups no policy refers to any
//     more. A policy deleted in the same batch as another created (or a
//     group renamed by a selector change) thus goes only after its
//     replacement is in.
//
// Spans are computed first, in the order they depend on each other
// (AppliedToGroup members -> policies -> AppliedToGroups and AddressGroups:
// the union of the spans of the policies using them).
func (c *Controller) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()

	// AppliedToGroups, first their members and the nodes of their members
	// (g.span): a change of those nodes moves the spans of the policies
	// applied to the group. Their own spans come after the policies'.
	atgSpans := make(map[*group]struct{}, len(c.dirtyATG))
	for g := range c.dirtyATG {
		atgSpans[g] = struct{}{}
		if !g.dirty && g.atg != nil {
			continue // only its span may change
		}
		g.atg = &controlplane.AppliedToGroup{Members: g.buildMembers()}
		g.atg.Name = g.name
		sb := spanBuilder{nodes: c.nodes}
		for p := range g.members {
			sb.add(p.nodeID)
		}
		span := sb.span()
		if !g.stored || !span.equal(g.span) {
			for p := range g.policies {
				c.dirtyNP[p] = struct{}{}
			}
		}
		g.span = span
		g.dirty, g.stored = false, true
	}
	clear(c.dirtyATG)

	// NetworkPolicies: span = union of their AppliedToGroups' spans; a
	// changed span moves the spans of their AddressGroups.
	type npUpdate struct {
		p       *policyState
		span    *Span
		pubSpan *Span // span in the growth step: span plus the nodes it leaves
		publish bool  // in the growth step
		shrinks bool
	}
	var nps []npUpdate
	for p := range c.dirtyNP {
		var span *Span
		if len(p.atgs) == 1 {
			span = p.atgs[0].span
		} else {
			sb := spanBuilder{nodes: c.nodes}
			for _, g := range p.atgs {
				sb.union(g.span)
			}
			span = sb.span()
		}
		spanChanged := !p.stored || !span.equal(p.span)
		if spanChanged {
			for _, g := range p.ags {
				c.dirtyAG[g] = struct{}{}
			}
		}
		for _, g := range p.atgs {
			atgSpans[g] = struct{}{}
		}
		u := npUpdate{p: p, span: span, pubSpan: span}
		if old, ok := c.NetworkPolicies.Get(p.obj.Name); ok {
			u.pubSpan, u.shrinks = growthSpan(c.nodes, span, old.Span)
			u.publish = p.changed || !u.pubSpan.equal(old.Span)
		} else {
			u.publish = true
		}
		p.span = span
		p.changed, p.stored = false, true
		nps = append(nps, u)
	}
	clear(c.dirtyNP)

	// AppliedToGroups' spans: the union of the spans of the policies
	// applied to them, so every node of a policy's span has all of the
	// policy's groups, also one none of whose pods runs there (another
	// appliedTo entry's, or another rule's, pods do), and the agent never
	// waits for a group it will not get. That union holds the nodes of the
	// group's members. A group that loses members is first published with
	// the members it gains (if any) and the ones it loses, then without
	// these once the policies have moved (below).
	type atgUpdate struct {
		g        *group
		span     *Span
		grow     *controlplane.AppliedToGroup // published in the growth step, or nil
		growSpan *Span
		shrinks  bool // g.atg and span published in the shrinking step
	}
	var atgs []atgUpdate
	for g := range atgSpans {
		span := c.policiesSpan(g)
		u := atgUpdate{g: g, span: span}
		old, ok := c.AppliedToGroups.Get(g.name)
		if !ok {
			u.grow, u.growSpan = g.atg, span
			atgs = append(atgs, u)
			continue
		}
		grow := g.atg
		if old.Object != g.atg {
			if lost := lostMembers(old.Object.Members, g.atg.Members); len(lost) > 0 {
				u.shrinks = true
				grow = old.Object // it only loses members: they go when it shrinks
				if !sameKeys(old.Object.Members, lost, g.atg.Members) {
					// It also gains or changes members: first both.
					grow = &controlplane.AppliedToGroup{Members: mergeMembers(g.atg.Members, lost)}
					grow.Name = g.name
				}
			}
		}
		growSpan, spanShrinks := growthSpan(c.nodes, span, old.Span)
		u.shrinks = u.shrinks || spanShrinks
		if grow != old.Object || !growSpan.equal(old.Span) {
			u.grow, u.growSpan = grow, growSpan
		}
		atgs = append(atgs, u)
	}

	// AddressGroups: span = union of the spans of the policies using them.
	type agUpdate struct {
		g       *group
		span    *Span
		pubSpan *Span // span in the growth step: span plus the nodes it leaves
		publish bool  // in the growth step
		shrinks bool
	}
	var ags []agUpdate
	for g := range c.dirtyAG {
		span := c.policiesSpan(g)
		u := agUpdate{g: g, span: span, pubSpan: span}
		rebuilt := g.dirty || g.ag == nil
		if rebuilt {
			g.ag = &controlplane.AddressGroup{Members: g.buildMembers()}
			g.ag.Name = g.name
		}
		if old, ok := c.AddressGroups.Get(g.name); ok {
			u.pubSpan, u.shrinks = growthSpan(c.nodes, span, old.Span)
			u.publish = rebuilt || old.Object != g.ag || !u.pubSpan.equal(old.Span)
		} else {
			u.publish = true
		}
		g.span = span
		g.dirty, g.stored = false, true
		ags = append(ags, u)
	}
	clear(c.dirtyAG)

	// 1. Growth.
	for _, u := range atgs {
		if u.grow != nil {
			c.AppliedToGroups.Set(u.g.name, u.grow, u.growSpan)
		}
	}
	for _, u := range ags {
		if u.publish {
			c.AddressGroups.Set(u.g.name, u.g.ag, u.pubSpan)
		}
	}
	for _, u := range nps {
		if u.publish {
			c.NetworkPolicies.Set(u.p.obj.Name, u.p.obj, u.pubSpan)
		}
	}

	// 2. Shrinking.
	for _, u := range nps {
		if u.shrinks {
			c.NetworkPolicies.Set(u.p.obj.Name, u.p.obj, u.span)
		}
	}
	for _, u := range atgs {
		if u.shrinks {
			c.AppliedToGroups.Set(u.g.name, u.g.atg, u.span)
		}
	}
	for _, u := range ags {
		if u.shrinks {
			c.AddressGroups.Set(u.g.name, u.g.ag, u.span)
		}
	}

	// 3. Deletion of what nothing refers to any more (a group or policy
	// recreated under the same name in the meantime stays).
	for name := range c.goneNP {
		if c.npNames[name] == nil {
			c.NetworkPolicies.Delete(name)
		}
	}
	for name := range c.goneATG {
		if c.atgs[name] == nil {
			c.AppliedToGroups.Delete(name)
		}
	}
	for name := range c.goneAG {
		if c.ags[name] == nil {
			c.AddressGroups.Delete(name)
		}
	}
	clear(c.goneNP)
	clear(c.goneATG)
	clear(c.goneAG)
}

// policiesSpan is the union of the spans of the policies using g: the
// span of an AddressGroup, and of an AppliedToGroup.
func (c *Controller) policiesSpan(g *group) *Span {
	if len(g.policies) == 1 {
		for p := range g.policies {
			return p.span
		}
	}
	sb := spanBuilder{nodes: c.nodes}
	for p := range g.policies {
		sb.union(p.span)
	}
	return sb.span()
}

// covers reports whether span a holds every node of b.
func covers(a, b *Span) bool {
	if b == nil {
		return true
	}
	for i, w := range b.bits {
		var have uint64
		if a != nil && i < len(a.bits) {
			have = a.bits[i]
		}
		if w&^have != 0 {
			return false
		}
	}
	return true
}

func podKey(m *controlplane.GroupMember) string { return m.Pod.Namespace + "/" + m.Pod.Name }

// lostMembers returns the members of old whose pod is not in new (members
// are sorted by namespace and name).
func lostMembers(old, new []controlplane.GroupMember) []controlplane.GroupMember {
	var lost []controlplane.GroupMember
	j := 0
	for i := range old {
		k := podKey(&old[i])
		for j < len(new) && comparePods(&new[j], &old[i]) < 0 {
			j++
		}
		if j < len(new) && podKey(&new[j]) == k {
			continue
		}
		lost = append(lost, old[i])
	}
	return lost
}

func comparePods(a, b *controlplane.GroupMember) int {
	if c := strings.Compare(a.Pod.Namespace, b.Pod.Namespace); c != 0 {
		return c
	}
	return strings.Compare(a.Pod.Name, b.Pod.Name)
}

// sameKeys reports whether new holds exactly the members of old other than
// lost, whole (a member whose IPs or ports changed is a change to publish).
func sameKeys(old, lost, new []controlplane.GroupMember) bool {
	if len(old)-len(lost) != len(new) {
		return false
	}
	gone := make(map[string]struct{}, len(lost))
	for i := range lost {
		gone[podKey(&lost[i])] = struct{}{}
	}
	j := 0
	for i := range old {
		if _, ok := gone[podKey(&old[i])]; ok {
			continue
		}
		if controlplane.MemberKey(&old[i]) != controlplane.MemberKey(&new[j]) {
			return false
		}
		j++
	}
	return true
}

// mergeMembers returns a and b together, sorted by namespace and name.
func mergeMembers(a, b []controlplane.GroupMember) []controlplane.GroupMember {
	out := make([]controlplane.GroupMember, 0, len(a)+len(b))
	out = append(append(out, a...), b...)
	slices.SortFunc(out, func(x, y controlplane.GroupMember) int { return comparePods(&x, &y) })
	return out
}
