package controller

import (
	"context"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A policy as an older apiserver may have stored it: a CIDR with a leading
// zero (refused for new objects since Kubernetes 1.37, kept in etcd) and a
// selector this code cannot parse. The controller must keep the policy's
// pods isolated and deny what it cannot translate, never drop the policy
// (which opened its pods), and say what it denied. Issue 12, item 9.
func TestUntranslatablePartsAreDenied(t *testing.T) {
	leadingZero := ingress80("legacy", sel("pod", "a"),
		networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "010.0.0.0/8"}},
		fromPods(sel("pod", "b")),
		networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "192.168.0.0/16", Except: []string{"192.168.01.0/24"}}})
	badSelector := ingress80("bad-selector", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "pod", Operator: "Near", Values: []string{"a"}},
	}}, fromPods(sel("pod", "b")))
	onlyBadPeer := ingress80("only-bad-peer", sel("pod", "c"),
		networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/33"}})
	e := start(t, ns("x", nil),
		pod("x", "a", "n1", "10.0.1.1", map[string]string{"pod": "a"}),
		pod("x", "b", "n2", "10.0.2.1", map[string]string{"pod": "b"}),
		pod("x", "c", "n3", "10.0.3.1", map[string]string{"pod": "c"}),
		leadingZero, badSelector, onlyBadPeer)
	e.waitFor(`
ag {namespace=x podSelector=pod=b} members=[x/b@n2,10.0.2.1] span=[n1 n2 n3]
atg {namespace=x podSelector=pod=a} members=[x/a@n1,10.0.1.1] span=[n1]
atg {namespace=x podSelector=pod=c} members=[x/c@n3,10.0.3.1] span=[n3]
atg {namespace=x podSelector=} members=[x/a@n1,10.0.1.1 x/b@n2,10.0.2.1 x/c@n3,10.0.3.1] span=[n1 n2 n3]
np x/bad-selector types=[Ingress] atg=[{namespace=x podSelector=}] span=[n1 n2 n3]
  In peers=[{namespace=x podSelector=pod=b}] services=[TCP/80 UDP/80] priority=-1
np x/legacy types=[Ingress] atg=[{namespace=x podSelector=pod=a}] span=[n1]
  In peers=[{namespace=x podSelector=pod=b}] services=[TCP/80 UDP/80] priority=-1
np x/only-bad-peer types=[Ingress] atg=[{namespace=x podSelector=pod=c}] span=[n3]
  In peers=[] services=[TCP/80 UDP/80] priority=-1`)

	errs := map[string]string{}
	for _, it := range e.c.NetworkPolicies.List("") {
		errs[it.Object.SourceRef.Name] = it.Object.TranslationError
	}
	for name, want := range map[string][]string{
		"legacy":        {`ingress rule 0: peer 0: ipBlock: parse cidr "010.0.0.0/8"`, `ingress rule 0: peer 2: ipBlock except: parse cidr "192.168.01.0/24"`},
		"bad-selector":  {`podSelector: `, `"Near"`, "applied to every pod of namespace x instead"},
		"only-bad-peer": {`ingress rule 0: peer 0: ipBlock: parse cidr "10.0.0.0/33"`},
	} {
		for _, w := range want {
			if !strings.Contains(errs[name], w) {
				t.Errorf("policy %s: translation error %q lacks %q", name, errs[name], w)
			}
		}
	}

	// Fixed by its owner: the policy is translated whole, the error gone.
	fixed := ingress80("legacy", sel("pod", "a"), fromPods(sel("pod", "b")),
		networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8"}})
	if _, err := e.client.NetworkingV1().NetworkPolicies("x").Update(context.Background(), fixed, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.settle()
	for _, it := range e.c.NetworkPolicies.List("") {
		if it.Object.SourceRef.Name == "legacy" && (it.Object.TranslationError != "" || len(it.Object.Rules[0].From.IPBlocks) != 1) {
			t.Errorf("fixed policy: translation error %q, ipBlocks %v", it.Object.TranslationError, it.Object.Rules[0].From.IPBlocks)
		}
	}
}
