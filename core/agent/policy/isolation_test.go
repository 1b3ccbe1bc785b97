package policy

import (
	"context"
	"slices"
	"testing"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/core/tiers"
)

// TestIsolatedBy: a Traceflow dropped by isolation names the Kubernetes
// policies that isolate the pod in that direction, and only those.
func TestIsolatedBy(t *testing.T) {
	c := newController(t, newFakeNode(webPod, dbPod), "")
	if got := c.IsolatedBy(true, dbPod.OFPort); got != nil {
		t.Errorf("before any state: %v", got)
	}
	s := dbPolicyState(member("default", "web-0", "10.244.1.10"))
	s.NetworkPolicies["db"].SourceRef = &controlplane.NetworkPolicyReference{Namespace: "prod", Name: "db-allow-web"}
	s.AppliedToGroups["all"] = atg("all", member("default", "db-0", "10.244.1.11"), member("default", "web-0", "10.244.1.10"))
	s.NetworkPolicies["egress"] = netpol("egress", 1, []string{"all"}, []controlplane.PolicyType{controlplane.PolicyTypeEgress})
	if err := c.Sync(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ingress bool
		port    uint32
		want    []string
	}{
		{true, dbPod.OFPort, []string{"prod/db-allow-web"}},
		{true, webPod.OFPort, nil},
		{false, dbPod.OFPort, []string{"egress"}}, // no sourceRef: the internal name
		{false, webPod.OFPort, []string{"egress"}},
	} {
		if got := c.IsolatedBy(tc.ingress, tc.port); !slices.Equal(got, tc.want) {
			t.Errorf("ingress=%v port %d: %v, want %v", tc.ingress, tc.port, got, tc.want)
		}
	}
}

// TestTieredRule: a Traceflow dropped or rejected in a tier table names,
// by the copied conj_id flow's table and priority, the tiered policy as
// kubectl takes it and the rule by its name (else its direction and
// index); priorities no installed rule has, or other tables, name nothing.
func TestTieredRule(t *testing.T) {
	c := newController(t, newFakeNode(webPod, dbPod), "")
	anyPeer := controlplane.NetworkPolicyPeer{IPBlocks: []controlplane.IPBlock{block("0.0.0.0/0")}}
	s := State{
		AppliedToGroups: map[string]*controlplane.AppliedToGroup{"web": atg("web", member("default", "web-0", "10.244.1.10"))},
		AddressGroups:   map[string]*controlplane.AddressGroup{},
		NetworkPolicies: map[string]*controlplane.NetworkPolicy{
			"sec": tiered("sec", tiers.SecurityOpsPriority, 5, []string{"web"},
				action(controlplane.RuleActionDrop, controlplane.DirectionIn, anyPeer, 0),
				action(controlplane.RuleActionPass, controlplane.DirectionIn, anyPeer, 1)),
			"app": tiered("app", tiers.ApplicationPriority, 1, []string{"web"},
				action(controlplane.RuleActionReject, controlplane.DirectionOut, anyPeer, 0)),
			"admin": tiered("admin", 240, 3, []string{"web"},
				action(controlplane.RuleActionAllow, controlplane.DirectionOut, anyPeer, 0),
				action(controlplane.RuleActionDrop, controlplane.DirectionOut, anyPeer, 1)),
			"base": tiered("base", tiers.BaselinePriority, 1, []string{"web"},
				action(controlplane.RuleActionDrop, controlplane.DirectionIn, anyPeer, 0)),
		},
	}
	s.NetworkPolicies["sec"].SourceRef = &controlplane.NetworkPolicyReference{Type: controlplane.SeineClusterNetworkPolicy, Name: "sec-deny"}
	s.NetworkPolicies["sec"].Rules[0].Name = "deny-all-in"
	s.NetworkPolicies["app"].SourceRef = &controlplane.NetworkPolicyReference{Type: controlplane.SeineClusterNetworkPolicy, Name: "app"}
	s.NetworkPolicies["admin"].SourceRef = &controlplane.NetworkPolicyReference{Type: controlplane.UpstreamClusterNetworkPolicy, Name: "admin-egress"}
	s.NetworkPolicies["admin"].Rules[1].Name = "no-egress"
	if err := c.Sync(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	prio := map[string]uint16{}
	for _, r := range c.installed.Rules {
		prio[r.Policy+"/"+r.Key] = r.Priority
	}
	for _, tc := range []struct {
		table        pipeline.Table
		prio         uint16
		policy, rule string
	}{
		{pipeline.IngressTier, prio["uid-sec/0"], "clusternetworkpolicies.crd.seine.io/sec-deny", "deny-all-in"},
		{pipeline.IngressTier, prio["uid-sec/1"], "clusternetworkpolicies.crd.seine.io/sec-deny", "ingress rule 1"},
		{pipeline.EgressTier, prio["uid-app/0"], "clusternetworkpolicies.crd.seine.io/app", "egress rule 0"},
		{pipeline.EgressTier, prio["uid-admin/1"], "clusternetworkpolicies.policy.networking.k8s.io/admin-egress", "no-egress"},
		{pipeline.IngressBaseline, prio["uid-base/0"], "base", "ingress rule 0"}, // no sourceRef: the internal name
		{pipeline.EgressTier, prio["uid-sec/0"] + 2, "", ""},                     // no rule there
		{pipeline.IngressTier, prio["uid-app/0"], "", ""},                        // the egress rule's priority, in the ingress table
		{pipeline.IngressPolicy, prio["uid-sec/0"], "", ""},                      // not a tier table
	} {
		policy, rule, ok := c.TieredRule(uint8(tc.table), tc.prio)
		if policy != tc.policy || rule != tc.rule || ok != (tc.policy != "") {
			t.Errorf("%s priority %d: %q %q %v, want %q %q", tc.table, tc.prio, policy, rule, ok, tc.policy, tc.rule)
		}
	}
}
