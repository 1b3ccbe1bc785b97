// Package controller computes Kubernetes NetworkPolicies into the internal
// controlplane objects agents consume: AppliedToGroups, AddressGroups and
// NetworkPolicies, each with the span of nodes that need it. See README.md.
package controller

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/metrics"
)

// flushKey asks the worker to publish dirty objects; policy keys are
// namespace/name and never empty.
const flushKey = ""

// Controller turns pods, namespaces and NetworkPolicies, as its informers
// see them, into the objects of its three stores.
//
// Pod and namespace events update the label index and the membership of
// existing groups directly. Policy events go through a work queue; one
// worker translates policies, and whenever the queue runs empty it publishes
// what changed in dependency order: AppliedToGroups' members, then
// NetworkPolicies (span = the nodes of the members of their
// AppliedToGroups), then AppliedToGroups and AddressGroups (span = union of
// the spans of the policies using them). At
// a cold start nothing is published before the informers have synced, so
// every object is published once, from a complete index.
type Controller struct {
	log      *slog.Logger
	queue    workqueue.TypedInterface[string]
	synced   []cache.InformerSynced
	npLister networkinglisters.NetworkPolicyLister
	// cnpIndexer and tierIndexer hold crd.seine.io's ClusterNetworkPolicies
	// and Tiers (AddTiered); nil without.
	cnpIndexer, tierIndexer cache.Indexer
	// cgIndexer holds crd.seine.io's ClusterGroups (AddClusterGroups);
	// nil without.
	cgIndexer cache.Indexer
	// snpIndexer holds crd.seine.io's namespaced NetworkPolicies
	// (AddNamespacedTiered); nil without.
	snpIndexer cache.Indexer
	// upstreamIndexer holds policy.networking.k8s.io's
	// ClusterNetworkPolicies (AddUpstream); nil without.
	upstreamIndexer cache.Indexer
	// admissionClient reads policies past the informers, to confirm an
	// admission refusal with (SetAdmissionClient); nil: not confirmed.
	admissionClient dynamic.Interface
	started         atomic.Bool

	// AppliedToGroups, AddressGroups and NetworkPolicies hold the computed
	// objects, keyed by name, with their spans.
	AppliedToGroups *Store[*controlplane.AppliedToGroup]
	AddressGroups   *Store[*controlplane.AddressGroup]
	NetworkPolicies *Store[*controlplane.NetworkPolicy]

	mu            sync.Mutex
	idx           *labelIndex
	nodes         *nodeTable
	atgs, ags     map[string]*group
	clusterGroups map[*group]struct{}  // groups with a namespaceSelector
	nodeGroups    map[*group]struct{}  // groups of Nodes (a peer's nodeSelector)
	nodeEntries   map[string]*podEntry // every Node, by name
	// nodeIndexer and nodesSynced are the Node informer's (NodeExists);
	// nodeDeleted are called with each deleted Node's name (OnNodeDelete).
	nodeIndexer cache.Indexer
	nodesSynced cache.InformerSynced
	nodeDeleted []func(name string)
	policies    map[string]*policyState
	// groupUsers maps a ClusterGroup's name to the keys of the policies
	// that read it (as a peer, an appliedTo or a child group).
	groupUsers map[string]map[string]struct{}
	// afterSync, when set (tests), is called with each policy key synced.
	afterSync func(key string)
	dirtyATG  map[*group]struct{}
	dirtyAG   map[*group]struct{}
	dirtyNP   map[*policyState]struct{}
	// pendingKeys are policy keys queued and not synced yet: with the dirty
	// maps they tell Idle that something is still to be published.
	pendingKeys map[string]struct{}
	// npNames maps the internal name of every policy to its state.
	npNames map[string]*policyState
	// goneATG, goneAG and goneNP are objects to delete from the stores at
	// the end of the next flush, after what replaces them is published.
	goneATG, goneAG, goneNP map[string]struct{}

	metrics *metrics.Controller // nil: none (SetMetrics)
}

// SetMetrics makes the controller record its computations in m. Call it
// before Run.
func (c *Controller) SetMetrics(m *metrics.Controller) { c.metrics = m }

// QueueDepth is the number of NetworkPolicy changes waiting to be
// translated.
func (c *Controller) QueueDepth() int { return c.queue.Len() }

// Unpublished counts the computed objects not published yet, by kind.
func (c *Controller) Unpublished() metrics.ObjectCounts {
	c.mu.Lock()
	defer c.mu.Unlock()
	return metrics.ObjectCounts{len(c.dirtyATG), len(c.dirtyAG), len(c.dirtyNP)}
}

