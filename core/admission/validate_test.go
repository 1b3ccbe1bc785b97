package admission

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"

	crdv1 "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/core/tiers"
)

// fakeLookup is a cluster of tiers, groups and policies, given as YAML.
type fakeLookup struct {
	synced bool
	// gone are policies (kind/namespace/name) the cache holds and the
	// cluster no longer does.
	gone     map[string]bool
	tiers    []tiers.Tier
	groups   map[string]*crdv1.ClusterGroup
	policies []Policy
	// cluster, when set, is what Confirming returns: the cluster as it
	// is now, where the fake is a cache of it.
	cluster *fakeLookup
}

func newFake(t *testing.T) *fakeLookup {
	f := &fakeLookup{synced: true, tiers: append(slices.Clone(tiers.BuiltIn), tiers.Tier{Name: "mine", Priority: 120}), groups: map[string]*crdv1.ClusterGroup{}}
	f.group(t, "web", `podSelector: {matchLabels: {app: web}}`)
	f.group(t, "nets", `ipBlocks: [{cidr: 10.0.0.0/8}]`)
	f.group(t, "parent", `childGroups: [web]`)
	f.group(t, "parent-of-nets", `childGroups: [nets]`)
	return f
}

func (f *fakeLookup) group(t *testing.T, name, spec string) {
	t.Helper()
	g := &crdv1.ClusterGroup{}
	if err := yaml.UnmarshalStrict([]byte(spec), &g.Spec); err != nil {
		t.Fatal(err)
	}
	g.Name = name
	f.groups[name] = g
}

func (f *fakeLookup) policy(t *testing.T, kind, ns, name, spec string) {
	t.Helper()
	f.policies = append(f.policies, Policy{Kind: kind, Namespace: ns, Name: name, Spec: parseSpec(t, spec)})
}

func parseSpec(t *testing.T, spec string) *crdv1.ClusterNetworkPolicySpec {
	t.Helper()
	var s crdv1.ClusterNetworkPolicySpec
	if err := yaml.UnmarshalStrict([]byte(spec), &s); err != nil {
		t.Fatalf("%s: %v", spec, err)
	}
	return &s
}

func (f *fakeLookup) Ready() error {
	if !f.synced {
		return errors.New("not synced (fake)")
	}
	return nil
}
func (f *fakeLookup) Tiers() []tiers.Tier { return slices.Clone(f.tiers) }
func (f *fakeLookup) Tier(name string) (tiers.Tier, bool) {
	i := slices.IndexFunc(f.tiers, func(t tiers.Tier) bool { return t.Name == name })
	if i < 0 {
		return tiers.Tier{}, false
	}
	return f.tiers[i], true
}
func (f *fakeLookup) ClusterGroup(name string) (*crdv1.ClusterGroup, bool) {
	g, ok := f.groups[name]
	return g, ok
}

func (f *fakeLookup) PoliciesAt(tier string, prio float64) []Policy {
	var out []Policy
	for _, p := range f.policies {
		t := p.Spec.Tier
		if t == "" {
			t = tiers.DefaultTier
		}
		if t == tier && p.Spec.Priority == prio {
			out = append(out, p)
		}
	}
	return out
}

func (f *fakeLookup) NamespacedIn(tier string) []Policy {
	var out []Policy
	for _, p := range f.policies {
		if p.Namespace != "" && tierOf(p.Spec) == tier {
			out = append(out, p)
		}
	}
	return out
}

func (f *fakeLookup) Confirming() Lookup {
	if f.cluster == nil {
		return f
	}
	return f.cluster
}

func (f *fakeLookup) Fresh(p Policy) (Policy, bool) {
	return p, !f.gone[p.Kind+"/"+p.Namespace+"/"+p.Name]
}

func (f *fakeLookup) AppliedToUsers(group string) []string {
	var out []string
	for _, p := range f.policies {
		ats := slices.Clone(p.Spec.AppliedTo)
		for _, r := range slices.Concat(p.Spec.Ingress, p.Spec.Egress) {
			ats = append(ats, r.AppliedTo...)
		}
		if slices.ContainsFunc(ats, func(a crdv1.AppliedTo) bool { return a.Group == group }) {
			out = append(out, p.String())
		}
	}
	return out
}

func (f *fakeLookup) Parents(group string) []string {
	var out []string
	for _, g := range f.groups {
		if slices.Contains(g.Spec.ChildGroups, group) {
			out = append(out, g.Name)
		}
	}
	slices.Sort(out)
	return out
}

