package admission

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	crdv1 "github.com/seine-cni/seine/core/apis/crd/v1beta1"
)

// Path is where seine-controller serves the webhook.
const Path = "/validate/crd.seine.io"

// maxRequest bounds an AdmissionReview: an object and its old version, each
// at most the kube-apiserver's 1.5 MiB request limit, and the envelope.
const maxRequest = 4 << 20

// Handler serves ValidatingWebhook calls (admission.k8s.io/v1
// AdmissionReview) for crd.seine.io's ClusterNetworkPolicies,
// NetworkPolicies and ClusterGroups: CREATE and UPDATE are validated
// (ValidatePolicy, ValidateClusterGroup), and DELETE of a Tier
// (ValidateTierDelete); an UPDATE that leaves the spec as
// it was (labels, finalizers, an object being deleted) is allowed as is, so
// an object stored before a check existed can still be changed and
// deleted. Any other kind or operation is allowed. While l is not synced
// every request is refused, saying so: the kube-apiserver's client retries,
// a person tries again.
func Handler(l Lookup, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST an admission.k8s.io/v1 AdmissionReview", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxRequest+1))
		if err != nil || len(body) > maxRequest {
			http.Error(w, fmt.Sprintf("read the AdmissionReview: %v (at most %d bytes)", err, maxRequest), http.StatusBadRequest)
			return
		}
		var review admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
			http.Error(w, fmt.Sprintf("not an AdmissionReview with a request: %v", err), http.StatusBadRequest)
			return
		}
		resp := Review(review.Request, l)
		if !resp.Allowed {
			log.Info("refused", "kind", review.Request.Kind.Kind, "namespace", review.Request.Namespace, "name", review.Request.Name,
				"operation", review.Request.Operation, "user", review.Request.UserInfo.Username, "reason", resp.Result.Message)
		}
		out := admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp}
		if out.APIVersion == "" {
			out.APIVersion, out.Kind = admissionv1.SchemeGroupVersion.String(), "AdmissionReview"
		}
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(out); err != nil {
			log.Warn("write the admission response", "err", err)
		}
	})
}

// Review answers one admission request. A create or update refused is
// judged again with l.Confirming() (the tiers, ClusterGroups and
// overlapping policies it names as the cluster holds them now), and
// refused only if that refuses too.
func Review(req *admissionv1.AdmissionRequest, l Lookup) *admissionv1.AdmissionResponse {
	allow := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	tierDelete := req.Kind.Kind == KindTier && req.Operation == admissionv1.Delete
	if req.Kind.Group != crdv1.GroupName || (req.Operation != admissionv1.Create && req.Operation != admissionv1.Update && !tierDelete) {
		return allow
	}
	deny := func(code int32, reason metav1.StatusReason, msg string, causes []metav1.StatusCause) *admissionv1.AdmissionResponse {
		return &admissionv1.AdmissionResponse{UID: req.UID, Result: &metav1.Status{
			Status: metav1.StatusFailure, Code: code, Reason: reason, Message: msg,
			Details: &metav1.StatusDetails{Name: req.Name, Group: req.Kind.Group, Kind: req.Kind.Kind, Causes: causes},
		}}
	}
	var errs field.ErrorList
	switch req.Kind.Kind {
	case KindTier:
		if !tierDelete {
			return allow // the CEL policies' business
		}
		if err := l.Ready(); err != nil {
			return deny(503, metav1.StatusReasonServiceUnavailable, err.Error(), nil)
		}
		// Tier deletes are rare and list the namespaced policies from the
		// cluster anyway (NamespacedIn): judged once, with the cluster.
		errs = ValidateTierDelete(req.Name, l.Confirming())
		if len(errs) > 0 {
			return deny(403, metav1.StatusReasonForbidden, errs[0].Error(), nil)
		}
		return allow
	case KindClusterNetworkPolicy, KindNetworkPolicy:
		obj, resp := decodeChanged[crdv1.NetworkPolicy](req, l, allow, deny)
		if resp != nil {
			return resp
		}
		p := Policy{Kind: req.Kind.Kind, Namespace: req.Namespace, Name: req.Name, Spec: &obj.Spec}
		errs = confirmed(l, func(l Lookup) field.ErrorList { return ValidatePolicy(p, l) })
	case KindClusterGroup:
		obj, resp := decodeChanged[crdv1.ClusterGroup](req, l, allow, deny)
		if resp != nil {
			return resp
		}
		obj.Name = req.Name
		errs = confirmed(l, func(l Lookup) field.ErrorList { return ValidateClusterGroup(obj, l) })
	default:
		return allow
	}
	if len(errs) == 0 {
		return allow
	}
	msgs := make([]string, len(errs))
	causes := make([]metav1.StatusCause, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
		causes[i] = metav1.StatusCause{Type: metav1.CauseType(e.Type), Message: e.ErrorBody(), Field: e.Field}
	}
	return deny(422, metav1.StatusReasonInvalid, strings.Join(msgs, "; "), causes)
}

// confirmed is validate's errors with l, the informers' view, judged
// again with l.Confirming() when there are any: only a refusal pays for
// reads of the cluster.
func confirmed(l Lookup, validate func(Lookup) field.ErrorList) field.ErrorList {
	if errs := validate(l); len(errs) == 0 {
		return nil
	}
	return validate(l.Confirming())
}

// object is a kind whose spec decides what is validated.
type object interface {
	crdv1.NetworkPolicy | crdv1.ClusterGroup
}

// decodeChanged decodes the request's object (a ClusterNetworkPolicy
// decodes as a NetworkPolicy: the same spec). It returns a response
// instead when there is nothing to validate (an UPDATE that leaves the
// spec as it was), nothing can be (a body that does not decode, lookups
// not synced yet).
func decodeChanged[T object](req *admissionv1.AdmissionRequest, l Lookup, allow *admissionv1.AdmissionResponse,
	deny func(int32, metav1.StatusReason, string, []metav1.StatusCause) *admissionv1.AdmissionResponse) (*T, *admissionv1.AdmissionResponse) {
	var obj, old T
	if err := json.Unmarshal(req.Object.Raw, &obj); err != nil {
		return nil, deny(400, metav1.StatusReasonBadRequest, fmt.Sprintf("decode %s %s: %v", req.Kind.Kind, req.Name, err), nil)
	}
	if req.Operation == admissionv1.Update {
		if err := json.Unmarshal(req.OldObject.Raw, &old); err != nil {
			return nil, deny(400, metav1.StatusReasonBadRequest, fmt.Sprintf("decode the stored %s %s: %v", req.Kind.Kind, req.Name, err), nil)
		}
		if reflect.DeepEqual(spec(&obj), spec(&old)) {
			return nil, allow
		}
	}
	if err := l.Ready(); err != nil {
		return nil, deny(503, metav1.StatusReasonServiceUnavailable, err.Error(), nil)
	}
	return &obj, nil
}

func spec(o any) any {
	switch o := o.(type) {
	case *crdv1.NetworkPolicy:
		return o.Spec
	case *crdv1.ClusterGroup:
		return o.Spec
	}
	return nil
}
