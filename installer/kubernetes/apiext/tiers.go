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
// 1-MaxCustomPriority that no built-in holds. Keeping a tier that policies
// still use needs a look at other objects, which CEL cannot take: not done
// yet (see core/tiers/README.md).
func BuiltInTiersPolicy() (*admissionv1.ValidatingAdmissionPolicy, *admissionv1.ValidatingAdmissionPolicyBinding) {
	var entries, prios []string
	for _, t := range tiers.BuiltIn {
		entries = append(entries, fmt.Sprintf("'%s': %d", t.Name, t.Priority))
		prios = append(prios, fmt.Sprint(t.Priority))
	}
	builtIn := "{" + strings.Join(entries, ", ") + "}"
	p := &admissionv1.ValidatingAdmissionPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingAdmissionPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: builtInTiersPolicyName, Labels: map[string]string{"app": "seine"}},
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
						"a tier of your own takes 1-%d, not a built-in tier\\'s priority (%s)'", tiers.MaxCustomPriority, strings.Join(prios, ", ")),
				},
			},
		},
	}
	b := &admissionv1.ValidatingAdmissionPolicyBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingAdmissionPolicyBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: builtInTiersPolicyName, Labels: map[string]string{"app": "seine"}},
		Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        builtInTiersPolicyName,
			ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny},
		},
	}
	return p, b
}
