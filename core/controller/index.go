package controller

import (
	"k8s.io/apimachinery/pkg/labels"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
)

// kv is one label; indexes map it to the objects carrying it. Its strings
// share the memory of the objects' own label maps.
type kv struct{ k, v string }

// podEntry is what the controller keeps of a pod. One entry lives for the
// pod's lifetime and is updated in place; groups hold it by pointer.
type podEntry struct {
	name, namespace string
	labels          map[string]string
	ips             []controlplane.IPAddress // shared by every member built from it
	ports           []controlplane.NamedPort // likewise
	node            string
	nodeID          int32
	eligible        bool
	// isNode marks the entry of a Node (a member of nodeSelector groups):
	// name is the Node's, ips its addresses.
	isNode bool
}

// nsEntry holds one namespace: its labels (once the Namespace object is
// seen), its pods indexed by label, and the groups scoped to it indexed by
// one label of their selector.
type nsEntry struct {
	name   string
	known  bool
	labels map[string]string

	pods     map[string]*podEntry
	podsBy   map[kv]map[*podEntry]struct{}
	groupBy  map[kv]map[*group]struct{} // groups whose selector requires kv
	groupAll map[*group]struct{}        // groups whose selector requires no single label
}

// labelIndex finds a selector's pods and namespaces without scanning every
// object: each required label maps to the set of objects carrying it, and a
// selector starts from the smallest such set.
type labelIndex struct {
	namespaces map[string]*nsEntry
	nsBy       map[kv]map[*nsEntry]struct{}
}

func newLabelIndex() *labelIndex {
	return &labelIndex{namespaces: make(map[string]*nsEntry), nsBy: make(map[kv]map[*nsEntry]struct{})}
}

// ns returns the namespace entry, creating it if needed.
func (x *labelIndex) ns(name string) *nsEntry {
	n := x.namespaces[name]
	if n == nil {
		n = &nsEntry{
			name:     name,
			pods:     make(map[string]*podEntry),
			podsBy:   make(map[kv]map[*podEntry]struct{}),
			groupBy:  make(map[kv]map[*group]struct{}),
			groupAll: make(map[*group]struct{}),
		}
		x.namespaces[name] = n
	}
	return n
}

// maybeDropNS forgets a namespace entry that holds nothing any more.
func (x *labelIndex) maybeDropNS(n *nsEntry) {
	if !n.known && len(n.pods) == 0 && len(n.groupBy) == 0 && len(n.groupAll) == 0 {
		delete(x.namespaces, n.name)
	}
}

func addTo[K comparable, V comparable](m map[K]map[V]struct{}, k K, v V) {
	s := m[k]
	if s == nil {
		s = make(map[V]struct{}, 1)
		m[k] = s
	}
	s[v] = struct{}{}
}

func removeFrom[K comparable, V comparable](m map[K]map[V]struct{}, k K, v V) {
	if s := m[k]; s != nil {
		delete(s, v)
		if len(s) == 0 {
			delete(m, k)
		}
	}
}

func (n *nsEntry) indexPod(p *podEntry) {
	n.pods[p.name] = p
	for k, v := range p.labels {
		addTo(n.podsBy, kv{k, v}, p)
	}
}

func (n *nsEntry) unindexPod(p *podEntry) {
	delete(n.pods, p.name)
	for k, v := range p.labels {
		removeFrom(n.podsBy, kv{k, v}, p)
	}
}

func (x *labelIndex) setNamespaceLabels(n *nsEntry, known bool, l map[string]string) {
	for k, v := range n.labels {
		removeFrom(x.nsBy, kv{k, v}, n)
	}
	n.known, n.labels = known, l
	if !known {
		return
	}
	for k, v := range l {
		addTo(x.nsBy, kv{k, v}, n)
	}
}

// selector is a parsed label selector plus the labels it requires exactly
// (matchLabels and single-valued In expressions), which the index uses.
type selector struct {
	sel      labels.Selector
	required []kv // sorted by key
}

func (s *selector) matches(l map[string]string) bool {
	return s.sel.Matches(labels.Set(l))
}

// eachPod calls fn for every eligible pod of n that s selects.
func (n *nsEntry) eachPod(s *selector, fn func(*podEntry)) {
	visit := func(p *podEntry) {
		if p.eligible && s.matches(p.labels) {
			fn(p)
		}
	}
	if len(s.required) == 0 {
		for _, p := range n.pods {
			visit(p)
		}
		return
	}
	var smallest map[*podEntry]struct{}
	for i, r := range s.required {
		set := n.podsBy[r]
		if len(set) == 0 {
			return
		}
		if i == 0 || len(set) < len(smallest) {
			smallest = set
		}
	}
	for p := range smallest {
		visit(p)
	}
}

// eachNamespace calls fn for every known namespace s selects.
func (x *labelIndex) eachNamespace(s *selector, fn func(*nsEntry)) {
	visit := func(n *nsEntry) {
		if n.known && s.matches(n.labels) {
			fn(n)
		}
	}
	if len(s.required) == 0 {
		for _, n := range x.namespaces {
			visit(n)
		}
		return
	}
	var smallest map[*nsEntry]struct{}
	for i, r := range s.required {
		set := x.nsBy[r]
		if len(set) == 0 {
			return
		}
		if i == 0 || len(set) < len(smallest) {
			smallest = set
		}
	}
	for n := range smallest {
		visit(n)
	}
}
