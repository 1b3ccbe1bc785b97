package policywatch

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"

	cp "github.com/seine-cni/seine/core/apis/controlplane"
)

var (
	scheme         = runtime.NewScheme()
	codecs         = serializer.NewCodecFactory(scheme)
	parameterCodec = runtime.NewParameterCodec(scheme)
)

func init() {
	if err := cp.AddToScheme(scheme); err != nil {
		panic(err)
	}
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
}

// Client lists and watches controlplane.seine.io/v1beta1 for one node: a
// small hand-written typed client over client-go's REST client.
type Client struct {
	rest rest.Interface
	node string
}

// Resources served by seine-controller.
const (
	NetworkPolicies = "networkpolicies"
	AppliedToGroups = "appliedtogroups"
	AddressGroups   = "addressgroups"
)

// NewClient returns a client of the API at cfg (the kube-apiserver, which
// forwards to seine-controller through API aggregation, or the controller
// itself) that sees node's span.
func NewClient(cfg *rest.Config, node string) (*Client, error) {
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &cp.SchemeGroupVersion
	c.APIPath = "/apis"
	c.NegotiatedSerializer = codecs.WithoutConversion()
	c.ContentType = runtime.ContentTypeJSON
	if c.UserAgent == "" {
		c.UserAgent = "seine-agent/" + node
	}
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("controlplane client: %w", err)
	}
	return &Client{rest: rc, node: node}, nil
}

func (c *Client) options(rv string, watch bool) *metav1.ListOptions {
	o := &metav1.ListOptions{ResourceVersion: rv, Watch: watch}
	if c.node != "" {
		o.FieldSelector = cp.NodeNameField + "=" + c.node
	}
	return o
}

// ListNetworkPolicies lists the node's NetworkPolicies.
func (c *Client) ListNetworkPolicies(ctx context.Context) (*cp.NetworkPolicyList, error) {
	l := &cp.NetworkPolicyList{}
	return l, c.list(ctx, NetworkPolicies, l)
}

// ListAppliedToGroups lists the node's AppliedToGroups.
func (c *Client) ListAppliedToGroups(ctx context.Context) (*cp.AppliedToGroupList, error) {
	l := &cp.AppliedToGroupList{}
	return l, c.list(ctx, AppliedToGroups, l)
}

// ListAddressGroups lists the node's AddressGroups.
func (c *Client) ListAddressGroups(ctx context.Context) (*cp.AddressGroupList, error) {
	l := &cp.AddressGroupList{}
	return l, c.list(ctx, AddressGroups, l)
}

func (c *Client) list(ctx context.Context, resource string, into runtime.Object) error {
	err := c.rest.Get().Resource(resource).VersionedParams(c.options("", false), parameterCodec).Do(ctx).Into(into)
	if err != nil {
		return fmt.Errorf("list %s: %w", resource, err)
	}
	return nil
}

// Watch watches a resource of the node's span after resourceVersion rv
// (""/"0": from the current state, every object first as ADDED). Group
// membership changes arrive as MODIFIED events carrying an
// *AppliedToGroupPatch or *AddressGroupPatch.
func (c *Client) Watch(ctx context.Context, resource, rv string) (watch.Interface, error) {
	w, err := c.rest.Get().Resource(resource).VersionedParams(c.options(rv, true), parameterCodec).Watch(ctx)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", resource, err)
	}
	return w, nil
}

// NodePolicyStatuses is the resource agents report their realized policies
// to.
const NodePolicyStatuses = "nodepolicystatuses"

// Report sends the node's whole realized set: a create of its
// NodePolicyStatus, which replaces whatever the node reported before.
func (c *Client) Report(ctx context.Context, st *cp.NodePolicyStatus) error {
	err := c.rest.Post().Resource(NodePolicyStatuses).Body(st).Do(ctx).Error()
	if err != nil {
		return fmt.Errorf("report %d policies of node %s: %w", len(st.Policies), st.Name, err)
	}
	return nil
}
