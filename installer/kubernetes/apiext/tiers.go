package apiext

import (
	"fmt"
	"strings"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/seine-cni/seine/core/tiers"
)

// builtInTiersPolicyName names the ValidatingAdmissionPolicy (and its
// binding) that keeps the built-in tiers as they are.
const builtInTiersPolicyName = "seine-tiers"

// BuiltInTiersPolicy is enforced by the kube-apiserver itself (CEL, no
// webhook to run): a built-in tier can be neither deleted nor moved, and is
// created only with its own priority (whoever creates it first: the
// controller, or a user); a custom tier takes a priority in
// 1-MaxCustomPriority that no built-in holds. TierPolicies adds the checks
// that look at other objects.
func BuiltInTiersPolicy() (*admissionv1.ValidatingAdmissionPolicy, *admissionv1.ValidatingAdmissionPolicyBinding) {
	var entries, prios []string
	for _, t := range tiers.BuiltIn {
		entries = append(entries, fmt.Sprintf("'%s': %d", t.Name, t.Priority))
		prios = append(prios, fmt.Sprint(t.Priority))
	}
	// The upstream ClusterNetworkPolicy's Admin tier has its place too.
	prios = append(prios, fmt.Sprint(tiers.UpstreamAdminPriority))
	builtIn := "{" + strings.Join(entries, ", ") + "}"
	p := &admissionv1.ValidatingAdmissionPolicy{
		TypeMeta:   policyType,
		ObjectMeta: seineMeta(builtInTiersPolicyName),
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionv1.Fail),
			MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionv1.RuleWithOperations{
					Operations: []admissionv1.OperationType{admissionv1.Create, admissionv1.Update, admissionv1.Delete},
					Rule: admissionv1.Rule{
						APIGroups: []string{"crd.seine.io"}, APIVersions: []string{"*"}, Resources: []string{"tiers"},
					},
				},
			}}},
			Variables: []admissionv1.Variable{{Name: "builtIn", Expression: builtIn}},
			Validations: []admissionv1.Validation{
				{
					Expression:        "request.operation != 'DELETE' || !(oldObject.metadata.name in variables.builtIn)",
					MessageExpression: "'tier ' + oldObject.metadata.name + ' is built in and cannot be deleted'",
				},
				{
					Expression: "request.operation == 'DELETE' || !(object.metadata.name in variables.builtIn) || " +
						"object.spec.priority == variables.builtIn[object.metadata.name]",
					MessageExpression: "'tier ' + object.metadata.name + ' is built in: its priority is ' + " +
						"string(variables.builtIn[object.metadata.name]) + ' and cannot change'",
				},
				{
					Expression: fmt.Sprintf("request.operation == 'DELETE' || object.metadata.name in variables.builtIn || "+
						"(object.spec.priority >= 1 && object.spec.priority <= %d && !(object.spec.priority in [%s]))",
						tiers.MaxCustomPriority, strings.Join(prios, ", ")),
					MessageExpression: fmt.Sprintf("'tier priority ' + string(object.spec.priority) + ' is not available: "+
						"a tier of your own takes 1-%d, not a built-in or upstream tier\\'s priority (%s)'", tiers.MaxCustomPriority, strings.Join(prios, ", ")),
				},
			},
		},
	}
	return p, denyBinding(builtInTiersPolicyName)
}

// Names of the ValidatingAdmissionPolicies (and bindings) that look at
// other objects through params.
const (
	tierPrioritiesPolicyName = "seine-tier-priorities"
	tiersInUsePolicyName     = "seine-tiers-in-use"
)

// TierPolicies are the checks of a tier against other objects, also
// enforced by the kube-apiserver with CEL: a policy's binding selects every
// object of its paramKind as params (paramRef.selector {}), and the
// kube-apiserver evaluates the validation once per param, refusing the
// request if any fails (no param: allowed).
//
//   - seine-tier-priorities (params: every Tier): two tiers never share a
//     priority, so the order of their policies is never up to their names.
//   - seine-tiers-in-use (params: every ClusterNetworkPolicy): a tier that
//     a ClusterNetworkPolicy names cannot be deleted (its policies would
//     stop being enforced); delete or move the policies first.
//
// The params come from the kube-apiserver's informers, so a policy created
// in the same instant as its tier's deletion may slip through; the
// controller then reports the policy's unknown tier in its status.
func TierPolicies() []any {
	var out []any
	add := func(name, paramKind string, ops []admissionv1.OperationType, v admissionv1.Validation) {
		out = append(out, paramPolicy(name, "tiers", paramKind, ops, v)...)
	}
	add(tierPrioritiesPolicyName, "Tier", []admissionv1.OperationType{admissionv1.Create, admissionv1.Update}, admissionv1.Validation{
		Expression: "object.metadata.name == params.metadata.name || object.spec.priority != params.spec.priority",
		MessageExpression: "'tier priority ' + string(object.spec.priority) + ' is taken by tier ' + params.metadata.name + " +
			"': two tiers never share a priority'",
	})
	add(tiersInUsePolicyName, "ClusterNetworkPolicy", []admissionv1.OperationType{admissionv1.Delete}, admissionv1.Validation{
		Expression: fmt.Sprintf("oldObject.metadata.name != (has(params.spec.tier) ? params.spec.tier : '%s')", tiers.DefaultTier),
		MessageExpression: "'tier ' + oldObject.metadata.name + ' is in use by ClusterNetworkPolicy ' + params.metadata.name + " +
			"': delete the policy or move it to another tier first'",
	})
	return out
}

