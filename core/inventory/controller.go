package inventory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic"
	coreinformers "k8s.io/client-go/informers/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	crd "github.com/seine-cni/seine/core/apis/crd/v1beta1"
)

// ControllerSource is seine-controller as its inventory reads it.
type ControllerSource interface {
	ConnectedAgents() int
	Policy() crd.PolicyInfo
}

// ControllerOptions tune the controller's inventory.
type ControllerOptions struct {
	// Heartbeat is how often the SeineControllerInfo status is written
	// when nothing changed, and every node's SeineAgentInfo checked
	// (DefaultHeartbeat when 0).
	Heartbeat time.Duration
	// Pod ("namespace/name") and NodeName are where the controller runs
	// (empty outside a pod).
	Pod, NodeName string
	// Version is the controller's build (Version() when empty).
	Version string
}

// Controller keeps one SeineAgentInfo per Node (created when the Node
// appears, deleted when it goes) and writes the SeineControllerInfo.
type Controller struct {
	dyn    dynamic.Interface
	nodes  corelisters.NodeLister
	synced cache.InformerSynced
	src    ControllerSource
	log    *slog.Logger
	opts   ControllerOptions
	kick   chan struct{}
	now    func() time.Time

	last    *crd.SeineControllerInfoStatus // what Report last wrote, without its time
	written time.Time
}

// NewController returns the controller's inventory, fed by nodes (call it
// before the informer factory starts).
func NewController(dyn dynamic.Interface, nodes coreinformers.NodeInformer, src ControllerSource, log *slog.Logger, o ControllerOptions) (*Controller, error) {
	if o.Heartbeat == 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.Version == "" {
		o.Version = Version()
	}
	c := &Controller{dyn: dyn, nodes: nodes.Lister(), synced: nodes.Informer().HasSynced, src: src, log: log, opts: o, kick: make(chan struct{}, 1), now: time.Now}
	kick := func(any) {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
	if _, err := nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: kick, DeleteFunc: kick}); err != nil {
		return nil, fmt.Errorf("node informer: %w", err)
	}
	return c, nil
}

// Run keeps the inventory until ctx ends: the agents' objects after every
// Node added or deleted and every Heartbeat; the controller's status
// every Heartbeat and, checked every DefaultCheck, as soon as what it
// says changed (an agent connected, a policy computed). Failures are
// logged and tried again at the next turn.
func (c *Controller) Run(ctx context.Context) error {
	if !cache.WaitForCacheSync(ctx.Done(), c.synced) {
		return nil
	}
	heartbeat := time.NewTicker(c.opts.Heartbeat)
	defer heartbeat.Stop()
	check := time.NewTicker(DefaultCheck)
	defer check.Stop()
	syncAgents := true
	for {
		if syncAgents {
			if err := c.SyncAgents(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("agent infos not in step with the nodes; retrying", "err", err)
			}
		}
		if err := c.Report(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("controller info not written; retrying", "err", err, "in", DefaultCheck)
		}
		syncAgents = false
		select {
		case <-ctx.Done():
			return nil
		case <-c.kick:
			syncAgents = true
		case <-heartbeat.C:
			syncAgents = true
		case <-check.C:
		}
	}
}

// SyncAgents creates the SeineAgentInfo of every Node that lacks one and
// deletes those of Nodes that are gone. An object whose Node was deleted
// and created again under the same name (another UID) is deleted and made
// again, so its owner reference is the Node's that exists.
func (c *Controller) SyncAgents(ctx context.Context) error {
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return err
	}
	want := make(map[string]*corev1.Node, len(nodes))
	for _, n := range nodes {
		want[n.Name] = n
	}
	res := c.dyn.Resource(crd.SeineAgentInfosResource)
	have, err := res.List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list seineagentinfos: %w", err)
	}
	var errs []error
	for _, info := range have.Items {
		n := want[info.GetName()]
		if n != nil && ownedBy(&info, n) {
			delete(want, info.GetName())
			continue
		}
		err := res.Delete(ctx, info.GetName(), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: ptr.To(info.GetUID())}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			errs = append(errs, fmt.Errorf("delete seineagentinfo %s: %w", info.GetName(), err))
			continue
		}
		c.log.Info("agent info deleted: its node is gone", "node", info.GetName())
	}
	for name, n := range want {
		_, err := res.Create(ctx, agentInfoFor(n), metav1.CreateOptions{FieldManager: "seine-controller"})
		switch {
		case apierrors.IsAlreadyExists(err):
			// made again by the next turn if it is a stale one
		case err != nil:
			errs = append(errs, fmt.Errorf("create seineagentinfo %s: %w", name, err))
		default:
			c.log.Info("agent info created", "node", name)
		}
	}
	return errors.Join(errs...)
}

// agentInfoFor is node's new SeineAgentInfo, owned by the Node so that
// the garbage collector removes it too if the controller is not running
// when the Node goes.
func agentInfoFor(n *corev1.Node) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": crd.SchemeGroupVersion.String(), "kind": "SeineAgentInfo",
		"metadata": map[string]any{
			"name":   n.Name,
			"labels": map[string]any{"app": "seine", "component": "seine-agent"},
			"ownerReferences": []any{map[string]any{
				"apiVersion": "v1", "kind": "Node", "name": n.Name, "uid": string(n.UID),
			}},
		},
	}}
}

// ownedBy says whether info's owner reference is node (by UID).
func ownedBy(info *unstructured.Unstructured, n *corev1.Node) bool {
	for _, o := range info.GetOwnerReferences() {
		if o.Kind == "Node" && o.UID == n.UID {
			return true
		}
	}
	return false
}

// Report writes the SeineControllerInfo's status, creating the object
// first if it does not exist, when what it says changed since the last
// write or the heartbeat is due.
func (c *Controller) Report(ctx context.Context) error {
	st := &crd.SeineControllerInfoStatus{
		Version:         c.opts.Version,
		Pod:             c.opts.Pod,
		NodeName:        c.opts.NodeName,
		ConnectedAgents: int32(c.src.ConnectedAgents()),
		Policy:          c.src.Policy(),
	}
	now := c.now()
	if c.last != nil && *c.last == *st && now.Sub(c.written) < c.opts.Heartbeat {
		return nil
	}
	res := c.dyn.Resource(crd.SeineControllerInfosResource)
	if c.last == nil {
		if _, err := res.Get(ctx, crd.ControllerInfoName, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			obj := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": crd.SchemeGroupVersion.String(), "kind": "SeineControllerInfo",
				"metadata": map[string]any{"name": crd.ControllerInfoName, "labels": map[string]any{"app": "seine", "component": "seine-controller"}},
			}}
			if _, err := res.Create(ctx, obj, metav1.CreateOptions{FieldManager: "seine-controller"}); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("create seinecontrollerinfo: %w", err)
			}
		} else if err != nil {
			return fmt.Errorf("get seinecontrollerinfo: %w", err)
		}
	}
	written := *st
	written.LastHeartbeatTime = metav1.NewTime(now)
	if err := applyStatus(ctx, c.dyn, crd.SeineControllerInfosResource, "SeineControllerInfo", crd.ControllerInfoName, "seine-controller", &written); err != nil {
		return err
	}
	c.last, c.written = st, now
	return nil
}
