package policywatch

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"

	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/client/clientset/versioned"
	cpclient "github.com/seine-cni/seine/core/client/clientset/versioned/typed/controlplane/v1beta1"
)

// Client lists and watches controlplane.seine.io/v1beta1 for one node, and
// reports what the node realized, through the generated clientset.
type Client struct {
	cp   cpclient.ControlplaneV1beta1Interface
	node string
}

// Resources served by seine-controller.
const (
	NetworkPolicies = "networkpolicies"
	AppliedToGroups = "appliedtogroups"
	AddressGroups   = "addressgroups"
	// NodePolicyStatuses is the resource agents report their realized
	// policies to.
	NodePolicyStatuses = "nodepolicystatuses"
)

// NewClient returns a client of the API at cfg (the kube-apiserver, which
// forwards to seine-controller through API aggregation, or the controller
// itself) that sees node's span.
func NewClient(cfg *rest.Config, node string) (*Client, error) {
	c := rest.CopyConfig(cfg)
	c.ContentType = runtime.ContentTypeJSON
	if c.UserAgent == "" {
		c.UserAgent = "seine-agent/" + node
	}
	cs, err := versioned.NewForConfig(c)
	if err != nil {
		return nil, fmt.Errorf("controlplane client: %w", err)
	}
	return newClientFor(cs.ControlplaneV1beta1(), node), nil
}

// newClientFor returns a client of node's span over a typed client (the
// generated fake in tests).
func newClientFor(c cpclient.ControlplaneV1beta1Interface, node string) *Client {
	return &Client{cp: c, node: node}
}

func (c *Client) options(rv string) metav1.ListOptions {
	o := metav1.ListOptions{ResourceVersion: rv}
	if c.node != "" {
		o.FieldSelector = cp.NodeNameField + "=" + c.node
	}
	return o
}

// ListNetworkPolicies lists the node's NetworkPolicies.
func (c *Client) ListNetworkPolicies(ctx context.Context) (*cp.NetworkPolicyList, error) {
	l, err := c.cp.NetworkPolicies().List(ctx, c.options(""))
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", NetworkPolicies, err)
	}
	return l, nil
}

// ListAppliedToGroups lists the node's AppliedToGroups.
func (c *Client) ListAppliedToGroups(ctx context.Context) (*cp.AppliedToGroupList, error) {
	l, err := c.cp.AppliedToGroups().List(ctx, c.options(""))
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", AppliedToGroups, err)
	}
	return l, nil
}

// ListAddressGroups lists the node's AddressGroups.
func (c *Client) ListAddressGroups(ctx context.Context) (*cp.AddressGroupList, error) {
	l, err := c.cp.AddressGroups().List(ctx, c.options(""))
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", AddressGroups, err)
	}
	return l, nil
}

// Watch watches a resource of the node's span after resourceVersion rv
// (""/"0": from the current state, every object first as ADDED). Group
// membership changes arrive as MODIFIED events carrying an
// *AppliedToGroupPatch or *AddressGroupPatch.
func (c *Client) Watch(ctx context.Context, resource, rv string) (watch.Interface, error) {
	var w watch.Interface
	var err error
	switch resource {
	case NetworkPolicies:
		w, err = c.cp.NetworkPolicies().Watch(ctx, c.options(rv))
	case AppliedToGroups:
		w, err = c.cp.AppliedToGroups().Watch(ctx, c.options(rv))
	case AddressGroups:
		w, err = c.cp.AddressGroups().Watch(ctx, c.options(rv))
	default:
		return nil, fmt.Errorf("watch %s: not a watched resource", resource)
	}
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", resource, err)
	}
	return w, nil
}

// Report sends the node's whole realized set: a create of its
// NodePolicyStatus, which replaces whatever the node reported before.
func (c *Client) Report(ctx context.Context, st *cp.NodePolicyStatus) error {
	if _, err := c.cp.NodePolicyStatuses().Create(ctx, st, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("report %d policies of node %s: %w", len(st.Policies), st.Name, err)
	}
	return nil
}
