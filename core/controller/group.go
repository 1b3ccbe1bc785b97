package controller

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
)

type groupKind uint8

const (
	appliedToKind groupKind = iota
	addressKind
)

// groupSelector is a normalized pod selection: pods matching pod either in
// namespace (when ns is nil) or in every namespace matching ns; or, when
// node is set (and nothing else), the Nodes matching node.
type groupSelector struct {
	namespace string
	pod       *selector
	ns        *selector
	node      *selector
}

// parseSelector parses a LabelSelector; nil selects everything, as an
// empty podSelector does.
func parseSelector(ls *metav1.LabelSelector) (*selector, error) {
	if ls == nil {
		ls = &metav1.LabelSelector{}
	}
	if len(ls.MatchExpressions) == 0 {
		// matchLabels only, as most selectors are: the labels of a stored
		// policy were validated by the apiserver, so they are not parsed
		// again (the key and value checks are regular expressions, a
		// tenth of a cold start's policy translation). The selector and
		// its text are the same as parsing gives.
		s := &selector{sel: labels.SelectorFromValidatedSet(ls.MatchLabels)}
		for k, v := range ls.MatchLabels {
			s.required = append(s.required, kv{k, v})
		}
		slices.SortFunc(s.required, func(a, b kv) int { return strings.Compare(a.k, b.k) })
		return s, nil
	}
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return nil, fmt.Errorf("parse label selector: %w", err)
	}
	s := &selector{sel: sel}
	reqs, _ := sel.Requirements()
	for _, r := range reqs {
		if (r.Operator() == selection.Equals || r.Operator() == selection.In || r.Operator() == selection.DoubleEquals) && r.Values().Len() == 1 {
			s.required = append(s.required, kv{r.Key(), r.Values().List()[0]})
		}
	}
	return s, nil
}

// normalized is the canonical text of the selection: two selections with
// the same text select the same pods, whatever order their terms came in.
func (g *groupSelector) normalized() string {
	if g.node != nil {
		return "nodeSelector=" + g.node.sel.String()
	}
	var b strings.Builder
	if g.ns == nil {
		b.WriteString("namespace=")
		b.WriteString(g.namespace)
	} else {
		b.WriteString("namespaceSelector=")
		b.WriteString(g.ns.sel.String())
	}
	b.WriteString(" podSelector=")
	b.WriteString(g.pod.sel.String())
	return b.String()
}

// groupName is the name of the group for a normalized selection; the
// AppliedToGroup and the AddressGroup of one selection share a name.
func groupName(normalized string) string {
	sum := sha256.Sum256([]byte(normalized))
	return hex.EncodeToString(sum[:16])
}

// group is an AppliedToGroup or AddressGroup being computed.
type group struct {
	kind     groupKind
	name     string
	sel      *groupSelector
	refs     int // rule or policy references
	members  map[*podEntry]struct{}
	policies map[*policyState]int // policies using it, with reference counts
	// span is an AddressGroup's span; an AppliedToGroup's is the nodes of
	// its members (its published span, the union of its policies', is
	// computed when it is published).
	span   *Span
	ag     *controlplane.AddressGroup   // last built, for span-only updates
	atg    *controlplane.AppliedToGroup // likewise
	dirty  bool                         // members changed since last stored
	stored bool
}

func (g *group) scope() string {
	if g.sel.ns == nil {
		return g.sel.namespace
	}
	return ""
}

// admits reports whether an eligible pod can be a member of a group of
// this kind: AppliedToGroups take it as soon as it is bound to a node,
// AddressGroups once it has an address.
func (g *group) admits(p *podEntry) bool {
	return p.eligible && (g.kind == appliedToKind || len(p.ips) > 0)
}

// matches reports whether the group selects pod p of namespace n.
func (g *group) matches(n *nsEntry, p *podEntry) bool {
	if !g.admits(p) {
		return false
	}
	if g.sel.ns == nil {
		if n.name != g.sel.namespace {
			return false
		}
	} else if !n.known || !g.sel.ns.matches(n.labels) {
		return false
	}
	return g.sel.pod.matches(p.labels)
}

// buildMembers returns the group's members sorted by namespace and name.
// Members share the pods' IP and port slices, which are never modified.
func (g *group) buildMembers() []controlplane.GroupMember {
	if len(g.members) == 0 {
		return nil
	}
	out := make([]controlplane.GroupMember, 0, len(g.members))
	for p := range g.members {
		if p.isNode {
			out = append(out, controlplane.GroupMember{Node: p.name, IPs: p.ips})
			continue
		}
		out = append(out, controlplane.GroupMember{
			Pod:        controlplane.PodReference{Name: p.name, Namespace: p.namespace},
			IPs:        p.ips,
			NamedPorts: p.ports,
			NodeName:   p.node,
		})
	}
	slices.SortFunc(out, func(a, b controlplane.GroupMember) int {
		if c := strings.Compare(a.Pod.Namespace, b.Pod.Namespace); c != 0 {
			return c
		}
		if c := strings.Compare(a.Pod.Name, b.Pod.Name); c != 0 {
			return c
		}
		return strings.Compare(a.Node, b.Node)
	})
	return out
}

// groupIndexKey is the label a group is indexed under in its namespace, so
// a pod change only looks at groups that could select it.
func (g *group) groupIndexKey() (kv, bool) {
	if len(g.sel.pod.required) == 0 {
		return kv{}, false
	}
	return g.sel.pod.required[0], true
}
