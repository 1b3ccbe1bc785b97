// Package admission validates crd.seine.io's tiered policies and
// ClusterGroups as they are created or changed: the checks the CRDs'
// schemas and the ValidatingAdmissionPolicies of seine.yml cannot make,
// because they need other objects (the tier exists, a ClusterGroup
// exists, no other policy of the tier at the priority applies to the same
// pods) or parsing that CEL does not offer (label selectors, CIDRs). It is
// pure: what it reads of the cluster comes through Lookup, which
// seine-controller answers from its informers, and Handler serves it as a
// validating admission webhook. See README.md.
package admission

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	crdv1 "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/core/fqdn"
	"github.com/seine-cni/seine/core/tiers"
)

// Kinds this package validates.
const (
	KindClusterNetworkPolicy = "ClusterNetworkPolicy"
	KindNetworkPolicy        = "NetworkPolicy"
	KindClusterGroup         = "ClusterGroup"
	KindTier                 = "Tier"
)

// Policy is a tiered policy of crd.seine.io: a ClusterNetworkPolicy
// (Namespace empty) or a namespaced NetworkPolicy.
type Policy struct {
	Kind      string
	Namespace string
	Name      string
	Spec      *crdv1.ClusterNetworkPolicySpec
}

func (p Policy) String() string {
	if p.Namespace != "" {
		return fmt.Sprintf("%s %s/%s", p.Kind, p.Namespace, p.Name)
	}
	return p.Kind + " " + p.Name
}

// Lookup is what validation reads of the cluster. Every method answers
// from a complete view (Handler refuses while Ready is not nil).
type Lookup interface {
	// Ready is nil when the other methods see every object, or says why
	// they do not (yet).
	Ready() error
	// Tiers returns every tier that exists, the built-in ones always.
	Tiers() []tiers.Tier
	// Tier returns the tier name, or false.
	Tier(name string) (tiers.Tier, bool)
	// ClusterGroup returns the ClusterGroup name, or false.
	ClusterGroup(name string) (*crdv1.ClusterGroup, bool)
	// Confirming returns the view a refusal is judged again with (Review):
	// the same, but with the tiers and ClusterGroups validation names, and
	// the policies it reads again (Fresh), read from the cluster itself,
	// one read each. A cache may not hold yet a tier or group created a
	// moment ago, or may still hold a group as it was before a change, a
	// policy deleted or moved. Without a way to read the cluster, the view
	// itself.
	Confirming() Lookup
	// PoliciesAt returns the policies of both kinds whose tier (empty
	// counts as tiers.DefaultTier) is tier and whose priority is priority.
	PoliciesAt(tier string, priority float64) []Policy
	// Fresh is p as the view holds it now, or false when it is gone: in a
	// Confirming view read again from the cluster itself (a cache may
	// still hold a policy deleted or moved a moment ago), in a cached one
	// p as it is.
	Fresh(p Policy) (Policy, bool)
	// NamespacedIn returns the namespaced NetworkPolicies whose tier (empty
	// counts as tiers.DefaultTier) is tier.
	NamespacedIn(tier string) []Policy
	// AppliedToUsers names ("ClusterNetworkPolicy x") the policies that
	// name the ClusterGroup group in an appliedTo entry.
	AppliedToUsers(group string) []string
	// Parents returns the ClusterGroups naming group as a child group.
	Parents(group string) []string
}

// ValidatePolicy checks a ClusterNetworkPolicy or namespaced
// NetworkPolicy p against the cluster l shows. What the CRD's schema and
// its validation rules refuse (an unknown action or protocol, a priority
// out of range, appliedTo on the policy and on rules, no appliedTo at
// all) is not checked again: the kube-apiserver refuses it before it asks
// a webhook.
func ValidatePolicy(p Policy, l Lookup) field.ErrorList {
	spec := field.NewPath("spec")
	var errs field.ErrorList
	errs = append(errs, validateTier(p.Spec.Tier, l, spec.Child("tier"))...)
	for i, at := range p.Spec.AppliedTo {
		errs = append(errs, validateAppliedTo(at, p.Namespace, l, spec.Child("appliedTo").Index(i))...)
	}
	names := map[string]*field.Path{}
	for _, d := range []struct {
		name  string
		peers string
		rules []crdv1.Rule
	}{{"ingress", "from", p.Spec.Ingress}, {"egress", "to", p.Spec.Egress}} {
		for i, r := range d.rules {
			rp := spec.Child(d.name).Index(i)
			if r.Name != "" {
				if first, dup := names[r.Name]; dup {
					errs = append(errs, field.Duplicate(rp.Child("name"), r.Name+" (also "+first.String()+"): a rule's name is unique in its policy (status, the audit log and traces name rules by it)"))
				} else {
					names[r.Name] = rp.Child("name")
				}
			}
			for j, at := range r.AppliedTo {
				errs = append(errs, validateAppliedTo(at, p.Namespace, l, rp.Child("appliedTo").Index(j))...)
			}
			peers := r.From
			if d.name == "egress" {
				peers = r.To
			}
			for j, pr := range peers {
				if pr.FQDN != "" && d.name == "ingress" {
					errs = append(errs, field.Forbidden(rp.Child(d.peers).Index(j).Child("fqdn"), "domain names are learned from the DNS answers the rule's pods receive: an fqdn peer is for egress rules only"))
					continue
				}
				errs = append(errs, validatePeer(pr, p.Namespace, l, rp.Child(d.peers).Index(j))...)
			}
			for j, pt := range r.Ports {
				errs = append(errs, validatePort(pt, rp.Child("ports").Index(j))...)
			}
		}
	}
	if len(errs) == 0 {
		// Overlap is judged on selections that parse and groups that
		// exist only.
		errs = append(errs, validateOverlap(p, l)...)
	}
	return errs
}