// TestValidatePolicy: every refusal of a policy's own fields with its
// message (which names the field path), and objects that are accepted.
func TestValidatePolicy(t *testing.T) {
	f := newFake(t)
	for _, c := range []struct {
		name string
		ns   string // a namespaced NetworkPolicy's
		spec string
		want []string // the messages, in order; none: accepted
	}{
		{name: "accepted: every kind of peer and port", spec: `
tier: securityops
priority: 10
appliedTo: [{podSelector: {matchLabels: {app: web}}}, {namespaceSelector: {matchExpressions: [{key: env, operator: In, values: [prod]}]}}, {group: parent}]
ingress:
- action: Drop
  name: no-a
  from: [{podSelector: {}}, {namespaceSelector: {}, podSelector: {matchLabels: {a: b}}}, {ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}, {group: nets}, {group: web}, {nodeSelector: {matchLabels: {zone: a}}}]
  ports: [{port: 80}, {protocol: UDP, port: 1000, endPort: 2000}, {port: http}, {port: 53, endPort: 53}, {protocol: SCTP}]
egress:
- action: Allow
  name: out
  to: [{ipBlock: {cidr: "fd00::/64", except: ["fd00::/96"]}}, {fqdn: "*.example.com"}, {fqdn: Example.ORG.}]`},
		{name: "accepted: the default tier, per-rule appliedTo", spec: `
priority: 10
ingress: [{action: Allow, appliedTo: [{podSelector: {}}]}]`},
		{name: "accepted: a tier of your own", spec: `
tier: mine
priority: 1
appliedTo: [{podSelector: {}}]`},
		{name: "accepted: a namespaced policy", ns: "x", spec: `
priority: 3
appliedTo: [{podSelector: {}}]
ingress: [{action: Reject, from: [{podSelector: {matchLabels: {a: b}}}, {namespaceSelector: {}}]}]`},

		{name: "unknown tier", spec: `
tier: foo
priority: 10
appliedTo: [{podSelector: {}}]`,
			want: []string{`spec.tier: Invalid value: "foo": tier foo does not exist: create it or use one of emergency, securityops, mine, networkops, platform, application, baseline`}},
		{name: "bad selector expressions", spec: `
priority: 10
appliedTo: [{podSelector: {matchExpressions: [{key: app, operator: Equals, values: [a]}]}}, {namespaceSelector: {matchExpressions: [{key: app, operator: In}]}}]
ingress:
- action: Drop
  from: [{podSelector: {matchLabels: {"bad key!": x}}}, {nodeSelector: {matchExpressions: [{key: z, operator: Exists, values: [a]}]}}]`,
			want: []string{
				`spec.appliedTo[0].podSelector.matchExpressions[0].operator: Invalid value: "Equals": not a valid selector operator`,
				`spec.appliedTo[1].namespaceSelector.matchExpressions[0].values: Required value: must be specified when ` + "`operator`" + ` is 'In' or 'NotIn'`,
				`spec.ingress[0].from[0].podSelector.matchLabels: Invalid value: "bad key!": name part must consist of alphanumeric characters`,
				`spec.ingress[0].from[1].nodeSelector.matchExpressions[0].values: Forbidden: may not be specified when ` + "`operator`" + ` is 'Exists' or 'DoesNotExist'`,
			}},
		{name: "empty entries", spec: `
priority: 10
appliedTo: [{}]
egress: [{action: Drop, to: [{}]}]`,
			want: []string{
				`spec.appliedTo[0]: Required value: an appliedTo entry selects nothing: give podSelector, namespaceSelector or group ({} selects every pod)`,
				`spec.egress[0].to[0]: Required value: a peer entry selects nothing: give one of podSelector, namespaceSelector, ipBlock, group, nodeSelector or fqdn (no entries at all means every peer)`,
			}},
		{name: "mixed peer and appliedTo entries", spec: `
priority: 10
appliedTo: [{group: web, podSelector: {}}]
ingress: [{action: Drop, from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}, {group: web, nodeSelector: {}}]}]`,
			want: []string{
				`spec.appliedTo[0]: Invalid value: "web": a group stands alone in its entry: put the selectors in the ClusterGroup, or in an entry of their own`,
				`spec.ingress[0].from[0]: Invalid value: "podSelector, ipBlock": a peer entry is one of: podSelector and/or namespaceSelector, ipBlock, group, nodeSelector, fqdn; put the others in entries of their own`,
				`spec.ingress[0].from[1]: Invalid value: "group, nodeSelector": a peer entry is one of`,
			}},
		{name: "fqdn peers", spec: `
priority: 10
appliedTo: [{podSelector: {}}]
ingress: [{action: Allow, from: [{fqdn: example.com}]}]
egress: [{action: Allow, to: [{fqdn: "www.*.example.com"}, {fqdn: example.com, podSelector: {}}]}]`,
			want: []string{
				`spec.ingress[0].from[0].fqdn: Forbidden: domain names are learned from the DNS answers the rule's pods receive: an fqdn peer is for egress rules only`,
				`spec.egress[0].to[0].fqdn: Invalid value: "www.*.example.com": domain name "www.*.example.com": want labels`,
				`spec.egress[0].to[1]: Invalid value: "podSelector, fqdn": a peer entry is one of`,
			}},
		{name: "ipBlocks", spec: `
priority: 10
appliedTo: [{podSelector: {}}]
ingress:
- action: Drop
  from: [{ipBlock: {cidr: 10.0.0/8}}, {ipBlock: {cidr: 10.0.0.0/8, except: [192.168.0.0/16, 10.0.0.0/8, "fd00::/64", nope]}}]`,
			want: []string{
				`spec.ingress[0].from[0].ipBlock.cidr: Invalid value: "10.0.0/8": not a CIDR (address/prefix length, e.g. 10.0.0.0/8 or fd00::/64)`,
				`spec.ingress[0].from[1].ipBlock.except[0]: Invalid value: "192.168.0.0/16": not inside cidr 10.0.0.0/8: an except is a smaller block within cidr`,
				`spec.ingress[0].from[1].ipBlock.except[1]: Invalid value: "10.0.0.0/8": not inside cidr 10.0.0.0/8`,
				`spec.ingress[0].from[1].ipBlock.except[2]: Invalid value: "fd00::/64": not inside cidr 10.0.0.0/8`,
				`spec.ingress[0].from[1].ipBlock.except[3]: Invalid value: "nope": not a CIDR (address/prefix length)`,
			}},
		{name: "ports", spec: `
priority: 10
appliedTo: [{podSelector: {}}]
egress:
- action: Drop
  ports: [{port: 8080, endPort: 80}, {endPort: 90}, {port: http, endPort: 90}, {port: 0}, {port: 70000}, {port: 1, endPort: 70000}, {port: "not_a name"}]`,
			want: []string{
				`spec.egress[0].ports[0].endPort: Invalid value: 80: the range ends before it starts: endPort must be at least port (8080)`,
				`spec.egress[0].ports[1].port: Required value: endPort 90 ends a range that starts at port: give port too`,
				`spec.egress[0].ports[2].endPort: Invalid value: 90: a range takes port numbers: port is the name "http"`,
				`spec.egress[0].ports[3].port: Invalid value: 0: a port number is 1-65535`,
				`spec.egress[0].ports[4].port: Invalid value: 70000: a port number is 1-65535`,
				`spec.egress[0].ports[5].endPort: Invalid value: 70000: a port number is 1-65535`,
				`spec.egress[0].ports[6].port: Invalid value: "not_a name": not a port name:`,
			}},
		{name: "ClusterGroups that do not exist or hold ipBlocks in appliedTo", spec: `
priority: 10
appliedTo: [{group: nope}, {group: nets}, {group: parent-of-nets}]
ingress: [{action: Drop, from: [{group: gone}]}]`,
			want: []string{
				`spec.appliedTo[0].group: Invalid value: "nope": ClusterGroup nope does not exist: create it first`,
				`spec.appliedTo[1].group: Invalid value: "nets": ClusterGroup nets holds ipBlocks: a policy applies to pods only (name it as a peer instead)`,
				`spec.appliedTo[2].group: Invalid value: "parent-of-nets": ClusterGroup parent-of-nets has child group nets holding ipBlocks: a policy applies to pods only`,
				`spec.ingress[0].from[0].group: Invalid value: "gone": ClusterGroup gone does not exist: create it first`,
			}},
		{name: "rule names", spec: `
priority: 10
appliedTo: [{podSelector: {}}]
ingress: [{action: Drop, name: x}, {action: Drop}, {action: Drop}]
egress: [{action: Drop, name: x}]`,
			want: []string{`spec.egress[0].name: Duplicate value: "x (also spec.ingress[0].name): a rule's name is unique in its policy`}},
		{name: "a namespaced policy's reach", ns: "x", spec: `
priority: 10
appliedTo: [{namespaceSelector: {}}, {group: web}]
ingress: [{action: Drop, from: [{group: web}]}]`,
			want: []string{
				`spec.appliedTo[0].namespaceSelector: Forbidden: a NetworkPolicy applies to pods of its own namespace (x) only: leave it out, or use a ClusterNetworkPolicy`,
				`spec.appliedTo[1].group: Forbidden: a NetworkPolicy applies to pods of its own namespace: ClusterGroups are for ClusterNetworkPolicies`,
				`spec.ingress[0].from[0].group: Forbidden: ClusterGroups are for ClusterNetworkPolicies: select the peers with podSelector, namespaceSelector or ipBlock`,
			}},
		{name: "a namespaced policy's empty appliedTo entry", ns: "x", spec: `
priority: 10
appliedTo: [{}]`,
			want: []string{`spec.appliedTo[0].podSelector: Required value: an appliedTo entry of a NetworkPolicy selects pods of its namespace by podSelector ({} for all of them)`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			kind := KindClusterNetworkPolicy
			if c.ns != "" {
				kind = KindNetworkPolicy
			}
			errs := ValidatePolicy(Policy{Kind: kind, Namespace: c.ns, Name: "p", Spec: parseSpec(t, c.spec)}, f)
			checkErrors(t, errs, c.want)
		})
	}
}

