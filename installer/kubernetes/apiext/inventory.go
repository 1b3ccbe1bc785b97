package apiext

import (
	admissionv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// AgentInfoPolicyName names the ValidatingAdmissionPolicy that keeps an
// agent to its own node's SeineAgentInfo.
const AgentInfoPolicyName = "seine-agent-info-own-node"

// nodeNameExtra is the user extra of a ServiceAccount token bound to a pod
// (Kubernetes 1.30 and later): the name of the pod's node.
const nodeNameExtra = "authentication.kubernetes.io/node-name"

// AgentInfoPolicy refuses a change to a SeineAgentInfo by seine-agent's
// ServiceAccount with a credential bound to another node. Agents share one
// ServiceAccount, so RBAC cannot tell their nodes apart; their pod-bound
// tokens can. Other users (seine-controller, whose token is bound to its
// own pod's node, an admin) and a credential bound to no node (the
// stand-in lab's static token) are left to RBAC, as the controlplane
// API's realization reports are.
func AgentInfoPolicy() (*admissionv1.ValidatingAdmissionPolicy, *admissionv1.ValidatingAdmissionPolicyBinding) {
	// extra is absent from a request whose user has none.
	has := "has(request.userInfo.extra) && '" + nodeNameExtra + "' in request.userInfo.extra"
	bound := "request.userInfo.extra['" + nodeNameExtra + "']"
	p := &admissionv1.ValidatingAdmissionPolicy{
		TypeMeta:   policyType,
		ObjectMeta: seineMeta(AgentInfoPolicyName),
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionv1.Fail),
			MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionv1.RuleWithOperations{
					Operations: []admissionv1.OperationType{admissionv1.Create, admissionv1.Update, admissionv1.Delete},
					Rule: admissionv1.Rule{
						APIGroups: []string{"crd.seine.io"}, APIVersions: []string{"*"},
						Resources: []string{"seineagentinfos", "seineagentinfos/status"},
					},
				},
			}}},
			// Only seine-agent's ServiceAccount (in whatever namespace):
			// seine-controller's token is bound to its pod's node too,
			// and it creates every node's object.
			MatchConditions: []admissionv1.MatchCondition{{
				Name:       "seine-agent",
				Expression: "request.userInfo.username.startsWith('system:serviceaccount:') && request.userInfo.username.endsWith(':seine-agent')",
			}, {
				Name: "credential-bound-to-a-node", Expression: has,
			}},
			Validations: []admissionv1.Validation{{
				Expression: bound + " == [request.name]",
				MessageExpression: "request.userInfo.username + ' may write only the SeineAgentInfo of node ' + " +
					bound + ".join(',') + ', the node its credential is bound to, not ' + request.name",
				Reason: ptr.To(metav1.StatusReasonForbidden),
			}},
		},
	}
	return p, denyBinding(AgentInfoPolicyName)
}