// Stored counts the objects of the stores, by kind.
func (c *Controller) Stored() metrics.ObjectCounts {
	return metrics.ObjectCounts{c.AppliedToGroups.Len(), c.AddressGroups.Len(), c.NetworkPolicies.Len()}
}

// New returns a Controller fed by the pod, namespace and NetworkPolicy
// informers of factory. Call it before factory.Start, then Run.
func New(factory informers.SharedInformerFactory, log *slog.Logger) (*Controller, error) {
	c := &Controller{
		log:             log,
		queue:           workqueue.NewTypedWithConfig(workqueue.TypedQueueConfig[string]{Name: "seine-networkpolicy"}),
		AppliedToGroups: NewStore[*controlplane.AppliedToGroup](),
		AddressGroups:   NewStore[*controlplane.AddressGroup](),
		NetworkPolicies: NewStore[*controlplane.NetworkPolicy](),
		idx:             newLabelIndex(),
		nodes:           newNodeTable(),
		atgs:            make(map[string]*group),
		ags:             make(map[string]*group),
		clusterGroups:   make(map[*group]struct{}),
		nodeGroups:      make(map[*group]struct{}),
		nodeEntries:     make(map[string]*podEntry),
		policies:        make(map[string]*policyState),
		groupUsers:      make(map[string]map[string]struct{}),
		dirtyATG:        make(map[*group]struct{}),
		dirtyAG:         make(map[*group]struct{}),
		dirtyNP:         make(map[*policyState]struct{}),
		pendingKeys:     make(map[string]struct{}),
		npNames:         make(map[string]*policyState),
		goneATG:         make(map[string]struct{}),
		goneAG:          make(map[string]struct{}),
		goneNP:          make(map[string]struct{}),
	}
	seq := new(atomic.Uint64)
	c.AppliedToGroups.seq, c.AddressGroups.seq, c.NetworkPolicies.seq = seq, seq, seq

	pods, nss, nps := trimmedInformers(factory)
	nodes := nodeInformer(factory)
	for _, t := range []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{
		{pods, cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { c.onPod(o) },
			UpdateFunc: func(_, o any) { c.onPod(o) },
			DeleteFunc: func(o any) { c.onPodDelete(o) },
		}},
		{nss, cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { c.onNamespace(o) },
			UpdateFunc: func(_, o any) { c.onNamespace(o) },
			DeleteFunc: func(o any) { c.onNamespaceDelete(o) },
		}},
		{nps, cache.ResourceEventHandlerFuncs{
			AddFunc:    c.enqueuePolicy,
			UpdateFunc: func(_, o any) { c.enqueuePolicy(o) },
			DeleteFunc: c.enqueuePolicy,
		}},
		{nodes, cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { c.onNode(o) },
			UpdateFunc: func(_, o any) { c.onNode(o) },
			DeleteFunc: func(o any) { c.onNodeDelete(o) },
		}},
	} {
		reg, err := t.inf.AddEventHandler(t.h)
		if err != nil {
			return nil, fmt.Errorf("add informer event handler: %w", err)
		}
		// The registration has synced once our handler, not just the
		// informer's store, has seen the initial list.
		c.synced = append(c.synced, reg.HasSynced)
	}
	c.npLister = networkinglisters.NewNetworkPolicyLister(nps.GetIndexer())
	c.nodeIndexer, c.nodesSynced = nodes.GetIndexer(), nodes.HasSynced
	return c, nil
}

// Run computes until ctx ends. Policies are translated as soon as their
// events arrive, while the informers are still listing pods (group members
// follow pod events incrementally); objects are published only once every
// handler has seen its informer's initial list.
func (c *Controller) Run(ctx context.Context) error {
	defer c.queue.ShutDown()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.work()
	}()
	defer func() {
		c.queue.ShutDown()
		<-done
	}()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return fmt.Errorf("wait for informer caches: %w", context.Cause(ctx))
	}
	c.log.Info("informers synced, publishing network policies")
	c.started.Store(true)
	c.queue.Add(flushKey)
	<-ctx.Done()
	return nil
}

func (c *Controller) work() {
	for {
		key, quit := c.queue.Get()
		if quit {
			return
		}
		if key != flushKey {
			start := time.Now()
			c.syncPolicy(key)
			c.metrics.PolicySynced(time.Since(start))
		}
		c.queue.Done(key)
		if c.queue.Len() == 0 && c.started.Load() {
			start := time.Now()
			c.flush()
			c.metrics.Published(time.Since(start))
		}
	}
}

