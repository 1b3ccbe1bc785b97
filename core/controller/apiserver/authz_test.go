package apiserver

import (
	"context"
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
)

// seen records what the delegate was asked.
type seen struct{ got []authorizer.Attributes }

func (s *seen) Authorize(_ context.Context, a authorizer.Attributes) (authorizer.Decision, string, error) {
	s.got = append(s.got, a)
	return authorizer.DecisionAllow, "", nil
}

func (s *seen) ConditionsAwareAuthorize(ctx context.Context, a authorizer.Attributes) authorizer.ConditionsAwareDecision {
	return authorizer.ConditionsAwareDecisionFromParts(s.Authorize(ctx, a))
}

func (s *seen) EvaluateConditions(context.Context, authorizer.ConditionsAwareDecision, authorizer.ConditionsData) (authorizer.Decision, string, error) {
	return authorizer.DecisionDeny, "", authorizer.ErrorConditionEvaluationNotSupported
}

func describe(a authorizer.Attributes) string {
	f, _ := a.GetFieldSelector()
	l, _ := a.GetLabelSelector()
	return fmt.Sprintf("%s %s %s/%s/%s name=%q path=%s resource=%v fields=%v labels=%v",
		a.GetUser().GetName(), a.GetVerb(), a.GetAPIGroup(), a.GetAPIVersion(), a.GetResource(), a.GetName(),
		a.GetPath(), a.IsResourceRequest(), f, l)
}

// Two agents' watches differ only by their node selector: the delegate
// must see one request for both (so its cache answers the second), with
// everything else kept. Other groups keep their selectors.
func TestAuthorizeWithoutSelectors(t *testing.T) {
	agent := &user.DefaultInfo{Name: "system:serviceaccount:kube-system:seine-agent"}
	req, _ := labels.NewRequirement("app", selection.Equals, []string{"web"})
	watch := func(group, node string) authorizer.AttributesRecord {
		return authorizer.AttributesRecord{
			User: agent, Verb: "watch", APIGroup: group, APIVersion: "v1beta1", Resource: "networkpolicies",
			ResourceRequest: true, Path: "/apis/" + group + "/v1beta1/networkpolicies",
			FieldSelectorRequirements: fields.Requirements{{Field: "nodeName", Operator: selection.Equals, Value: node}},
			LabelSelectorRequirements: labels.Requirements{*req},
		}
	}
	d := &seen{}
	a := withoutSelectors{d}
	for _, attrs := range []authorizer.Attributes{
		watch("controlplane.seine.io", "node-1"),
		watch("controlplane.seine.io", "node-2"),
		watch("networking.k8s.io", "node-1"),
	} {
		if dec, _, err := a.Authorize(context.Background(), attrs); dec != authorizer.DecisionAllow || err != nil {
			t.Fatalf("decision %v, %v", dec, err)
		}
	}
	if dec := a.ConditionsAwareAuthorize(context.Background(), watch("controlplane.seine.io", "node-3")); !dec.IsAllow() {
		t.Fatalf("conditions-aware decision %+v", dec)
	}
	first, second, other := describe(d.got[0]), describe(d.got[1]), describe(d.got[2])
	if third := describe(d.got[3]); third != first {
		t.Errorf("through ConditionsAwareAuthorize the delegate saw\n%s\nwant\n%s", third, first)
	}
	want := "system:serviceaccount:kube-system:seine-agent watch controlplane.seine.io/v1beta1/networkpolicies " +
		`name="" path=/apis/controlplane.seine.io/v1beta1/networkpolicies resource=true fields=[] labels=`
	if first != want || second != want {
		t.Errorf("controlplane requests reached the delegate as\n%s\n%s\nwant both\n%s", first, second, want)
	}
	if other != describe(watch("networking.k8s.io", "node-1")) {
		t.Errorf("another group's request changed: %s", other)
	}
}
