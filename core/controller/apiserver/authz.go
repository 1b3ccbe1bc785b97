package apiserver

import (
	"context"

	"k8s.io/apiserver/pkg/authorization/authorizer"

	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
)

// withoutSelectors authorizes requests for controlplane.seine.io without
// their field and label selectors. Every agent lists and watches with its
// own fieldSelector=nodeName=<node>, and the selectors are part of the
// SubjectAccessReview the delegating authorizer sends and caches, so 500
// agents starting at once (or coming back after a controller restart) cost
// 1,500 reviews to the kube-apiserver and never hit the cache. Without the
// selector, the agents' identical requests share one cached decision.
//
// Nothing is lost: RBAC cannot grant by field selector. Agents share one
// ServiceAccount; what keeps one to its own node's view is the node its
// pod-bound token carries, checked by the storage itself (checkReader),
// not by the authorizer.
type withoutSelectors struct{ authorizer.Authorizer }

func (a withoutSelectors) Authorize(ctx context.Context, attrs authorizer.Attributes) (authorizer.Decision, string, error) {
	return a.Authorizer.Authorize(ctx, stripSelectors(attrs))
}

func (a withoutSelectors) ConditionsAwareAuthorize(ctx context.Context, attrs authorizer.Attributes) authorizer.ConditionsAwareDecision {
	return a.Authorizer.ConditionsAwareAuthorize(ctx, stripSelectors(attrs))
}

// stripSelectors returns the attributes of a controlplane.seine.io request
// without its selectors, and any other request's as they are.
func stripSelectors(attrs authorizer.Attributes) authorizer.Attributes {
	if !attrs.IsResourceRequest() || attrs.GetAPIGroup() != cp.GroupName {
		return attrs
	}
	return authorizer.AttributesRecord{
		User: attrs.GetUser(), Verb: attrs.GetVerb(), Namespace: attrs.GetNamespace(),
		APIGroup: attrs.GetAPIGroup(), APIVersion: attrs.GetAPIVersion(),
		Resource: attrs.GetResource(), Subresource: attrs.GetSubresource(), Name: attrs.GetName(),
		ResourceRequest: true, Path: attrs.GetPath(),
	}
}