// Idle reports whether the controller has started and every change it has
// seen is computed and stored. A policy key counts as pending from the
// moment it is queued until its sync has marked what it changed as dirty
// (both under c.mu), so there is no instant, not even while the worker
// takes the key off the queue, at which a change is in neither.
func (c *Controller) Idle() bool {
	if !c.started.Load() {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pendingKeys) == 0 && len(c.dirtyATG) == 0 && len(c.dirtyAG) == 0 && len(c.dirtyNP) == 0 &&
		len(c.goneATG) == 0 && len(c.goneAG) == 0 && len(c.goneNP) == 0
}

func (c *Controller) enqueuePolicy(o any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(o)
	if err != nil {
		c.log.Error("network policy key", "error", err)
		return
	}
	c.enqueueKey(key)
}

// enqueueKey queues the policy of key for translation.
func (c *Controller) enqueueKey(key string) {
	c.mu.Lock()
	c.pendingKeys[key] = struct{}{}
	c.mu.Unlock()
	c.queue.Add(key)
}

func (c *Controller) markGroup(g *group) {
	g.dirty = true
	c.markGroupSpan(g)
}

func (c *Controller) markGroupSpan(g *group) {
	if g.kind == appliedToKind {
		c.dirtyATG[g] = struct{}{}
	} else {
		c.dirtyAG[g] = struct{}{}
	}
	c.queue.Add(flushKey)
}

// reconcileMember updates whether pod p of namespace n belongs to g.
func (c *Controller) reconcileMember(g *group, n *nsEntry, p *podEntry, attrsChanged bool) {
	_, was := g.members[p]
	is := g.matches(n, p)
	switch {
	case was && !is:
		delete(g.members, p)
		c.markGroup(g)
	case !was && is:
		g.members[p] = struct{}{}
		c.markGroup(g)
	case is && attrsChanged:
		c.markGroup(g)
	}
}

// candidates appends the groups that may select a pod of n with labels l.
func (c *Controller) candidates(n *nsEntry, l map[string]string, out []*group) []*group {
	for k, v := range l {
		for g := range n.groupBy[kv{k, v}] {
			out = append(out, g)
		}
	}
	for g := range n.groupAll {
		out = append(out, g)
	}
	for g := range c.clusterGroups {
		out = append(out, g)
	}
	return out
}

// ensureGroup returns the group for sel, creating it with its members from
// the index, and takes a reference on it.
func (c *Controller) ensureGroup(kind groupKind, sel *groupSelector) *group {
	name := groupName(sel.normalized())
	groups := c.atgs
	if kind == addressKind {
		groups = c.ags
	}
	if g := groups[name]; g != nil {
		g.refs++
		return g
	}
	g := &group{kind: kind, name: name, sel: sel, refs: 1, members: make(map[*podEntry]struct{}), policies: make(map[*policyState]int)}
	groups[name] = g
	if sel.node != nil {
		for _, e := range c.nodeEntries {
			if len(e.ips) > 0 && sel.node.matches(e.labels) {
				g.members[e] = struct{}{}
			}
		}
		c.nodeGroups[g] = struct{}{}
		c.markGroup(g)
		return g
	}
	add := func(p *podEntry) {
		if g.admits(p) {
			g.members[p] = struct{}{}
		}
	}
	if sel.ns == nil {
		n := c.idx.ns(sel.namespace)
		n.eachPod(sel.pod, add)
		if k, ok := g.groupIndexKey(); ok {
			addTo(n.groupBy, k, g)
		} else {
			n.groupAll[g] = struct{}{}
		}
	} else {
		c.idx.eachNamespace(sel.ns, func(n *nsEntry) { n.eachPod(sel.pod, add) })
		c.clusterGroups[g] = struct{}{}
	}
	c.markGroup(g)
	return g
}

// releaseGroup drops a reference; the last one deletes the group.
func (c *Controller) releaseGroup(g *group) {
	g.refs--
	if g.refs > 0 {
		return
	}
	if g.sel.node != nil {
		delete(c.nodeGroups, g)
	} else if g.sel.ns == nil {
		n := c.idx.ns(g.sel.namespace)
		if k, ok := g.groupIndexKey(); ok {
			removeFrom(n.groupBy, k, g)
		} else {
			delete(n.groupAll, g)
		}
		c.idx.maybeDropNS(n)
	} else {
		delete(c.clusterGroups, g)
	}
	// The stored group goes at the end of the next flush, after the
	// policies that referred to it no longer do (see publish.go).
	if g.kind == appliedToKind {
		delete(c.atgs, g.name)
		delete(c.dirtyATG, g)
		c.goneATG[g.name] = struct{}{}
	} else {
		delete(c.ags, g.name)
		delete(c.dirtyAG, g)
		c.goneAG[g.name] = struct{}{}
	}
	c.queue.Add(flushKey)
}
