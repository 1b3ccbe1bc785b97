package admission

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/util/validation/field"

	crdv1 "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/core/tiers"
)

// Two policies of one tier at one priority are ordered by their internal
// names (the objects' UIDs): deterministic, but nobody chose it. That is
// harmless when they never judge the same connection, and a surprise when
// they do, so such a pair is refused when they overlap:
//
//	Policies P and Q overlap when, for ingress or for egress, both have
//	rules in that direction, and an appliedTo entry of P's rules in that
//	direction and one of Q's can select the same pod: there is a
//	namespace and a pod in it, with some labels, that both entries
//	select.
//
// The appliedTo entries of a direction's rules are the policy's appliedTo,
// or, when it has none, the rules' own. "Can select" is about labels, not
// about the pods that exist now: {app: web} and {tier: front} overlap (a
// pod may carry both labels), {app: web} and {app: db} do not, whatever
// runs. So a pair accepted today does not start to compete when a pod is
// labelled tomorrow. A ClusterGroup entry stands for the selections of
// the group (or of its child groups) as they are at admission. A
// namespaced policy's entries select in its namespace only, which is the
// namespace label kubernetes.io/metadata.name the kube-apiserver sets on
// every namespace; two namespaced policies of different namespaces never
// overlap.

// podSelection is the label requirements of a namespace and of a pod in
// it that one appliedTo entry (or one of its group's selections) selects.
type podSelection struct {
	ns, pod []requirement
}

// requirement is one term of a label selector, as written: an existing
// policy's selectors are not parsed again (that costs more than the whole
// check), and one that would not parse only makes the check approximate.
type requirement struct {
	key    string
	op     selection.Operator
	values []string
}

// entry is an appliedTo entry of a policy: spec.appliedTo[index], or,
// with a dir, spec.<dir>[rule].appliedTo[index].
type entry struct {
	dir         string
	rule, index int
	at          *crdv1.AppliedTo
}

func (e entry) path() *field.Path {
	if e.dir == "" {
		return field.NewPath("spec", "appliedTo").Index(e.index)
	}
	return field.NewPath("spec", e.dir).Index(e.rule).Child("appliedTo").Index(e.index)
}

// appliedToOf returns the appliedTo entries the rules of one direction
// apply to; none when the policy has no rules there.
func appliedToOf(spec *crdv1.ClusterNetworkPolicySpec, dir string) []entry {
	rules := spec.Ingress
	if dir == "egress" {
		rules = spec.Egress
	}
	if len(rules) == 0 {
		return nil
	}
	var out []entry
	if len(spec.AppliedTo) > 0 {
		for i := range spec.AppliedTo {
			out = append(out, entry{index: i, at: &spec.AppliedTo[i]})
		}
		return out
	}
	for i := range rules {
		for j := range rules[i].AppliedTo {
			out = append(out, entry{dir: dir, rule: i, index: j, at: &rules[i].AppliedTo[j]})
		}
	}
	return out
}

// selections is what an entry of a policy of namespace (empty: a
// cluster-wide one) selects. Entries that do not parse or name no group
// that exists select nothing here (ValidatePolicy refuses them first).
func selections(at *crdv1.AppliedTo, namespace string, l Lookup) []podSelection {
	if namespace != "" {
		if at.PodSelector == nil {
			return nil
		}
		ns := requirement{corev1.LabelMetadataName, selection.Equals, []string{namespace}}
		return []podSelection{{ns: []requirement{ns}, pod: requirements(at.PodSelector)}}
	}
	if at.Group == "" {
		return selectionOf(at.PodSelector, at.NamespaceSelector)
	}
	g, ok := l.ClusterGroup(at.Group)
	if !ok {
		return nil
	}
	if len(g.Spec.ChildGroups) == 0 {
		return selectionOf(g.Spec.PodSelector, g.Spec.NamespaceSelector)
	}
	var out []podSelection
	for _, child := range g.Spec.ChildGroups {
		if cg, ok := l.ClusterGroup(child); ok && len(cg.Spec.ChildGroups) == 0 {
			out = append(out, selectionOf(cg.Spec.PodSelector, cg.Spec.NamespaceSelector)...)
		}
	}
	return out
}

// selectionOf is a cluster-wide selection: podSelector alone in every
// namespace, namespaceSelector alone every pod of its namespaces.
func selectionOf(podSel, nsSel *metav1.LabelSelector) []podSelection {
	if podSel == nil && nsSel == nil {
		return nil
	}
	return []podSelection{{ns: requirements(nsSel), pod: requirements(podSel)}}
}

var operators = map[metav1.LabelSelectorOperator]selection.Operator{
	metav1.LabelSelectorOpIn: selection.In, metav1.LabelSelectorOpNotIn: selection.NotIn,
	metav1.LabelSelectorOpExists: selection.Exists, metav1.LabelSelectorOpDoesNotExist: selection.DoesNotExist,
}

