package controller

import (
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
)

// manual drives a Controller without informers or worker: the test hands
// it pods, namespaces and policies and decides which policy keys one
// worker batch syncs before the flush, so batches are deterministic.
type manual struct {
	t        *testing.T
	c        *Controller
	policies cache.Indexer
	keys     []string
}

func newManual(t *testing.T) *manual {
	t.Helper()
	factory := informers.NewSharedInformerFactory(fake.NewSimpleClientset(), 0)
	c, err := New(factory, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	_, _, nps := trimmedInformers(factory)
	c.started.Store(true)
	return &manual{t: t, c: c, policies: nps.GetIndexer()}
}

func (m *manual) pod(p *corev1.Pod)             { m.c.onPod(trimPod(p)) }
func (m *manual) namespace(n *corev1.Namespace) { m.c.onNamespace(trimNamespace(n)) }

func (m *manual) putPolicy(np *networkingv1.NetworkPolicy) {
	if err := m.policies.Update(trimPolicy(np)); err != nil {
		m.t.Fatal(err)
	}
	m.keys = append(m.keys, np.Namespace+"/"+np.Name)
}

func (m *manual) deletePolicy(namespace, name string) {
	obj, ok, _ := m.policies.GetByKey(namespace + "/" + name)
	if !ok {
		m.t.Fatalf("no policy %s/%s", namespace, name)
	}
	if err := m.policies.Delete(obj); err != nil {
		m.t.Fatal(err)
	}
	m.keys = append(m.keys, namespace+"/"+name)
}

// batch syncs the policy keys given since the last batch, in order, then
// publishes, as the worker does when its queue runs empty.
func (m *manual) batch() {
	for _, k := range m.keys {
		m.c.syncPolicy(k)
	}
	m.keys = nil
	m.c.flush()
}

// stored is one object of a store as an agent may hold it.
type stored struct {
	obj  any
	span *Span
}

// storeState is the content of the three stores.
type storeState struct {
	np, atg, ag map[string]stored
}

func (s storeState) clone() storeState {
	return storeState{maps.Clone(s.np), maps.Clone(s.atg), maps.Clone(s.ag)}
}

// change is one store event.
type change struct {
	store   string // np, atg, ag
	key     string
	obj     any
	span    *Span
	deleted bool
	seq     uint64
}

func (s storeState) apply(e change) {
	m := map[string]map[string]stored{"np": s.np, "atg": s.atg, "ag": s.ag}[e.store]
	if e.deleted {
		delete(m, e.key)
	} else {
		m[e.key] = stored{e.obj, e.span}
	}
}

func snapshotOf[T any](s *Store[T]) map[string]stored {
	out := map[string]stored{}
	for k, it := range s.List("") {
		out[k] = stored{it.Object, it.Span}
	}
	return out
}

// recording is what one batch published: the stores before it and each
// store's events, in order.
type recording struct {
	before  storeState
	streams map[string][]change
}

// record runs do (which ends with a batch) and returns what the stores
// published.
func (m *manual) record(do func()) recording {
	c := m.c
	wnp, _ := c.NetworkPolicies.Watch(1 << 12)
	watg, _ := c.AppliedToGroups.Watch(1 << 12)
	wag, _ := c.AddressGroups.Watch(1 << 12)
	defer wnp.Stop()
	defer watg.Stop()
	defer wag.Stop()
	r := recording{
		before:  storeState{snapshotOf(c.NetworkPolicies), snapshotOf(c.AppliedToGroups), snapshotOf(c.AddressGroups)},
		streams: map[string][]change{},
	}
	do()
	drain := func(store string, events func() (change, bool)) {
		for {
			e, ok := events()
			if !ok {
				return
			}
			r.streams[store] = append(r.streams[store], e)
		}
	}
	drain("np", func() (change, bool) {
		select {
		case e := <-wnp.Events():
			return change{"np", e.Key, e.Object, e.Span, e.Type == Deleted, e.Seq}, true
		default:
			return change{}, false
		}
	})
	drain("atg", func() (change, bool) {
		select {
		case e := <-watg.Events():
			return change{"atg", e.Key, e.Object, e.Span, e.Type == Deleted, e.Seq}, true
		default:
			return change{}, false
		}
	})
	drain("ag", func() (change, bool) {
		select {
		case e := <-wag.Events():
			return change{"ag", e.Key, e.Object, e.Span, e.Type == Deleted, e.Seq}, true
		default:
			return change{}, false
		}
	})
	return r
}

// view is what an agent of one node holds: the objects whose span has the
// node.
type view struct {
	nps  map[string]*controlplane.NetworkPolicy
	atgs map[string]*controlplane.AppliedToGroup
	ags  map[string]*controlplane.AddressGroup
}

func (s storeState) view(node string) view {
	v := view{map[string]*controlplane.NetworkPolicy{}, map[string]*controlplane.AppliedToGroup{}, map[string]*controlplane.AddressGroup{}}
	for k, o := range s.np {
		if o.span.Has(node) {
			v.nps[k] = o.obj.(*controlplane.NetworkPolicy)
		}
	}
	for k, o := range s.atg {
		if o.span.Has(node) {
			v.atgs[k] = o.obj.(*controlplane.AppliedToGroup)
		}
	}
	for k, o := range s.ag {
		if o.span.Has(node) {
			v.ags[k] = o.obj.(*controlplane.AddressGroup)
		}
	}
	return v
}

// missing lists the groups policies of the view refer to that it lacks: an
// agent does not act on such a view.
func (v view) missing() []string {
	var out []string
	for name, np := range v.nps {
		for _, g := range np.AppliedToGroups {
			if v.atgs[g] == nil {
				out = append(out, fmt.Sprintf("policy %s: appliedToGroup %s", name, g))
			}
		}
		for _, r := range np.Rules {
			for _, g := range slices.Concat(r.From.AddressGroups, r.To.AddressGroups) {
				if v.ags[g] == nil {
					out = append(out, fmt.Sprintf("policy %s: addressGroup %s", name, g))
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

// probe is a connection the model judges.
type probe struct {
	proto controlplane.Protocol
	port  int32
}

var probes = []probe{{controlplane.ProtocolTCP, 80}, {controlplane.ProtocolUDP, 80}, {controlplane.ProtocolTCP, 81}}

// allows reports whether the view lets traffic between pod (namespace/name,
// a local pod of the view's node) and the peer address in direction dir
// (In: peer -> pod; Out: pod -> peer), as Kubernetes NetworkPolicy
// semantics and Seine's agents read the objects.
func (v view) allows(pod string, dir controlplane.Direction, peer netip.Addr, pr probe) bool {
	typ := controlplane.PolicyTypeIngress
	if dir == controlplane.DirectionOut {
		typ = controlplane.PolicyTypeEgress
	}
	isolated := false
	for _, np := range v.nps {
		if !slices.Contains(np.PolicyTypes, typ) || !v.appliesTo(np, pod) {
			continue
		}
		isolated = true
		for _, r := range np.Rules {
			if r.Direction != dir {
				continue
			}
			p := r.From
			if dir == controlplane.DirectionOut {
				p = r.To
			}
			if v.peerHas(p, peer) && servicesAllow(r.Services, pr) {
				return true
			}
		}
	}
	return !isolated
}

func (v view) appliesTo(np *controlplane.NetworkPolicy, pod string) bool {
	for _, g := range np.AppliedToGroups {
		if atg := v.atgs[g]; atg != nil {
			for _, m := range atg.Members {
				if m.Pod.Namespace+"/"+m.Pod.Name == pod {
					return true
				}
			}
		}
	}
	return false
}

func (v view) peerHas(p controlplane.NetworkPolicyPeer, ip netip.Addr) bool {
	for _, g := range p.AddressGroups {
		if ag := v.ags[g]; ag != nil {
			for _, m := range ag.Members {
				for _, a := range m.IPs {
					if x, ok := netip.AddrFromSlice(a); ok && x == ip {
						return true
					}
				}
			}
		}
	}
	for _, b := range p.IPBlocks {
		if prefixOf(b.CIDR).Contains(ip) && !slices.ContainsFunc(b.Except, func(e controlplane.IPNet) bool { return prefixOf(e).Contains(ip) }) {
			return true
		}
	}
	return false
}

func prefixOf(n controlplane.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	return netip.PrefixFrom(a, int(n.PrefixLength))
}

func servicesAllow(svcs []controlplane.Service, pr probe) bool {
	if len(svcs) == 0 {
		return true
	}
	for _, s := range svcs {
		if s.Protocol != pr.proto {
			continue
		}
		if s.Port == nil {
			return true
		}
		if s.Port.Type != intstr.Int {
			continue // named ports are not modelled
		}
		end := s.Port.IntVal
		if s.EndPort != nil {
			end = *s.EndPort
		}
		if pr.port >= s.Port.IntVal && pr.port <= end {
			return true
		}
	}
	return false
}

// endpoint is a pod of the scenario, with its node and address.
type endpoint struct {
	pod, node string
	ip        netip.Addr
}

// opened lists the connections view v allows for the pods of node that both
// before and after deny: a state no agent may pass through.
func opened(before, after, v view, node string, eps []endpoint) []string {
	var out []string
	for _, local := range eps {
		if local.node != node {
			continue
		}
		for _, peer := range eps {
			if peer.pod == local.pod {
				continue
			}
			for _, dir := range []controlplane.Direction{controlplane.DirectionIn, controlplane.DirectionOut} {
				for _, pr := range probes {
					if !before.allows(local.pod, dir, peer.ip, pr) && !after.allows(local.pod, dir, peer.ip, pr) &&
						v.allows(local.pod, dir, peer.ip, pr) {
						arrow := peer.pod + " -> " + local.pod
						if dir == controlplane.DirectionOut {
							arrow = local.pod + " -> " + peer.pod
						}
						out = append(out, fmt.Sprintf("%s %s/%d", arrow, pr.proto, pr.port))
					}
				}
			}
		}
	}
	return out
}

// checkViews fails the test if a view an agent could act on opens what the
// states before and after the batch deny, or if the controller's own order
// ever leaves a node with a policy whose groups it has not published yet
// (or deleted already), other than on a node the policy is leaving.
//
// An agent receives the three stores on three watches, each in order but
// independently of the others, and acts only on views without missing
// groups: every combination of a prefix of each stream is a view it may
// hold.
func checkViews(t *testing.T, r recording, eps []endpoint) {
	t.Helper()
	after := r.before.clone()
	var all []change
	for _, s := range r.streams {
		all = append(all, s...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].seq < all[j].seq })
	for _, e := range all {
		after.apply(e)
	}
	nodes := map[string]bool{}
	for _, ep := range eps {
		nodes[ep.node] = true
	}
	for _, node := range slices.Sorted(maps.Keys(nodes)) {
		b, a := r.before.view(node), after.view(node)
		if m := a.missing(); len(m) > 0 {
			t.Errorf("node %s: final view lacks groups: %v", node, m)
		}
		// The controller's own order.
		st := r.before.clone()
		for i, e := range all {
			st.apply(e)
			v := st.view(node)
			for _, m := range v.missing() {
				name, _, _ := strings.Cut(strings.TrimPrefix(m, "policy "), ":")
				if a.nps[name] == nil {
					continue // leaving the node: the agent waits for its deletion
				}
				t.Errorf("node %s: after event %d (%s %s deleted=%v) the stores hold %s", node, i, e.store, e.key, e.deleted, m)
			}
		}
		// Every view an agent may act on.
		np, atg, ag := r.streams["np"], r.streams["atg"], r.streams["ag"]
		seen := map[string]bool{}
		for i := 0; i <= len(np); i++ {
			for j := 0; j <= len(atg); j++ {
				for k := 0; k <= len(ag); k++ {
					st := r.before.clone()
					for _, e := range slices.Concat(np[:i], atg[:j], ag[:k]) {
						st.apply(e)
					}
					v := st.view(node)
					if len(v.missing()) > 0 {
						continue
					}
					for _, o := range opened(b, a, v, node, eps) {
						if !seen[o] {
							seen[o] = true
							t.Errorf("node %s: a view after %d policy, %d appliedToGroup and %d addressGroup events opens %s, denied before and after",
								node, i, j, k, o)
						}
					}
				}
			}
		}
	}
}
