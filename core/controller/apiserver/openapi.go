package apiserver

import (
	openapicommon "k8s.io/kube-openapi/pkg/common"
	openapiutil "k8s.io/kube-openapi/pkg/util"
	"k8s.io/kube-openapi/pkg/validation/spec"

	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	statsv1 "github.com/seine-cni/seine/core/apis/stats/v1alpha1"
)

// openAPIDefinitions are the smallest definitions k8s.io/apiserver accepts:
// it builds models of every served type (server-side apply needs them) and
// refuses to start without. Clients only read the API, and agents create
// NodePolicyStatus reports that are validated by hand (status.go), so each
// type is an object whose fields are not described; /openapi is not served.
func openAPIDefinitions(openapicommon.ReferenceCallback) map[string]openapicommon.OpenAPIDefinition {
	defs := make(map[string]openapicommon.OpenAPIDefinition)
	for _, obj := range append(cp.Objects(), statsv1.Objects()...) {
		defs[openapiutil.GetCanonicalTypeName(obj)] = openapicommon.OpenAPIDefinition{Schema: spec.Schema{
			SchemaProps: spec.SchemaProps{Type: []string{"object"}},
			VendorExtensible: spec.VendorExtensible{Extensions: spec.Extensions{
				"x-kubernetes-preserve-unknown-fields": true,
			}},
		}}
	}
	return defs
}
