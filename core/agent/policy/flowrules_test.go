package policy

import (
	"context"
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/core/tiers"
)

// AllowRules names, by the ID the installed conj_id flow loads for the
// connection's ct_label, the user policy and rule of every allow rule (not
// the drop rule: it commits nothing), and follows the next Sync.
func TestAllowRulesNameConnections(t *testing.T) {
	ctx := context.Background()
	n := newFakeNode(webPod, dbPod)
	c := newController(t, n, "")
	any := controlplane.NetworkPolicyPeer{AddressGroups: []string{"peers"}}
	drop := action(controlplane.RuleActionDrop, controlplane.DirectionIn, any, 0)
	drop.Name = "no-peers"
	allow := action(controlplane.RuleActionAllow, controlplane.DirectionOut, any, 0)
	np := tiered("sec", tiers.SecurityOpsPriority, 1, []string{"web"}, drop, allow)
	np.SourceRef = &controlplane.NetworkPolicyReference{Type: controlplane.SeineNetworkPolicy, Namespace: "default", Name: "guard"}
	s := State{
		AppliedToGroups: map[string]*controlplane.AppliedToGroup{"web": atg("web", member("default", "web-0", "10.244.1.10"))},
		AddressGroups: map[string]*controlplane.AddressGroup{"peers": {ObjectMeta: metav1.ObjectMeta{Name: "peers"},
			Members: []controlplane.GroupMember{member("prod", "db-9", "10.244.2.9")}}},
		NetworkPolicies: map[string]*controlplane.NetworkPolicy{"sec": np},
	}
	if err := c.Sync(ctx, s); err != nil {
		t.Fatal(err)
	}
	byID := c.AllowRules()
	if len(byID) != 1 {
		t.Fatalf("AllowRules() = %+v, want the allow rule alone", byID)
	}
	var id uint32
	for id = range byID {
	}
	want := RuleName{Kind: controlplane.SeineNetworkPolicy, Namespace: "default", Name: "guard", Rule: "egress/0",
		Direction: pipeline.PolicyEgress, Action: pipeline.ActionAllow}
	if byID[id] != want {
		t.Errorf("rule %d = %+v, want %+v", id, byID[id], want)
	}
	// The ID is the one the installed conj_id flow loads into the egress
	// rule register (which ConntrackCommit moves into ct_label).
	flows, err := c.Flows(0)
	if err != nil {
		t.Fatal(err)
	}
	loads := 0
	for _, f := range flows {
		text := f.String()
		if strings.Contains(text, fmt.Sprintf("conj_id=%d,", id)) && strings.Contains(text, fmt.Sprintf("%#x->reg6", id)) {
			loads++
		}
	}
	if loads != 1 {
		t.Errorf("%d installed conj_id flows load rule ID %#x into reg6, want 1:\n%s", loads, id, flows)
	}
	if again := c.AllowRules(); fmt.Sprintf("%p", again) != fmt.Sprintf("%p", byID) {
		t.Errorf("AllowRules rebuilt its map with nothing changed")
	}
	// Renamed at the controller: the same rule, the new name.
	np2 := *np
	np2.SourceRef = &controlplane.NetworkPolicyReference{Type: controlplane.SeineClusterNetworkPolicy, Name: "guard2"}
	s.NetworkPolicies = map[string]*controlplane.NetworkPolicy{"sec": &np2}
	if err := c.Sync(ctx, s); err != nil {
		t.Fatal(err)
	}
	want.Kind, want.Namespace, want.Name = controlplane.SeineClusterNetworkPolicy, "", "guard2"
	if got := c.AllowRules()[id]; got != want {
		t.Errorf("after a Sync: %+v, want %+v", got, want)
	}
}
