package policy

import (
	"context"
	"net/netip"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/tiers"
)

// A rule with enableLogging is resolved with Log (its named-port splits
// too); the audit log's lookups name the user policy and rule of a logged
// packet-in's UID and key, and the pod or Node of an address, from the
// last synced state, and follow the next Sync.
func TestAuditLookups(t *testing.T) {
	ctx := context.Background()
	n := newFakeNode(webPod, dbPod)
	c := newController(t, n, "")
	any := controlplane.NetworkPolicyPeer{AddressGroups: []string{"peers"}}
	logged := action(controlplane.RuleActionDrop, controlplane.DirectionIn, any, 0)
	logged.Name, logged.EnableLogging = "no-peers", true
	logged.Services = []controlplane.Service{named(controlplane.ProtocolTCP, "http")}
	unnamed := action(controlplane.RuleActionAllow, controlplane.DirectionOut, any, 0)
	np := tiered("sec", tiers.SecurityOpsPriority, 1, []string{"web"}, logged, unnamed)
	np.SourceRef = &controlplane.NetworkPolicyReference{Type: controlplane.SeineNetworkPolicy, Namespace: "default", Name: "guard"}
	webM := member("default", "web-0", "10.244.1.10", controlplane.NamedPort{Name: "http", Port: 80, Protocol: controlplane.ProtocolTCP})
	nodeM := controlplane.GroupMember{Node: "node-2", IPs: []controlplane.IPAddress{netip.MustParseAddr("192.168.10.12").AsSlice()}}
	s := State{
		AppliedToGroups: map[string]*controlplane.AppliedToGroup{"web": atg("web", webM)},
		AddressGroups: map[string]*controlplane.AddressGroup{"peers": {ObjectMeta: metav1.ObjectMeta{Name: "peers"},
			Members: []controlplane.GroupMember{member("prod", "db-9", "10.244.2.9"), nodeM}}},
		NetworkPolicies: map[string]*controlplane.NetworkPolicy{"sec": np},
	}
	r := resolve(s, []Pod{webPod, dbPod}, nodeSrc)
	logs := map[string]bool{}
	for _, ru := range r.set.Rules {
		logs[ru.Key] = ru.Log
	}
	if len(logs) != 2 || !logs["0/6/80"] || logs["1"] {
		t.Errorf("Log by rule key: %v, want 0/6/80 (the named port's split) logged and 1 not", logs)
	}
	if err := c.Sync(ctx, s); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ uid, key, policy, rule string }{
		{"uid-sec", "0/6/80", "SeineNetworkPolicy/default/guard", "no-peers"},
		{"uid-sec", "1", "SeineNetworkPolicy/default/guard", "egress/0"},
		{"uid-sec", "7", "SeineNetworkPolicy/default/guard", ""},
		{"uid-gone", "0", "", ""},
	} {
		if p, r := c.DescribeRule(tc.uid, tc.key); p != tc.policy || r != tc.rule {
			t.Errorf("DescribeRule(%s, %s) = %q, %q; want %q, %q", tc.uid, tc.key, p, r, tc.policy, tc.rule)
		}
	}
	for ip, want := range map[string]string{"10.244.1.10": "default/web-0", "10.244.2.9": "prod/db-9", "192.168.10.12": "node/node-2", "8.8.8.8": ""} {
		if got := c.Endpoint(netip.MustParseAddr(ip)); got != want {
			t.Errorf("Endpoint(%s) = %q, want %q", ip, got, want)
		}
	}
	// The next state: the policy is renamed, db-9 gone.
	np2 := *np
	np2.SourceRef = &controlplane.NetworkPolicyReference{Type: controlplane.SeineClusterNetworkPolicy, Name: "guard2"}
	s2 := State{AppliedToGroups: s.AppliedToGroups, AddressGroups: map[string]*controlplane.AddressGroup{"peers": ag("peers")},
		NetworkPolicies: map[string]*controlplane.NetworkPolicy{"sec": &np2}}
	if err := c.Sync(ctx, s2); err != nil {
		t.Fatal(err)
	}
	if p, _ := c.DescribeRule("uid-sec", "1"); p != "SeineClusterNetworkPolicy/guard2" {
		t.Errorf("after a Sync: %q", p)
	}
	if got := c.Endpoint(netip.MustParseAddr("10.244.2.9")); got != "" {
		t.Errorf("db-9 after it left: %q", got)
	}
}