func validateTier(name string, l Lookup, path *field.Path) field.ErrorList {
	if name == "" {
		name = tiers.DefaultTier
	}
	if _, ok := l.Tier(name); ok {
		return nil
	}
	ts := l.Tiers()
	slices.SortFunc(ts, func(a, b tiers.Tier) int { return int(a.Priority) - int(b.Priority) })
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = t.Name
	}
	return field.ErrorList{field.Invalid(path, name, fmt.Sprintf("tier %s does not exist: create it or use one of %s", name, strings.Join(names, ", ")))}
}

// validateAppliedTo checks one appliedTo entry of a policy (namespace: a
// namespaced policy's).
func validateAppliedTo(at crdv1.AppliedTo, namespace string, l Lookup, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if namespace != "" {
		if at.Group != "" {
			errs = append(errs, field.Forbidden(path.Child("group"), "a NetworkPolicy applies to pods of its own namespace: ClusterGroups are for ClusterNetworkPolicies"))
		}
		if at.NamespaceSelector != nil {
			errs = append(errs, field.Forbidden(path.Child("namespaceSelector"), fmt.Sprintf("a NetworkPolicy applies to pods of its own namespace (%s) only: leave it out, or use a ClusterNetworkPolicy", namespace)))
		}
		if at.PodSelector == nil && at.Group == "" && at.NamespaceSelector == nil {
			errs = append(errs, field.Required(path.Child("podSelector"), "an appliedTo entry of a NetworkPolicy selects pods of its namespace by podSelector ({} for all of them)"))
		}
		return append(errs, validateSelector(at.PodSelector, path.Child("podSelector"))...)
	}
	switch {
	case at.Group != "":
		if at.PodSelector != nil || at.NamespaceSelector != nil {
			return append(errs, field.Invalid(path, at.Group, "a group stands alone in its entry: put the selectors in the ClusterGroup, or in an entry of their own"))
		}
		g, ok := l.ClusterGroup(at.Group)
		if !ok {
			return append(errs, field.Invalid(path.Child("group"), at.Group, fmt.Sprintf("ClusterGroup %s does not exist: create it first", at.Group)))
		}
		if len(g.Spec.IPBlocks) > 0 {
			return append(errs, field.Invalid(path.Child("group"), at.Group, fmt.Sprintf("ClusterGroup %s holds ipBlocks: a policy applies to pods only (name it as a peer instead)", at.Group)))
		}
		for _, child := range g.Spec.ChildGroups {
			if cg, ok := l.ClusterGroup(child); ok && len(cg.Spec.IPBlocks) > 0 {
				return append(errs, field.Invalid(path.Child("group"), at.Group, fmt.Sprintf("ClusterGroup %s has child group %s holding ipBlocks: a policy applies to pods only", at.Group, child)))
			}
		}
	case at.PodSelector == nil && at.NamespaceSelector == nil:
		errs = append(errs, field.Required(path, "an appliedTo entry selects nothing: give podSelector, namespaceSelector or group ({} selects every pod)"))
	}
	errs = append(errs, validateSelector(at.PodSelector, path.Child("podSelector"))...)
	return append(errs, validateSelector(at.NamespaceSelector, path.Child("namespaceSelector"))...)
}

