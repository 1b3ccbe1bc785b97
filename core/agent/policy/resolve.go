package policy

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/util/intstr"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/core/tiers"
)

// Pod is a local pod as the agent knows it: the pods of this node with an
// OVS port.
type Pod struct {
	Namespace, Name string
	OFPort          uint32
	IPs             []netip.Addr
}

// resolved is a State resolved against the node's pods: the pipeline's
// input, the generations it realizes, the policies with a rule the node
// cannot enforce, and every problem met.
type resolved struct {
	set      pipeline.PolicySet
	gens     map[string]int64
	failed   map[string]Realization
	problems []string
	// orders is the evaluation order of every tiered rule, by
	// "<policy UID>/<key>": the input of the priority allocation.
	orders map[string]tiers.Order
}

// errMissing marks a group the State lacks: the watch has not delivered it
// yet, a transient state rather than a policy the node cannot enforce.
var errMissing = errors.New("missing")

// resolve turns the controller's objects into rules over local ofports:
//
//   - a policy applies to the local pods among the members of its
//     AppliedToGroups (matched by namespace/name); without any, it adds
//     nothing on this node; a rule with AppliedToGroups of its own (a
//     tiered policy's per-rule appliedTo) applies to those of its groups'
//     members only;
//   - those pods are isolated for ingress/egress when the policy's types
//     say so, even if it has no rule in that direction;
//   - a rule's peers are the IPs of its AddressGroups' members and its
//     ipBlocks (with except);
//   - numbered services become one rule; a named port is resolved against
//     the local target pods' named ports (ingress) or the peer members'
//     (egress), and each distinct number it resolves to becomes a rule of
//     its own ("<index>/<protocol>/<port>") with only the targets or peers
//     that use that number. A named port resolves to nothing on an ipBlock.
//
// A policy whose AppliedToGroup the State lacks is skipped (its pods are
// unknown); a rule whose AddressGroup is missing, or that is invalid, is
// left out while the policy still isolates its pods, so an incomplete
// State allows less than intended, never more. Both are reported, and such
// a policy does not count as realized. A rule that is invalid rather than
// incomplete (a bad port, protocol or address) also marks its policy as
// failed, with the reason.
func resolve(s State, pods []Pod, sources []netip.Addr) resolved {
	r := resolved{gens: map[string]int64{}, failed: map[string]Realization{}, orders: map[string]tiers.Order{}}
	local := localPods(pods)
	ingress, egress := map[uint32]bool{}, map[uint32]bool{}
	for _, name := range sortedKeys(s.NetworkPolicies) {
		np := s.NetworkPolicies[name]
		if np == nil {
			continue
		}
		o := resolveOne(name, np, s, local)
		r.problems = append(r.problems, o.problems...)
		if o.realized {
			r.gens[name] = np.Generation
		}
		if o.failed != nil {
			r.failed[name] = *o.failed
		}
		for _, p := range o.ingress {
			ingress[p] = true
		}
		for _, p := range o.egress {
			egress[p] = true
		}
		maps.Copy(r.orders, o.orders)
		r.set.Rules = append(r.set.Rules, o.rules...)
	}
	r.set.IngressIsolated = sortedSet(ingress)
	r.set.EgressIsolated = sortedSet(egress)
	r.set.NodeSources = slices.Clone(sources)
	return r
}

func localPods(pods []Pod) map[string]Pod {
	local := make(map[string]Pod, len(pods))
	for _, p := range pods {
		local[p.Namespace+"/"+p.Name] = p
	}
	return local
}

// policyResult is one policy resolved: its rules (tiered ones without
// their priority), the ports it isolates, whether it is realized, why it
// failed, the problems met and the order of its tiered rules.
type policyResult struct {
	rules           []pipeline.PolicyRule
	ingress, egress []uint32
	realized        bool
	failed          *Realization
	problems        []string
	orders          map[string]tiers.Order
}