// requirements are a selector's terms; nil selects everything.
func requirements(ls *metav1.LabelSelector) []requirement {
	if ls == nil {
		return nil
	}
	out := make([]requirement, 0, len(ls.MatchLabels)+len(ls.MatchExpressions))
	for k, v := range ls.MatchLabels {
		out = append(out, requirement{k, selection.Equals, []string{v}})
	}
	for _, e := range ls.MatchExpressions {
		out = append(out, requirement{e.Key, operators[e.Operator], e.Values})
	}
	return out
}

// satisfiable reports whether some set of labels meets every requirement
// of a and of b. It is exact for label selectors: values are arbitrary
// strings, so only requirements of one key can contradict each other (a
// value both required and excluded, two disjoint sets of values, a key
// both required and absent).
func satisfiable(a, b []requirement) bool {
	all := slices.Concat(a, b)
	for i, r := range all {
		if slices.ContainsFunc(all[:i], func(o requirement) bool { return o.key == r.key }) {
			continue // its key was judged
		}
		var in []string // nil: any value
		var notIn []string
		exists, notExists := false, false
		for _, o := range all[i:] {
			if o.key != r.key {
				continue
			}
			switch o.op {
			case selection.Equals, selection.DoubleEquals, selection.In:
				exists = true
				if in == nil {
					in = append([]string{}, o.values...)
				} else {
					in = slices.DeleteFunc(in, func(v string) bool { return !slices.Contains(o.values, v) })
				}
			case selection.NotEquals, selection.NotIn:
				notIn = append(notIn, o.values...)
			case selection.Exists:
				exists = true
			case selection.DoesNotExist:
				notExists = true
			default:
				// An operator that does not parse: assume it can be met
				// (an overlap refused is safer than one missed).
			}
		}
		if notExists && exists {
			return false
		}
		if in != nil && !slices.ContainsFunc(in, func(v string) bool { return !slices.Contains(notIn, v) }) {
			return false
		}
	}
	return true
}

// overlapping returns the first pair of entries, one of a and one of b,
// that can select the same pod.
func overlapping(a []entry, aNS string, b []entry, bNS string, l Lookup) (pa, pb *field.Path, ok bool) {
	if len(a) == 0 || len(b) == 0 {
		return nil, nil, false
	}
	sb := make([][]podSelection, len(b))
	for i, eb := range b {
		sb[i] = selections(eb.at, bNS, l)
	}
	for _, ea := range a {
		sa := selections(ea.at, aNS, l)
		for i, eb := range b {
			for _, x := range sa {
				for _, y := range sb[i] {
					if satisfiable(x.ns, y.ns) && satisfiable(x.pod, y.pod) {
						return ea.path(), eb.path(), true
					}
				}
			}
		}
	}
	return nil, nil, false
}

// validateOverlap refuses p when another policy of its tier at its
// priority overlaps it (above).
func validateOverlap(p Policy, l Lookup) field.ErrorList {
	tier := tierOf(p.Spec)
	overlaps := func(q Policy) (dir string, pa, qa *field.Path, ok bool) {
		for _, dir := range []string{"ingress", "egress"} {
			if pa, qa, ok := overlapping(appliedToOf(p.Spec, dir), p.Namespace, appliedToOf(q.Spec, dir), q.Namespace, l); ok {
				return dir, pa, qa, true
			}
		}
		return "", nil, nil, false
	}
	var errs field.ErrorList
	for _, q := range l.PoliciesAt(tier, p.Spec.Priority) {
		if q.Kind == p.Kind && q.Namespace == p.Namespace && q.Name == p.Name {
			continue
		}
		if _, _, _, ok := overlaps(q); !ok {
			continue
		}
		// Judged again on the policy as the view holds it now (as the
		// cluster does, in a Confirming view: Review).
		q, fresh := l.Fresh(q)
		if !fresh || tierOf(q.Spec) != tier || q.Spec.Priority != p.Spec.Priority {
			continue
		}
		dir, pa, qa, ok := overlaps(q)
		if !ok {
			continue
		}
		errs = append(errs, field.Invalid(field.NewPath("spec", "priority"), p.Spec.Priority, fmt.Sprintf(
			"%s is in tier %s at priority %v too, and its %s rules may apply to the same pods (this policy's %s and its %s can select the same pod): "+
				"the order of the two would be arbitrary; give one of them another priority",
			q, tier, p.Spec.Priority, dir, pa, qa)))
	}
	return errs
}

// tierOf is a policy's tier, tiers.DefaultTier when it names none.
func tierOf(s *crdv1.ClusterNetworkPolicySpec) string {
	if s.Tier == "" {
		return tiers.DefaultTier
	}
	return s.Tier
}