// validatePeer checks one peer of a rule.
func validatePeer(pr crdv1.Peer, namespace string, l Lookup, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	var set []string
	for _, f := range []struct {
		name string
		on   bool
	}{
		{"group", pr.Group != ""}, {"podSelector", pr.PodSelector != nil}, {"namespaceSelector", pr.NamespaceSelector != nil},
		{"ipBlock", pr.IPBlock != nil}, {"nodeSelector", pr.NodeSelector != nil}, {"fqdn", pr.FQDN != ""},
	} {
		if f.on {
			set = append(set, f.name)
		}
	}
	switch {
	case len(set) == 0:
		return field.ErrorList{field.Required(path, "a peer entry selects nothing: give one of podSelector, namespaceSelector, ipBlock, group, nodeSelector or fqdn (no entries at all means every peer)")}
	case len(set) > 1 && !(len(set) == 2 && pr.PodSelector != nil && pr.NamespaceSelector != nil):
		return field.ErrorList{field.Invalid(path, strings.Join(set, ", "), "a peer entry is one of: podSelector and/or namespaceSelector, ipBlock, group, nodeSelector, fqdn; put the others in entries of their own")}
	}
	switch {
	case pr.Group != "":
		if namespace != "" {
			return field.ErrorList{field.Forbidden(path.Child("group"), "ClusterGroups are for ClusterNetworkPolicies: select the peers with podSelector, namespaceSelector or ipBlock")}
		}
		if _, ok := l.ClusterGroup(pr.Group); !ok {
			errs = append(errs, field.Invalid(path.Child("group"), pr.Group, fmt.Sprintf("ClusterGroup %s does not exist: create it first", pr.Group)))
		}
	case pr.IPBlock != nil:
		errs = append(errs, validateIPBlock(*pr.IPBlock, path.Child("ipBlock"))...)
	case pr.NodeSelector != nil:
		errs = append(errs, validateSelector(pr.NodeSelector, path.Child("nodeSelector"))...)
	case pr.FQDN != "":
		if _, err := fqdn.ParsePattern(pr.FQDN); err != nil {
			errs = append(errs, field.Invalid(path.Child("fqdn"), pr.FQDN, err.Error()))
		}
	default:
		errs = append(errs, validateSelector(pr.PodSelector, path.Child("podSelector"))...)
		errs = append(errs, validateSelector(pr.NamespaceSelector, path.Child("namespaceSelector"))...)
	}
	return errs
}

// validateSelector checks a label selector as the kube-apiserver checks a
// Kubernetes NetworkPolicy's (operators, their values, label syntax).
func validateSelector(ls *metav1.LabelSelector, path *field.Path) field.ErrorList {
	if ls == nil {
		return nil
	}
	errs := metav1validation.ValidateLabelSelector(ls, metav1validation.LabelSelectorValidationOptions{}, path)
	if len(errs) == 0 {
		if _, err := metav1.LabelSelectorAsSelector(ls); err != nil {
			errs = append(errs, field.Invalid(path, ls.String(), err.Error()))
		}
	}
	return errs
}

// validateIPBlock checks that cidr parses and every except parses and lies
// inside it (smaller than it, of its family).
func validateIPBlock(b crdv1.IPBlock, path *field.Path) field.ErrorList {
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		return field.ErrorList{field.Invalid(path.Child("cidr"), b.CIDR, "not a CIDR (address/prefix length, e.g. 10.0.0.0/8 or fd00::/64)")}
	}
	cidr = cidr.Masked()
	var errs field.ErrorList
	for i, e := range b.Except {
		p := path.Child("except").Index(i)
		ex, err := netip.ParsePrefix(e)
		switch {
		case err != nil:
			errs = append(errs, field.Invalid(p, e, "not a CIDR (address/prefix length)"))
		case ex.Addr().Is4() != cidr.Addr().Is4() || ex.Bits() <= cidr.Bits() || !cidr.Contains(ex.Addr()):
			errs = append(errs, field.Invalid(p, e, fmt.Sprintf("not inside cidr %s: an except is a smaller block within cidr", b.CIDR)))
		}
	}
	return errs
}

// validatePort checks a port: a number in 1-65535 or a port name, and a
// range port..endPort of numbers with endPort >= port.
func validatePort(pt crdv1.NetworkPolicyPort, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if pt.Port != nil {
		switch pt.Port.Type {
		case intstr.Int:
			if v := pt.Port.IntVal; v < 1 || v > 65535 {
				errs = append(errs, field.Invalid(path.Child("port"), v, "a port number is 1-65535"))
			}
		default:
			for _, msg := range validation.IsValidPortName(pt.Port.StrVal) {
				errs = append(errs, field.Invalid(path.Child("port"), pt.Port.StrVal, "not a port name: "+msg))
			}
		}
	}
	if pt.EndPort == nil {
		return errs
	}
	end := *pt.EndPort
	switch {
	case pt.Port == nil:
		errs = append(errs, field.Required(path.Child("port"), fmt.Sprintf("endPort %d ends a range that starts at port: give port too", end)))
	case pt.Port.Type != intstr.Int:
		errs = append(errs, field.Invalid(path.Child("endPort"), end, fmt.Sprintf("a range takes port numbers: port is the name %q", pt.Port.StrVal)))
	case end > 65535:
		errs = append(errs, field.Invalid(path.Child("endPort"), end, "a port number is 1-65535"))
	case end < pt.Port.IntVal:
		errs = append(errs, field.Invalid(path.Child("endPort"), end, fmt.Sprintf("the range ends before it starts: endPort must be at least port (%d)", pt.Port.IntVal)))
	}
	return errs
}