// resolveOne resolves the policy name of s (see resolve).
func resolveOne(name string, np *controlplane.NetworkPolicy, s State, local map[string]Pod) policyResult {
	o := policyResult{orders: map[string]tiers.Order{}}
	rules, targets, ruleErrs, err := resolvePolicy(np, s, local, o.orders)
	if err != nil {
		o.problems = append(o.problems, fmt.Sprintf("policy %s: %v", name, err))
		return o
	}
	var invalid []string
	for _, e := range ruleErrs {
		o.problems = append(o.problems, fmt.Sprintf("policy %s: %v", name, e))
		if !errors.Is(e, errMissing) {
			invalid = append(invalid, e.Error())
		}
	}
	o.realized = len(ruleErrs) == 0
	if len(invalid) > 0 {
		o.failed = &Realization{Generation: np.Generation, Error: strings.Join(invalid, "; ")}
	}
	for _, t := range targets {
		if slices.Contains(np.PolicyTypes, controlplane.PolicyTypeIngress) {
			o.ingress = append(o.ingress, t.pod.OFPort)
		}
		if slices.Contains(np.PolicyTypes, controlplane.PolicyTypeEgress) {
			o.egress = append(o.egress, t.pod.OFPort)
		}
	}
	o.rules = rules
	return o
}

// target is a local pod a policy applies to, with its named ports as its
// AppliedToGroup lists them.
type target struct {
	pod   Pod
	named []controlplane.NamedPort
}

// resolvePolicy resolves one policy. Without its AppliedToGroups it fails
// whole; a rule that cannot be resolved (a missing AddressGroup, a bad
// port) is left out and reported in ruleErrs while the policy still
// isolates its pods: the policy then allows less than intended, never more.
func resolvePolicy(np *controlplane.NetworkPolicy, s State, local map[string]Pod, orders map[string]tiers.Order) (rules []pipeline.PolicyRule, targets []target, ruleErrs []error, err error) {
	uid := string(np.UID)
	if uid == "" {
		uid = np.Name
	}
	targets, err = localTargets(np.AppliedToGroups, s, local)
	if err != nil || len(targets) == 0 {
		return nil, nil, nil, err
	}
	for i, rule := range np.Rules {
		// A rule with AppliedToGroups of its own (a tiered policy's
		// per-rule appliedTo) applies to their local pods only.
		ruleTargets := targets
		if len(rule.AppliedToGroups) > 0 {
			if ruleTargets, err = localTargets(rule.AppliedToGroups, s, local); err != nil {
				ruleErrs = append(ruleErrs, fmt.Errorf("rule %d: %w", i, err))
				continue
			}
			if len(ruleTargets) == 0 {
				continue
			}
		}
		var dir pipeline.PolicyDirection
		var peer controlplane.NetworkPolicyPeer
		switch rule.Direction {
		case controlplane.DirectionIn:
			dir, peer = pipeline.PolicyIngress, rule.From
			if np.TierPriority == nil && !slices.Contains(np.PolicyTypes, controlplane.PolicyTypeIngress) {
				continue
			}
		case controlplane.DirectionOut:
			dir, peer = pipeline.PolicyEgress, rule.To
			if np.TierPriority == nil && !slices.Contains(np.PolicyTypes, controlplane.PolicyTypeEgress) {
				continue
			}
		default:
			ruleErrs = append(ruleErrs, fmt.Errorf("rule %d: direction %q", i, rule.Direction))
			continue
		}
		members, err := peerMembers(peer, s)
		groupMissing := err != nil
		var rs []pipeline.PolicyRule
		if err == nil {
			rs, err = resolveRule(uid, i, dir, rule, ruleTargets, members, peer.IPBlocks)
		}
		if err == nil {
			err = tierRules(np, rule, rs)
		}
		if err != nil && np.TierPriority != nil {
			// A tiered rule must not open what it would deny: see
			// failClosed.
			var how string
			if rs, how = failClosed(uid, i, dir, rule, ruleTargets, members, peer.IPBlocks, groupMissing, np); how != "" {
				err = fmt.Errorf("%w (%s)", err, how)
			}
		} else if err != nil {
			rs = nil
		}
		if err != nil {
			ruleErrs = append(ruleErrs, fmt.Errorf("rule %d: %w", i, err))
		}
		if np.TierPriority != nil {
			for _, r := range rs {
				orders[r.Policy+"/"+r.Key] = tierOrder(np, rule)
			}
		}
		rules = append(rules, rs...)
	}
	return rules, targets, ruleErrs, nil
}

