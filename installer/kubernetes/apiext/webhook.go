package apiext

import (
	admissionv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/seine-cni/seine/core/admission"
)

// WebhookConfigurationName names the ValidatingWebhookConfiguration of
// crd.seine.io's admission webhook; WebhookName its one webhook.
const (
	WebhookConfigurationName = "seine-validation"
	WebhookName              = "validate.crd.seine.io"
)

// WebhookTimeoutSeconds bounds a call of the webhook: the checks run in
// memory, from the controller's informers, in well under a millisecond for
// an ordinary cluster (core/admission's BenchmarkOverlap: tens of
// milliseconds against 10,000 policies at one tier and priority); more
// than a few seconds means the controller is stuck, and failurePolicy Fail
// then refuses rather than hold the request for the default 10 s.
const WebhookTimeoutSeconds = 5

// AdmissionWebhook registers seine-controller's admission webhook
// (core/admission) for crd.seine.io's ClusterNetworkPolicies,
// NetworkPolicies and ClusterGroups, CREATE and UPDATE, and Tiers, DELETE,
// served at
// admission.Path by the Service namespace/service on port 443. caBundle
// may be nil: seine-controller keeps it set to the CA of its self-signed
// serving certificate (--validating-webhook-configuration).
//
// failurePolicy is Fail: when the controller cannot answer, creating or
// changing these objects is refused ("failed calling webhook"), never
// let through unchecked; a selector the controller would leave out of a
// policy's appliedTo, or a group that does not exist, cannot slip in while
// it restarts. What that costs is little: a policy stored while the
// controller is down is not enforced before it is back anyway, agents
// keep enforcing what they have, and deleting a policy or group is not
// intercepted, so a policy can always be removed; deleting a tier waits
// for the controller (a rare act). Tiers' creates and updates are the CEL
// policies', status writes (a subresource) are not matched, so neither
// the controller's own writes nor its start depend on the webhook.
func AdmissionWebhook(namespace, service string, caBundle []byte) *admissionv1.ValidatingWebhookConfiguration {
	return &admissionv1.ValidatingWebhookConfiguration{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingWebhookConfiguration"},
		ObjectMeta: metav1.ObjectMeta{Name: WebhookConfigurationName, Labels: map[string]string{"app": "seine", "component": service}},
		Webhooks: []admissionv1.ValidatingWebhook{{
			Name: WebhookName,
			ClientConfig: admissionv1.WebhookClientConfig{
				Service: &admissionv1.ServiceReference{
					Namespace: namespace, Name: service, Path: ptr.To(admission.Path), Port: ptr.To[int32](443),
				},
				CABundle: caBundle,
			},
			Rules: []admissionv1.RuleWithOperations{{
				Operations: []admissionv1.OperationType{admissionv1.Create, admissionv1.Update},
				Rule: admissionv1.Rule{
					APIGroups:   []string{"crd.seine.io"},
					APIVersions: []string{"*"},
					Resources:   []string{"clusternetworkpolicies", "networkpolicies", "clustergroups"},
					Scope:       ptr.To(admissionv1.AllScopes),
				},
			}, {
				// A tier a namespaced NetworkPolicy names is not deleted:
				// the CEL policy seine-tiers-in-use reaches
				// ClusterNetworkPolicies only.
				Operations: []admissionv1.OperationType{admissionv1.Delete},
				Rule: admissionv1.Rule{
					APIGroups:   []string{"crd.seine.io"},
					APIVersions: []string{"*"},
					Resources:   []string{"tiers"},
					Scope:       ptr.To(admissionv1.ClusterScope),
				},
			}},
			FailurePolicy:           ptr.To(admissionv1.Fail),
			MatchPolicy:             ptr.To(admissionv1.Equivalent),
			SideEffects:             ptr.To(admissionv1.SideEffectClassNone),
			TimeoutSeconds:          ptr.To[int32](WebhookTimeoutSeconds),
			AdmissionReviewVersions: []string{"v1"},
		}},
	}
}