// ValidateClusterGroup checks a ClusterGroup: its selectors and ipBlocks,
// its child groups (they exist and have no children of their own), and
// that it stays what the objects naming it need (a parent's child has no
// children; a group in a policy's appliedTo selects pods). Two kinds of
// member in one group, and a group its own child, are the CRD's
// validation rules'.
func ValidateClusterGroup(g *crdv1.ClusterGroup, l Lookup) field.ErrorList {
	spec := field.NewPath("spec")
	s := &g.Spec
	var errs field.ErrorList
	if s.PodSelector == nil && s.NamespaceSelector == nil && len(s.IPBlocks) == 0 && len(s.ChildGroups) == 0 {
		return field.ErrorList{field.Required(spec, "a ClusterGroup selects nothing: give podSelector and/or namespaceSelector ({} selects every pod), ipBlocks or childGroups")}
	}
	errs = append(errs, validateSelector(s.PodSelector, spec.Child("podSelector"))...)
	errs = append(errs, validateSelector(s.NamespaceSelector, spec.Child("namespaceSelector"))...)
	for i, b := range s.IPBlocks {
		errs = append(errs, validateIPBlock(b, spec.Child("ipBlocks").Index(i))...)
	}
	for i, child := range s.ChildGroups {
		p := spec.Child("childGroups").Index(i)
		if child == g.Name {
			continue // the CRD's validation rule refuses it
		}
		cg, ok := l.ClusterGroup(child)
		switch {
		case !ok:
			errs = append(errs, field.Invalid(p, child, fmt.Sprintf("ClusterGroup %s does not exist: create it first", child)))
		case len(cg.Spec.ChildGroups) > 0:
			errs = append(errs, field.Invalid(p, child, fmt.Sprintf("ClusterGroup %s has child groups of its own: ClusterGroups nest one level only", child)))
		}
	}
	if len(s.ChildGroups) > 0 {
		if parents := l.Parents(g.Name); len(parents) > 0 {
			errs = append(errs, field.Invalid(spec.Child("childGroups"), s.ChildGroups,
				fmt.Sprintf("ClusterGroup %s is a child group of %s: ClusterGroups nest one level only", g.Name, strings.Join(parents, ", "))))
		}
	}
	// A group in a policy's appliedTo (itself, or through a parent)
	// selects pods: its blocks, or its children's, would be left out of
	// that policy.
	users := l.AppliedToUsers(g.Name)
	for _, parent := range l.Parents(g.Name) {
		users = append(users, l.AppliedToUsers(parent)...)
	}
	if len(users) > 0 {
		why := fmt.Sprintf("ClusterGroup %s is in the appliedTo of %s (itself or through its parent), which applies to pods only", g.Name, strings.Join(users, ", "))
		if len(s.IPBlocks) > 0 {
			errs = append(errs, field.Invalid(spec.Child("ipBlocks"), len(s.IPBlocks), why+": it selects pods, not ipBlocks"))
		}
		for i, child := range s.ChildGroups {
			if cg, ok := l.ClusterGroup(child); ok && len(cg.Spec.IPBlocks) > 0 {
				errs = append(errs, field.Invalid(spec.Child("childGroups").Index(i), child, why+fmt.Sprintf(": its child group %s holds ipBlocks", child)))
			}
		}
	}
	return errs
}

// ValidateTierDelete refuses deleting a tier that a namespaced NetworkPolicy
// names (confirmed with a fresh read of the policy). ClusterNetworkPolicies
// are the CEL policy seine-tiers-in-use's: a param-bound policy reaches
// cluster-scoped params only from a cluster-scoped request, so namespaced
// policies are this webhook's.
func ValidateTierDelete(name string, l Lookup) field.ErrorList {
	for _, p := range l.NamespacedIn(name) {
		if p, ok := l.Fresh(p); ok && tierOf(p.Spec) == name {
			return field.ErrorList{field.Forbidden(field.NewPath("metadata", "name"),
				fmt.Sprintf("tier %s is in use by %s: delete the policy or move it to another tier first", name, p))}
		}
	}
	return nil
}
