package policy

import (
	"slices"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/pipeline"
)

// RuleName is what flow export says of a rule: the user policy it comes
// from and the rule's name (see DescribeRule), its direction and action.
type RuleName struct {
	// Kind is the controlplane source type ("" for a policy without a
	// source reference: Name is then the internal policy's name).
	Kind            controlplane.NetworkPolicyType
	Namespace, Name string
	Rule            string
	Direction       pipeline.PolicyDirection
	Action          pipeline.PolicyAction
}

// flowRules caches AllowRules for one installed set and synced state.
type flowRules struct {
	gen   uint64
	state *State
	byID  map[uint32]RuleName
}

// AllowRules names the installed allow rules by the ID their connections
// carry in ct_label (pipeline.PolicyRuleIDs), for flow export. The map is
// shared and must not be modified; it is rebuilt only after the installed
// set or the synced state changed, so a poll over many connections costs
// map reads.
func (c *Controller) AllowRules() map[uint32]RuleName {
	c.flowRulesMu.Lock()
	defer c.flowRulesMu.Unlock()
	x := c.auditLookup()
	c.flowMu.Lock()
	gen := c.installedGen
	if fr := c.flowRules; fr != nil && fr.gen == gen && fr.state == x.state {
		c.flowMu.Unlock()
		return fr.byID
	}
	rules := slices.Clone(c.installed.Rules)
	c.flowMu.Unlock()
	ids, err := pipeline.PolicyRuleIDs(pipeline.PolicySet{Rules: rules})
	if err != nil { // the installed set was built, so this cannot be
		c.log.Error("flow export: installed rules have no IDs", "err", err)
	}
	byID := make(map[uint32]RuleName, len(ids))
	for id, ref := range ids {
		n := RuleName{Name: ref.Policy}
		if np := x.policies[ref.Policy]; np != nil {
			n = describe(np, ref.Key)
		}
		n.Direction, n.Action = ref.Direction, ref.Action
		byID[id] = n
	}
	c.flowRules = &flowRules{gen: gen, state: x.state, byID: byID}
	return byID
}
