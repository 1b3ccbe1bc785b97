package policy

import (
	"testing"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/core/tiers"
)

func tiered(name string, tierPrio int32, prio float64, appliedTo []string, rules ...controlplane.NetworkPolicyRule) *controlplane.NetworkPolicy {
	np := netpol(name, 1, appliedTo, nil, rules...)
	np.TierPriority, np.Priority = &tierPrio, &prio
	return np
}

func action(a controlplane.RuleAction, dir controlplane.Direction, peer controlplane.NetworkPolicyPeer, index int32) controlplane.NetworkPolicyRule {
	r := controlplane.NetworkPolicyRule{Direction: dir, Action: &a, Priority: index}
	if dir == controlplane.DirectionIn {
		r.From = peer
	} else {
		r.To = peer
	}
	return r
}

func resolveTiered(t *testing.T, p *priorities, s State) (pipeline.PolicySet, int) {
	t.Helper()
	r := resolve(s, []Pod{webPod, dbPod}, nodeSrc)
	if len(r.problems) > 0 {
		t.Fatalf("problems: %v", r.problems)
	}
	moved, err := p.assign(&r.set, r.orders)
	if err != nil {
		t.Fatal(err)
	}
	return r.set, moved
}

// Tiered policies isolate nothing; their rules carry their table and
// action and get priorities in evaluation order (tier, policy priority,
// rule index); a policy inserted between two others moves none of their
// rules; a Kubernetes rule with an action other than Allow is refused.
func TestResolveTiered(t *testing.T) {
	any := controlplane.NetworkPolicyPeer{IPBlocks: []controlplane.IPBlock{block("0.0.0.0/0")}}
	s := State{
		AppliedToGroups: map[string]*controlplane.AppliedToGroup{"web": atg("web", member("default", "web-0", "10.244.1.10"))},
		AddressGroups:   map[string]*controlplane.AddressGroup{},
		NetworkPolicies: map[string]*controlplane.NetworkPolicy{
			"sec": tiered("sec", tiers.SecurityOpsPriority, 5, []string{"web"},
				action(controlplane.RuleActionDrop, controlplane.DirectionIn, any, 0),
				action(controlplane.RuleActionPass, controlplane.DirectionIn, any, 1)),
			"app": tiered("app", tiers.ApplicationPriority, 1, []string{"web"},
				action(controlplane.RuleActionReject, controlplane.DirectionOut, any, 0)),
			"base": tiered("base", tiers.BaselinePriority, 1, []string{"web"},
				action(controlplane.RuleActionAllow, controlplane.DirectionIn, any, 0)),
		},
	}
	p := &priorities{}
	set, _ := resolveTiered(t, p, s)
	want := `isolated ingress [] egress []
uid-app/0 egress targets=[10] peers=0.0.0.0/0 services= tier=1 Reject prio=32500
uid-base/0 ingress targets=[10] peers=0.0.0.0/0 services= tier=2 Allow prio=32500
uid-sec/0 ingress targets=[10] peers=0.0.0.0/0 services= tier=1 Drop prio=43002
uid-sec/1 ingress targets=[10] peers=0.0.0.0/0 services= tier=1 Pass prio=22000
`
	if got := renderSet(set); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	// A securityops policy between sec's priority and nothing after it:
	// its rule takes a free priority, no other rule moves.
	s.NetworkPolicies["sec2"] = tiered("sec2", tiers.SecurityOpsPriority, 7, []string{"web"},
		action(controlplane.RuleActionDrop, controlplane.DirectionIn, any, 0))
	set2, moved := resolveTiered(t, p, s)
	prio := map[string]uint16{}
	for _, r := range set2.Rules {
		prio[r.Policy+"/"+r.Key] = r.Priority
	}
	if moved != 0 || prio["uid-sec/0"] != 43002 || prio["uid-sec/1"] != 22000 || prio["uid-sec2/0"] >= 22000 || prio["uid-sec2/0"] < pipeline.TierPrioMin || prio["uid-sec2/0"]%2 != 0 {
		t.Fatalf("insert: moved %d, priorities %v", moved, prio)
	}
	// The flows build: every priority is a valid tiered one.
	if _, err := pipeline.PolicyFlows(set2, 1); err != nil {
		t.Fatal(err)
	}

	// A Kubernetes policy may not carry an action other than Allow.
	bad := netpol("k8s", 1, []string{"web"}, ingressOnly, action(controlplane.RuleActionDrop, controlplane.DirectionIn, any, 0))
	r := resolve(State{AppliedToGroups: s.AppliedToGroups, NetworkPolicies: map[string]*controlplane.NetworkPolicy{"k8s": bad}}, []Pod{webPod}, nodeSrc)
	if len(r.failed) != 1 || len(r.set.Rules) != 0 {
		t.Fatalf("a Kubernetes Drop rule: failed %v, rules %v", r.failed, r.set.Rules)
	}
}
