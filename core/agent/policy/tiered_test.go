package policy

import (
	"strings"
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

// A tiered rule the agent cannot realize must not open what it would deny
// (core/tiers/README.md, "Rules the agent cannot realize"): a Drop or
// Reject rule is installed with its bad part widened (a missing
// AddressGroup or a bad ipBlock: every peer; a bad protocol or port: every
// port), keeping its action; a Pass rule, or an action this agent does not
// know, becomes a Drop of the same widened match (a Pass left out lets a
// lower tier's Allow decide, a widened Pass hands more to Kubernetes
// policy: either may open); an Allow rule is left out (it can only allow
// less). A peer group that exists but is empty is not a bad part. The
// policy is still reported failed, naming the rule.
func TestTieredRuleFailsClosed(t *testing.T) {
	web := controlplane.NetworkPolicyPeer{IPBlocks: []controlplane.IPBlock{block("10.244.2.0/24")}}
	ghost := controlplane.NetworkPolicyPeer{AddressGroups: []string{"ghost"}}
	badBlock := controlplane.NetworkPolicyPeer{IPBlocks: []controlplane.IPBlock{{CIDR: controlplane.IPNet{IP: []byte{10, 0, 0, 0}, PrefixLength: 40}}}}
	withPorts := func(r controlplane.NetworkPolicyRule, svcs ...controlplane.Service) controlplane.NetworkPolicyRule {
		r.Services = svcs
		return r
	}
	badPort := tcp(70000)
	badProto := controlplane.Service{Protocol: "ICMP"}
	s := State{
		AppliedToGroups: map[string]*controlplane.AppliedToGroup{"web": atg("web", member("default", "web-0", "10.244.1.10"))},
		AddressGroups:   map[string]*controlplane.AddressGroup{},
		NetworkPolicies: map[string]*controlplane.NetworkPolicy{
			"sec": tiered("sec", tiers.SecurityOpsPriority, 5, []string{"web"},
				withPorts(action(controlplane.RuleActionDrop, controlplane.DirectionIn, ghost, 0), tcp(80)),
				withPorts(action(controlplane.RuleActionReject, controlplane.DirectionIn, web, 1), badPort),
				withPorts(action(controlplane.RuleActionPass, controlplane.DirectionIn, badBlock, 2), tcp(443)),
				withPorts(action(controlplane.RuleActionAllow, controlplane.DirectionIn, web, 3), badPort),
				withPorts(action("Log", controlplane.DirectionOut, web, 4), tcp(53)),
				withPorts(action(controlplane.RuleActionDrop, controlplane.DirectionOut, ghost, 5), badProto),
				withPorts(action(controlplane.RuleActionDrop, controlplane.DirectionOut, controlplane.NetworkPolicyPeer{AddressGroups: []string{"empty"}}, 6), badPort),
			),
		},
	}
	s.AddressGroups["empty"] = ag("empty")
	r := resolve(s, []Pod{webPod, dbPod}, nodeSrc)
	if _, err := (&priorities{}).assign(&r.set, r.orders); err != nil {
		t.Fatal(err)
	}
	// The flows build.
	if _, err := pipeline.PolicyFlows(r.set, 1); err != nil {
		t.Fatal(err)
	}
	for i := range r.set.Rules {
		r.set.Rules[i].Priority = 0 // the order is TestResolveTiered's business
	}
	want := `isolated ingress [] egress []
uid-sec/0 ingress targets=[10] peers=0.0.0.0/0,::/0 services=6:80 tier=1 Drop prio=0
uid-sec/1 ingress targets=[10] peers=10.244.2.0/24 services= tier=1 Reject prio=0
uid-sec/2 ingress targets=[10] peers=0.0.0.0/0,::/0 services=6:443 tier=1 Drop prio=0
uid-sec/4 egress targets=[10] peers=10.244.2.0/24 services=6:53 tier=1 Drop prio=0
uid-sec/5 egress targets=[10] peers=0.0.0.0/0,::/0 services= tier=1 Drop prio=0
uid-sec/6 egress targets=[10] peers= services= tier=1 Drop prio=0
`
	if got := renderSet(r.set); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	f, ok := r.failed["sec"]
	if !ok {
		t.Fatalf("policy sec not reported failed: %v", r.failed)
	}
	for _, part := range []string{
		"rule 1: port 70000 out of range (installed as Reject of every port: fails closed)",
		"rule 2: ipBlock prefix 10.0.0.0/40 (installed as Drop of every peer: fails closed)",
		"rule 3: port 70000 out of range;",
		`rule 4: unknown action "Log" (installed as Drop: fails closed)`,
		"rule 6: port 70000 out of range (installed as Drop of every port: fails closed)",
	} {
		if !strings.Contains(f.Error, part) {
			t.Errorf("failure %q lacks %q", f.Error, part)
		}
	}
	// A missing group is transient (not a failure), but reported too.
	problems := strings.Join(r.problems, "\n")
	for _, part := range []string{
		"rule 0: addressGroup ghost is missing (installed as Drop of every peer: fails closed)",
		"rule 5: addressGroup ghost is missing (installed as Drop of every peer and every port: fails closed)",
	} {
		if !strings.Contains(problems, part) {
			t.Errorf("problems %q lack %q", problems, part)
		}
	}
	if _, realized := r.gens["sec"]; realized {
		t.Error("a policy with a rule it could not realize counted as realized")
	}
}