// checkErrors compares errors with the wanted messages, each a prefix of
// its error's text.
func checkErrors(t *testing.T, errs field.ErrorList, want []string) {
	t.Helper()
	var got []string
	for _, e := range errs {
		got = append(got, e.Error())
	}
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		ok = strings.HasPrefix(got[i], want[i])
	}
	if !ok {
		t.Errorf("got %d errors:\n  %s\nwant %d:\n  %s", len(got), strings.Join(got, "\n  "), len(want), strings.Join(want, "\n  "))
	}
}

// TestValidateClusterGroup: a group's own fields, its children, and what
// the objects naming it need of it.
func TestValidateClusterGroup(t *testing.T) {
	f := newFake(t)
	f.policy(t, KindClusterNetworkPolicy, "", "on-web", `{priority: 5, appliedTo: [{group: web}], ingress: [{action: Drop}]}`)
	f.policy(t, KindClusterNetworkPolicy, "", "on-parent", `{priority: 6, ingress: [{action: Drop, appliedTo: [{group: parent}]}]}`)
	f.group(t, "lone", `podSelector: {}`)
	for _, c := range []struct {
		name, group, spec string
		want              []string
	}{
		{name: "accepted: pods", group: "new", spec: `{podSelector: {matchLabels: {a: b}}, namespaceSelector: {matchExpressions: [{key: env, operator: NotIn, values: [dev]}]}}`},
		{name: "accepted: ipBlocks", group: "new", spec: `ipBlocks: [{cidr: 10.0.0.0/8, except: [10.0.0.0/9]}]`},
		{name: "accepted: children", group: "new", spec: `childGroups: [web, nets]`},
		{name: "accepted: web changes its pods", group: "web", spec: `podSelector: {matchLabels: {app: web2}}`},
		{name: "empty", group: "new", spec: `{}`,
			want: []string{`spec: Required value: a ClusterGroup selects nothing: give podSelector and/or namespaceSelector ({} selects every pod), ipBlocks or childGroups`}},
		{name: "bad selectors and blocks", group: "new", spec: `{podSelector: {matchExpressions: [{key: a, operator: In}]}}`,
			want: []string{`spec.podSelector.matchExpressions[0].values: Required value`}},
		{name: "bad blocks", group: "new", spec: `ipBlocks: [{cidr: 10.0.0.0/8, except: [11.0.0.0/16]}, {cidr: x}]`,
			want: []string{
				`spec.ipBlocks[0].except[0]: Invalid value: "11.0.0.0/16": not inside cidr 10.0.0.0/8`,
				`spec.ipBlocks[1].cidr: Invalid value: "x": not a CIDR`,
			}},
		{name: "children that do not exist or nest", group: "new", spec: `childGroups: [nope, parent]`,
			want: []string{
				`spec.childGroups[0]: Invalid value: "nope": ClusterGroup nope does not exist: create it first`,
				`spec.childGroups[1]: Invalid value: "parent": ClusterGroup parent has child groups of its own: ClusterGroups nest one level only`,
			}},
		{name: "a child gets children", group: "web", spec: `childGroups: [lone]`,
			want: []string{`spec.childGroups: Invalid value: ["lone"]: ClusterGroup web is a child group of parent: ClusterGroups nest one level only`}},
		{name: "a group in an appliedTo becomes ipBlocks", group: "web", spec: `ipBlocks: [{cidr: 10.0.0.0/8}]`,
			want: []string{`spec.ipBlocks: Invalid value: 1: ClusterGroup web is in the appliedTo of ClusterNetworkPolicy on-web, ClusterNetworkPolicy on-parent (itself or through its parent), which applies to pods only: it selects pods, not ipBlocks`}},
		{name: "a group in an appliedTo takes a child of ipBlocks", group: "parent", spec: `childGroups: [web, nets]`,
			want: []string{`spec.childGroups[1]: Invalid value: "nets": ClusterGroup parent is in the appliedTo of ClusterNetworkPolicy on-parent (itself or through its parent), which applies to pods only: its child group nets holds ipBlocks`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := &crdv1.ClusterGroup{}
			g.Name = c.group
			if err := yaml.UnmarshalStrict([]byte(c.spec), &g.Spec); err != nil {
				t.Fatal(err)
			}
			checkErrors(t, ValidateClusterGroup(g, f), c.want)
		})
	}
}
