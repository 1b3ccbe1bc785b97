package policywatch

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
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
//
// It asks for tiered policies (fieldSelector nodeName=<node>,tiered=true):
// a controller leaves them out of a node's view unless its agent says it
// enforces them. A controller older than tiered policy refuses the field
// (400, field label "tiered" not supported); it has no tiered policy to
// serve, so the client then asks without it until its next session.
type Client struct {
	cp   cpclient.ControlplaneV1beta1Interface
	node string
	// untiered is set while the controller refused tiered=true.
	untiered atomic.Bool
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
		if !c.untiered.Load() {
			o.FieldSelector += "," + cp.TieredField + "=true"
		}
	}
	return o
}

// AskTiered makes the next requests ask for tiered policies again, after a
// controller refused them: a new session may meet an upgraded controller.
func (c *Client) AskTiered() { c.untiered.Store(false) }

// Untiered says whether the controller refused tiered=true (it is older
// than tiered policy).
func (c *Client) Untiered() bool { return c.untiered.Load() }

// call runs do, and once more without tiered=true if the controller refused
// that field. Only a controller older than tiered policy refuses it, and
// it serves no tiered policy, so asking without it hides nothing.
func call[T any](c *Client, do func() (T, error)) (T, error) {
	v, err := do()
	if err != nil && c.node != "" && !c.untiered.Load() && refusedTiered(err) {
		c.untiered.Store(true)
		return do()
	}
	return v, err
}

func refusedTiered(err error) bool {
	return apierrors.IsBadRequest(err) && strings.Contains(err.Error(), `"`+cp.TieredField+`"`)
}

// ListNetworkPolicies lists the node's NetworkPolicies.
func (c *Client) ListNetworkPolicies(ctx context.Context) (*cp.NetworkPolicyList, error) {
	l, err := call(c, func() (*cp.NetworkPolicyList, error) { return c.cp.NetworkPolicies().List(ctx, c.options("")) })
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", NetworkPolicies, err)
	}
	return l, nil
}

// ListAppliedToGroups lists the node's AppliedToGroups.
func (c *Client) ListAppliedToGroups(ctx context.Context) (*cp.AppliedToGroupList, error) {
	l, err := call(c, func() (*cp.AppliedToGroupList, error) { return c.cp.AppliedToGroups().List(ctx, c.options("")) })
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", AppliedToGroups, err)
	}
	return l, nil
}

// ListAddressGroups lists the node's AddressGroups.
func (c *Client) ListAddressGroups(ctx context.Context) (*cp.AddressGroupList, error) {
	l, err := call(c, func() (*cp.AddressGroupList, error) { return c.cp.AddressGroups().List(ctx, c.options("")) })
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
	var start func(context.Context, metav1.ListOptions) (watch.Interface, error)
	switch resource {
	case NetworkPolicies:
		start = c.cp.NetworkPolicies().Watch
	case AppliedToGroups:
		start = c.cp.AppliedToGroups().Watch
	case AddressGroups:
		start = c.cp.AddressGroups().Watch
	default:
		return nil, fmt.Errorf("watch %s: not a watched resource", resource)
	}
	w, err := call(c, func() (watch.Interface, error) { return start(ctx, c.options(rv)) })
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