// localTargets is the local pods among the members of groups, by ofport.
func localTargets(groups []string, s State, local map[string]Pod) ([]target, error) {
	var targets []target
	seen := map[uint32]bool{}
	for _, g := range groups {
		atg, ok := s.AppliedToGroups[g]
		if !ok || atg == nil {
			return nil, fmt.Errorf("appliedToGroup %s is %w", g, errMissing)
		}
		for _, m := range atg.Members {
			p, ok := local[m.Pod.Namespace+"/"+m.Pod.Name]
			if !ok || seen[p.OFPort] {
				continue
			}
			seen[p.OFPort] = true
			targets = append(targets, target{pod: p, named: m.NamedPorts})
		}
	}
	sort.Slice(targets, func(i, j int) bool { return targets[i].pod.OFPort < targets[j].pod.OFPort })
	return targets, nil
}

func peerMembers(peer controlplane.NetworkPolicyPeer, s State) ([]controlplane.GroupMember, error) {
	var out []controlplane.GroupMember
	for _, g := range peer.AddressGroups {
		ag, ok := s.AddressGroups[g]
		if !ok || ag == nil {
			return nil, fmt.Errorf("addressGroup %s is %w", g, errMissing)
		}
		out = append(out, ag.Members...)
	}
	return out, nil
}

// portKey is a resolved (protocol, port).
type portKey struct {
	proto uint8
	port  uint16
}

func resolveRule(uid string, index int, dir pipeline.PolicyDirection, rule controlplane.NetworkPolicyRule,
	targets []target, members []controlplane.GroupMember, blocks []controlplane.IPBlock) ([]pipeline.PolicyRule, error) {
	base := pipeline.PolicyRule{Policy: uid, Key: fmt.Sprint(index), Direction: dir}
	for _, t := range targets {
		base.Targets = append(base.Targets, t.pod.OFPort)
	}
	for _, m := range members {
		base.Peers = append(base.Peers, memberPeers(m)...)
	}
	for _, b := range blocks {
		p, err := ipBlockPeer(b)
		if err != nil {
			return nil, err
		}
		base.Peers = append(base.Peers, p)
	}
	var named []controlplane.Service
	for _, svc := range rule.Services {
		proto, err := protocol(svc.Protocol)
		if err != nil {
			return nil, err
		}
		if svc.Port != nil && svc.Port.Type == intstr.String {
			named = append(named, svc)
			continue
		}
		ps := pipeline.PolicyService{Protocol: proto}
		if svc.Port != nil {
			if svc.Port.IntVal < 1 || svc.Port.IntVal > 65535 {
				return nil, fmt.Errorf("port %d out of range", svc.Port.IntVal)
			}
			ps.Port = uint16(svc.Port.IntVal)
			if svc.EndPort != nil {
				if *svc.EndPort < svc.Port.IntVal || *svc.EndPort > 65535 {
					return nil, fmt.Errorf("port range %d-%d", svc.Port.IntVal, *svc.EndPort)
				}
				ps.EndPort = uint16(*svc.EndPort)
			}
		}
		base.Services = append(base.Services, ps)
	}
	var out []pipeline.PolicyRule
	if len(rule.Services) == 0 || len(base.Services) > 0 {
		out = append(out, base)
	}
	if len(named) == 0 {
		return out, nil
	}
	// Named ports: which targets (ingress) or peers (egress) use which
	// number.
	byPort := map[portKey]*pipeline.PolicyRule{}
	sub := func(k portKey) *pipeline.PolicyRule {
		r := byPort[k]
		if r == nil {
			r = &pipeline.PolicyRule{Policy: uid, Key: fmt.Sprintf("%d/%d/%d", index, k.proto, k.port), Direction: dir,
				Services: []pipeline.PolicyService{{Protocol: k.proto, Port: k.port}}}
			if dir == pipeline.PolicyIngress {
				r.Peers = base.Peers
			} else {
				r.Targets = base.Targets
			}
			byPort[k] = r
		}
		return r
	}
	for _, svc := range named {
		proto, _ := protocol(svc.Protocol)
		if dir == pipeline.PolicyIngress {
			for _, t := range targets {
				if port, ok := lookupNamed(t.named, svc.Port.StrVal, proto); ok {
					r := sub(portKey{proto, port})
					r.Targets = appendUnique(r.Targets, t.pod.OFPort)
				}
			}
			continue
		}
		for _, m := range members {
			if port, ok := lookupNamed(m.NamedPorts, svc.Port.StrVal, proto); ok {
				r := sub(portKey{proto, port})
				r.Peers = append(r.Peers, memberPeers(m)...)
			}
		}
	}
	keys := make([]portKey, 0, len(byPort))
	for k := range byPort {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return keys[i].proto < keys[j].proto || keys[i].proto == keys[j].proto && keys[i].port < keys[j].port
	})
	for _, k := range keys {
		out = append(out, *byPort[k])
	}
	return out, nil
}

