package policy

import (
	"fmt"
	"net/netip"
	"strings"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/core/tiers"
)

// tierRules marks the resolved rules rs of a tiered policy's rule with
// their tier table and action; their OpenFlow priorities are assigned once
// every policy is resolved (assignPriorities). A Kubernetes policy's rules
// stay as they are.
func tierRules(np *controlplane.NetworkPolicy, rule controlplane.NetworkPolicyRule, rs []pipeline.PolicyRule) error {
	if np.TierPriority == nil {
		if rule.Action != nil && *rule.Action != controlplane.RuleActionAllow {
			return fmt.Errorf("action %s in a Kubernetes NetworkPolicy", *rule.Action)
		}
		return nil
	}
	action := pipeline.ActionAllow
	if rule.Action != nil {
		switch *rule.Action {
		case controlplane.RuleActionAllow:
		case controlplane.RuleActionDrop:
			action = pipeline.ActionDrop
		case controlplane.RuleActionReject:
			action = pipeline.ActionReject
		case controlplane.RuleActionPass:
			action = pipeline.ActionPass
		default:
			return fmt.Errorf("unknown action %q", *rule.Action)
		}
	}
	tier := pipeline.TierMain
	if tiers.IsBaseline(*np.TierPriority) {
		tier = pipeline.TierBaseline
	}
	for i := range rs {
		rs[i].Tier, rs[i].Action, rs[i].Log = tier, action, rule.EnableLogging
	}
	return nil
}

// failClosed is what a tiered rule the agent cannot realize (a missing
// AddressGroup, a bad ipBlock, protocol or port, an unknown action) becomes
// instead of being left out, so that it never opens what it would deny:
//
//   - Allow: nothing. Left out, it can only allow less (what it accepted is
//     judged by the rules after it, whose worst is an allow).
//   - Drop and Reject: the rule with its bad part widened, same action —
//     its peers become every address when a group is missing or an
//     ipBlock is bad, its ports every protocol and port when one is bad.
//     A wider deny denies more, never less.
//   - Pass, or an action this agent does not know: a Drop of that widened
//     match. A Pass left out lets the tiers after it decide (an Allow there
//     opens what Kubernetes policy would isolate); a widened Pass hands
//     more to Kubernetes policy (which allows what a later tier would
//     deny). Only a drop is safe.
//
// groupMissing says that one of the rule's AddressGroups is missing. It
// returns the rules and how the rule was installed ("" when nothing is).
func failClosed(uid string, index int, dir pipeline.PolicyDirection, rule controlplane.NetworkPolicyRule,
	targets []target, members []controlplane.GroupMember, blocks []controlplane.IPBlock, groupMissing bool, np *controlplane.NetworkPolicy) ([]pipeline.PolicyRule, string) {
	act := controlplane.RuleActionAllow
	if rule.Action != nil {
		act = *rule.Action
	}
	var action pipeline.PolicyAction
	switch act {
	case controlplane.RuleActionAllow:
		return nil, ""
	case controlplane.RuleActionReject:
		action = pipeline.ActionReject
	default: // Drop, Pass, unknown
		action = pipeline.ActionDrop
	}
	var widened []string
	// Every peer: when a group is missing or the peers do not resolve on
	// their own.
	anyPeer := false
	if _, err := resolveRule(uid, index, dir, controlplane.NetworkPolicyRule{}, targets, members, blocks); err != nil || groupMissing {
		anyPeer, members, blocks = true, nil, nil
		widened = append(widened, "every peer")
	}
	if _, err := resolveRule(uid, index, dir, controlplane.NetworkPolicyRule{Services: rule.Services}, targets, nil, nil); err != nil {
		rule.Services = nil
		widened = append(widened, "every port")
	}
	rs, err := resolveRule(uid, index, dir, rule, targets, members, blocks)
	if err != nil {
		// Cannot happen: both parts resolved on their own; widen both.
		rule.Services, anyPeer = nil, true
		if rs, err = resolveRule(uid, index, dir, rule, targets, nil, nil); err != nil {
			return nil, ""
		}
	}
	tier := pipeline.TierMain
	if tiers.IsBaseline(*np.TierPriority) {
		tier = pipeline.TierBaseline
	}
	for i := range rs {
		rs[i].Tier, rs[i].Action, rs[i].Log = tier, action, rule.EnableLogging
		if anyPeer {
			rs[i].Peers = []pipeline.PolicyPeer{{CIDR: netip.MustParsePrefix("0.0.0.0/0")}, {CIDR: netip.MustParsePrefix("::/0")}}
		}
	}
	how := "installed as " + action.String()
	if len(widened) > 0 {
		how += " of " + strings.Join(widened, " and ")
	}
	return rs, how + ": fails closed"
}

// tierOrder is where a tiered policy's rule stands in the evaluation order.
func tierOrder(np *controlplane.NetworkPolicy, rule controlplane.NetworkPolicyRule) tiers.Order {
	o := tiers.Order{Tier: *np.TierPriority, Policy: np.Name, Rule: rule.Priority}
	if np.Priority != nil {
		o.Priority = *np.Priority
	}
	return o
}

// tierTable names the four tables tiered rules are placed in.
type tierTable struct {
	dir  pipeline.PolicyDirection
	tier pipeline.PolicyTier
}

// priorities keeps one Allocator per tier table, so a policy inserted
// between two others takes a free priority between theirs and the rest
// keep theirs (core/tiers/README.md). Tiered rules take even priorities
// (Traceflow's tagged copy of a flow takes the one above it).
type priorities struct {
	alloc map[tierTable]*tiers.Allocator
}

// assign gives every tiered rule of set its priority. orders holds the
// order of each tiered rule by "<policy>/<key>". A table with more rules
// than priorities loses its tiered rules, reported in the error.
func (p *priorities) assign(set *pipeline.PolicySet, orders map[string]tiers.Order) (moved int, err error) {
	byTable := map[tierTable][]tiers.Rule{}
	for _, r := range set.Rules {
		if r.Tier == pipeline.TierNone {
			continue
		}
		t := tierTable{r.Direction, r.Tier}
		key := r.Policy + "/" + r.Key
		byTable[t] = append(byTable[t], tiers.Rule{Key: key, Order: orders[key]})
	}
	assigned := map[tierTable]map[string]uint16{}
	for _, t := range []tierTable{
		{pipeline.PolicyEgress, pipeline.TierMain}, {pipeline.PolicyEgress, pipeline.TierBaseline},
		{pipeline.PolicyIngress, pipeline.TierMain}, {pipeline.PolicyIngress, pipeline.TierBaseline},
	} {
		got, m, aerr := p.allocator(t).Assign(byTable[t])
		if aerr != nil {
			err = fmt.Errorf("%s tier rules: %w", t.dir, aerr)
			continue
		}
		moved += m
		assigned[t] = got
	}
	kept := set.Rules[:0]
	for _, r := range set.Rules {
		if r.Tier != pipeline.TierNone {
			got, ok := assigned[tierTable{r.Direction, r.Tier}]
			if !ok {
				continue
			}
			r.Priority = 2 * got[r.Policy+"/"+r.Key]
		}
		kept = append(kept, r)
	}
	set.Rules = kept
	return moved, err
}

// allocator is the Allocator of table t.
func (p *priorities) allocator(t tierTable) *tiers.Allocator {
	if p.alloc == nil {
		p.alloc = map[tierTable]*tiers.Allocator{}
	}
	a := p.alloc[t]
	if a == nil {
		a = tiers.NewAllocator(pipeline.TierPrioMin/2, pipeline.TierPrioMax/2)
		p.alloc[t] = a
	}
	return a
}