// Names of the ValidatingAdmissionPolicies (and bindings) that keep a
// ClusterGroup in use.
const (
	groupsInPoliciesPolicyName = "seine-clustergroups-in-use"
	groupsInGroupsPolicyName   = "seine-clustergroups-children"
)

// GroupPolicies keep a ClusterGroup that others name from being deleted,
// in CEL as TierPolicies keep a tier in use (params: every object of the
// kind; refused if any names it), so they hold while seine-controller is
// down:
//
//   - seine-clustergroups-in-use (params: every ClusterNetworkPolicy): a
//     group a policy names in appliedTo or in a rule's peers or appliedTo
//     (a deny rule whose only peer it is would match nothing without it);
//   - seine-clustergroups-children (params: every ClusterGroup): a group
//     another names as a child group.
//
// Namespaced NetworkPolicies take no ClusterGroups. The same race as
// TierPolicies': a policy created in the instant its group is deleted may
// slip through, and then selects nothing from that group.
func GroupPolicies() []any {
	names := func(list, field string) string {
		return fmt.Sprintf("(has(%[1]s) && %[1]s.exists(e, has(e.%[2]s) && e.%[2]s == oldObject.metadata.name))", list, field)
	}
	rules := func(dir, peers string) string {
		return fmt.Sprintf("(has(params.spec.%[1]s) && params.spec.%[1]s.exists(r, %[2]s || %[3]s))", dir, names("r.appliedTo", "group"), names("r."+peers, "group"))
	}
	del := []admissionv1.OperationType{admissionv1.Delete}
	out := paramPolicy(groupsInPoliciesPolicyName, "clustergroups", "ClusterNetworkPolicy", del, admissionv1.Validation{
		Expression: "!(" + names("params.spec.appliedTo", "group") + " || " + rules("ingress", "from") + " || " + rules("egress", "to") + ")",
		MessageExpression: "'ClusterGroup ' + oldObject.metadata.name + ' is in use by ClusterNetworkPolicy ' + params.metadata.name + " +
			"': remove it from the policy, or delete the policy, first'",
	})
	return append(out, paramPolicy(groupsInGroupsPolicyName, "clustergroups", "ClusterGroup", del, admissionv1.Validation{
		Expression: "!has(params.spec.childGroups) || !(oldObject.metadata.name in params.spec.childGroups)",
		MessageExpression: "'ClusterGroup ' + oldObject.metadata.name + ' is a child group of ClusterGroup ' + params.metadata.name + " +
			"': remove it from there first'",
	})...)
}

// paramPolicy is a ValidatingAdmissionPolicy of crd.seine.io's resource
// with its binding, which takes every paramKind object as params: the
// kube-apiserver evaluates v once per param and refuses the request if any
// evaluation fails (no param: allowed).
func paramPolicy(name, resource, paramKind string, ops []admissionv1.OperationType, v admissionv1.Validation) []any {
	return []any{&admissionv1.ValidatingAdmissionPolicy{
		TypeMeta:   policyType,
		ObjectMeta: seineMeta(name),
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionv1.Fail),
			ParamKind:     &admissionv1.ParamKind{APIVersion: "crd.seine.io/v1beta1", Kind: paramKind},
			MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionv1.RuleWithOperations{
					Operations: ops,
					Rule:       admissionv1.Rule{APIGroups: []string{"crd.seine.io"}, APIVersions: []string{"*"}, Resources: []string{resource}},
				},
			}}},
			Validations: []admissionv1.Validation{v},
		},
	}, withParams(denyBinding(name))}
}

// The kinds of seine.yml's admission policies.
var (
	policyType  = metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingAdmissionPolicy"}
	bindingType = metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingAdmissionPolicyBinding"}
)

// seineMeta names one of Seine's admission objects.
func seineMeta(name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "seine"}}
}

// denyBinding binds the policy of the same name, denying what it refuses.
func denyBinding(name string) *admissionv1.ValidatingAdmissionPolicyBinding {
	return &admissionv1.ValidatingAdmissionPolicyBinding{
		TypeMeta:   bindingType,
		ObjectMeta: seineMeta(name),
		Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        name,
			ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny},
		},
	}
}

// withParams makes b evaluate its policy once per object of the policy's
// param kind (every one: an empty selector), allowing when there is none.
func withParams(b *admissionv1.ValidatingAdmissionPolicyBinding) *admissionv1.ValidatingAdmissionPolicyBinding {
	b.Spec.ParamRef = &admissionv1.ParamRef{Selector: &metav1.LabelSelector{}, ParameterNotFoundAction: ptr.To(admissionv1.AllowAction)}
	return b
}