func lookupNamed(ports []controlplane.NamedPort, name string, proto uint8) (uint16, bool) {
	for _, np := range ports {
		p, err := protocol(np.Protocol)
		if err == nil && np.Name == name && p == proto && np.Port > 0 && np.Port <= 65535 {
			return uint16(np.Port), true
		}
	}
	return 0, false
}

func memberPeers(m controlplane.GroupMember) []pipeline.PolicyPeer {
	var out []pipeline.PolicyPeer
	for _, ip := range m.IPs {
		if a, ok := netip.AddrFromSlice(ip); ok {
			a = a.Unmap()
			out = append(out, pipeline.PolicyPeer{CIDR: netip.PrefixFrom(a, a.BitLen())})
		}
	}
	return out
}

func ipBlockPeer(b controlplane.IPBlock) (pipeline.PolicyPeer, error) {
	cidr, err := prefix(b.CIDR)
	if err != nil {
		return pipeline.PolicyPeer{}, err
	}
	p := pipeline.PolicyPeer{CIDR: cidr}
	for _, e := range b.Except {
		ep, err := prefix(e)
		if err != nil {
			return pipeline.PolicyPeer{}, err
		}
		p.Except = append(p.Except, ep)
	}
	return p, nil
}

func prefix(n controlplane.IPNet) (netip.Prefix, error) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, fmt.Errorf("ipBlock address %v", []byte(n.IP))
	}
	a = a.Unmap()
	p := netip.PrefixFrom(a, int(n.PrefixLength))
	if !p.IsValid() {
		return netip.Prefix{}, fmt.Errorf("ipBlock prefix %s/%d", a, n.PrefixLength)
	}
	return p.Masked(), nil
}

func protocol(p controlplane.Protocol) (uint8, error) {
	switch p {
	case controlplane.ProtocolTCP, "":
		return pipeline.ProtoTCP, nil
	case controlplane.ProtocolUDP:
		return pipeline.ProtoUDP, nil
	case controlplane.ProtocolSCTP:
		return pipeline.ProtoSCTP, nil
	}
	return 0, fmt.Errorf("protocol %q", p)
}

func appendUnique(s []uint32, v uint32) []uint32 {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

func sortedSet(m map[uint32]bool) []uint32 {
	out := make([]uint32, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
