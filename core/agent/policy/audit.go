package policy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
)

// auditIndex answers the policy audit log's questions about one synced
// State: which user policy and rule a logged packet-in names, and which
// pod or Node an address is. It is built on the first question after a
// Sync, not on every Sync: most states are never asked.
type auditIndex struct {
	state    *State
	policies map[string]*controlplane.NetworkPolicy // by UID (name without)
	addrs    map[netip.Addr]string
}

func (c *Controller) auditLookup() *auditIndex {
	s := c.synced.Load()
	c.auditMu.Lock()
	defer c.auditMu.Unlock()
	if c.audit != nil && c.audit.state == s {
		return c.audit
	}
	x := &auditIndex{state: s, policies: map[string]*controlplane.NetworkPolicy{}, addrs: map[netip.Addr]string{}}
	if s != nil {
		for _, np := range s.NetworkPolicies {
			if np == nil {
				continue
			}
			uid := string(np.UID)
			if uid == "" {
				uid = np.Name
			}
			x.policies[uid] = np
		}
		add := func(ms []controlplane.GroupMember) {
			for _, m := range ms {
				name := m.Pod.Namespace + "/" + m.Pod.Name
				if m.Node != "" {
					name = "node/" + m.Node
				}
				for _, ip := range m.IPs {
					if a, ok := netip.AddrFromSlice(ip); ok {
						x.addrs[a.Unmap()] = name
					}
				}
			}
		}
		for _, g := range s.AppliedToGroups {
			if g != nil {
				add(g.Members)
			}
		}
		for _, g := range s.AddressGroups {
			if g != nil {
				add(g.Members)
			}
		}
	}
	c.audit = x
	return x
}

// DescribeRule names the user policy ("<kind>/<name>", or
// "<kind>/<namespace>/<name>" for a namespaced one; kind is the
// controlplane source type, e.g. SeineClusterNetworkPolicy) and the rule
// (its name, or "<direction>/<index>") of the policy with uid and the
// resolved rule key ("<index>" or "<index>/<protocol>/<port>"). Both are
// "" for a policy the last state does not hold.
func (c *Controller) DescribeRule(uid, key string) (policy, rule string) {
	np := c.auditLookup().policies[uid]
	if np == nil {
		return "", ""
	}
	n := describe(np, key)
	policy = n.Name
	if n.Kind != "" {
		policy = string(n.Kind) + "/" + n.Name
		if n.Namespace != "" {
			policy = string(n.Kind) + "/" + n.Namespace + "/" + n.Name
		}
	}
	return policy, n.Rule
}

// RuleOf names the user policy and rule of the policy with uid and the
// resolved rule key, as DescribeRule, in parts (flow export's fields);
// only Name, the UID, for a policy the last state does not hold.
func (c *Controller) RuleOf(uid, key string) RuleName {
	np := c.auditLookup().policies[uid]
	if np == nil {
		return RuleName{Name: uid}
	}
	return describe(np, key)
}

// describe names np's user policy and the rule of key (see DescribeRule).
func describe(np *controlplane.NetworkPolicy, key string) RuleName {
	n := RuleName{Name: np.Name}
	if ref := np.SourceRef; ref != nil {
		n.Kind, n.Namespace, n.Name = ref.Type, ref.Namespace, ref.Name
	}
	idx, _, _ := strings.Cut(key, "/")
	i, err := strconv.Atoi(idx)
	if err != nil || i < 0 || i >= len(np.Rules) {
		return n
	}
	r := np.Rules[i]
	if r.Name != "" {
		n.Rule = r.Name
		return n
	}
	dir := "ingress"
	if r.Direction == controlplane.DirectionOut {
		dir = "egress"
	}
	n.Rule = fmt.Sprintf("%s/%d", dir, r.Priority)
	return n
}

// Endpoint names the pod ("<namespace>/<name>") or Node ("node/<name>") of
// an address, among the members of the groups of the last state; "" when
// none has it.
func (c *Controller) Endpoint(a netip.Addr) string {
	return c.auditLookup().addrs[a.Unmap()]
}
