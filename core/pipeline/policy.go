package pipeline

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/seine-cni/seine/ovs/openflow"
)

// PolicyDirection is the direction of a policy rule relative to the local
// pods it applies to.
type PolicyDirection uint8

// Policy rule directions.
const (
	PolicyIngress PolicyDirection = iota + 1
	PolicyEgress
)

func (d PolicyDirection) String() string {
	switch d {
	case PolicyIngress:
		return "ingress"
	case PolicyEgress:
		return "egress"
	}
	return fmt.Sprintf("direction(%d)", uint8(d))
}

// ProtoSCTP is SCTP's IP protocol number.
const ProtoSCTP uint8 = 132

// PolicyService is a protocol and a destination port or port range that a
// rule allows. Port 0 means every port of the protocol; EndPort 0 means
// Port alone, otherwise the range Port..EndPort.
type PolicyService struct {
	Protocol uint8 // ProtoTCP, ProtoUDP or ProtoSCTP
	Port     uint16
	EndPort  uint16
}

// PolicyPeer is the other end of a rule: a CIDR (a pod's address is a /32)
// minus the CIDRs in Except.
type PolicyPeer struct {
	CIDR   netip.Prefix
	Except []netip.Prefix
}

// PolicyRule is one allow rule of a NetworkPolicy, resolved for this node:
// the local pods it applies to (their OpenFlow ports), the peer addresses
// and the services. Named ports are already resolved: a rule whose named
// port means different numbers for different pods is split by the caller
// into one PolicyRule per number, each with its own Key.
type PolicyRule struct {
	// Policy is the policy's UID: the cookie of the rule's own flows is
	// PolicyID(Policy).
	Policy string
	// Key names the rule within its policy ("<rule index>", or with a
	// suffix for a split named port). The conjunction ID is derived from
	// (Policy, Key), so the same input always gives the same flows.
	Key       string
	Direction PolicyDirection
	// Targets are the OpenFlow ports of the local pods the rule applies to:
	// the sources of an egress rule, the destinations of an ingress rule.
	Targets []uint32
	// Peers are the destinations of an egress rule, the sources of an
	// ingress rule. IPv6 peers are skipped: the pipeline is IPv4-only.
	Peers []PolicyPeer
	// Services are what the rule allows; none means every protocol and port.
	Services []PolicyService
	// Tier is TierNone for a Kubernetes NetworkPolicy rule; a tiered rule
	// (core/tiers) takes Action at its own OpenFlow Priority in the tier
	// or baseline table of its direction (see policy_tier.go).
	Tier     PolicyTier
	Action   PolicyAction
	Priority uint16
	// Log sends the first packet of each connection the rule decides to
	// the agent (a tiered rule's enableLogging), through PolicyLogMeter,
	// for the policy audit log.
	Log bool
}

// PolicySet is the desired policy state of a node.
type PolicySet struct {
	Rules []PolicyRule
	// IngressIsolated and EgressIsolated are the OpenFlow ports of the local
	// pods that some policy isolates in that direction: new connections
	// that no rule allows are dropped.
	IngressIsolated []uint32
	EgressIsolated  []uint32
	// NodeSources are the addresses the node itself sends to its pods from
	// (the gateway IP). Kubernetes always lets a node reach its own pods
	// (kubelet probes), so they pass ingress policy.
	NodeSources []netip.Addr
	// ExportDenied sends the first packet of every connection policy
	// denies (a Drop or Reject rule, an isolated pod's default drop) to
	// the agent, through PolicyLogMeter, for flow export (the agent's
	// flowExport is on): denied connections never reach conntrack.
	ExportDenied bool
}

// Priorities of the policy tables.
const (
	prioPolicyBypass  uint16 = 210 // established and related connections
	prioPolicyNode    uint16 = 205 // the node reaching its own pods
	prioPolicyRule    uint16 = 200 // conjunction clauses and conj_id flows
	prioPolicyIsolate uint16 = 190 // default drop of isolated pods
)

// PolicyID is the object ID of the flows that belong to one policy alone
// (its conj_id flows and clauses no other policy shares).
func PolicyID(uid string) uint64 { return hashID("policy/" + uid) }

// PolicyConjID is the conjunction ID of a rule before collisions are
// resolved (see PolicyFlows): 31 bits of FNV-1a of the policy UID and the
// rule key, never 0.
func PolicyConjID(policy, key string) uint32 {
	id := uint32(hashID("conj/"+policy+"/"+key)) & 0x7fffffff
	if id == 0 {
		id = 1
	}
	return id
}

// ErrBadPolicy is wrapped by PolicyFlows' errors about invalid input.
var ErrBadPolicy = errors.New("invalid policy input")

// PolicyFlows are the flows of the policy tables for s under round r:
//
//   - EgressPolicy and IngressPolicy pass connections that conntrack
//     already knows (ct_state=-new+trk: established, related, replies), so
//     only new connections are checked;
//   - IngressPolicy passes the node's own sources (NodeSources);
//   - each rule is one conjunction of 2 or 3 clauses (targets, peers,
//     services when it has any), costing |targets|+|peers|+|services| flows
//     plus one conj_id flow that continues to the next stage; clauses with
//     the same match are merged into one flow carrying several
//     conjunction actions;
//   - isolated pods' new connections that no conjunction allows are
//     dropped (no reject: a denied probe times out);
//   - every other packet leaves the table through its miss flow.
//
// The result is sorted like Build's and depends only on s and r.
// Conjunction IDs are PolicyConjID(Policy, Key); should two rules collide,
// the later one (in Policy, Key order) takes the next free ID.
func PolicyFlows(s PolicySet, r Round) ([]*openflow.Flow, error) {
	p := &policyBuilder{clauses: map[clauseKey]*clauseFlow{}, tables: map[Table]bool{}}
	b := &builder{cookie: NewCookie(r, CategoryPolicy, 0)}
	est := func() *openflow.Match {
		return match().IP().CTState(openflow.CTTracked, openflow.CTTracked|openflow.CTNew)
	}
	b.add(EgressPolicy, prioPolicyBypass, est(), gotoT(L3Forwarding))
	b.add(IngressPolicy, prioPolicyBypass, est(), gotoT(ConntrackCommit))
	for _, a := range sortedAddrs(s.NodeSources) {
		if a.Unmap().Is4() {
			b.add(IngressPolicy, prioPolicyNode, match().IP().IPSrcAddr(a), gotoT(ConntrackCommit))
		}
	}
	for _, port := range sortedPorts(s.EgressIsolated) {
		b.flows = append(b.flows, isolationFlow(EgressPolicy, port, b.cookie, s.ExportDenied))
	}
	for _, port := range sortedPorts(s.IngressIsolated) {
		b.flows = append(b.flows, isolationFlow(IngressPolicy, port, b.cookie, s.ExportDenied))
	}

	rules, ids, err := policyRuleIDs(s.Rules)
	if err != nil {
		return nil, err
	}
	for i := range rules {
		if err := p.rule(b, &rules[i], ids[i], s.ExportDenied); err != nil {
			return nil, err
		}
	}
	for _, t := range []Table{EgressTier, EgressBaseline, IngressTier, IngressBaseline} {
		if p.tables[t] {
			tierTableFlows(b, t, s.NodeSources)
		}
	}
	cfs, err := p.flows(r)
	if err != nil {
		return nil, err
	}
	b.flows = append(b.flows, cfs...)
	sortPolicyFlows(b.flows)
	return b.flows, nil
}

// policyRuleIDs sorts a copy of rules by (Policy, Key) and gives each its
// conjunction ID: PolicyConjID, or on a collision the next free one.
func policyRuleIDs(in []PolicyRule) ([]PolicyRule, []uint32, error) {
	rules := slices.Clone(in)
	slices.SortFunc(rules, func(a, b PolicyRule) int {
		return cmp.Or(cmp.Compare(a.Policy, b.Policy), cmp.Compare(a.Key, b.Key))
	})
	used := map[uint32]bool{}
	ids := make([]uint32, len(rules))
	for i := range rules {
		ru := &rules[i]
		if i > 0 && rules[i-1].Policy == ru.Policy && rules[i-1].Key == ru.Key {
			return nil, nil, fmt.Errorf("%w: rule %q of policy %s appears twice", ErrBadPolicy, ru.Key, ru.Policy)
		}
		id := PolicyConjID(ru.Policy, ru.Key)
		for used[id] {
			id = id%0x7fffffff + 1
		}
		used[id] = true
		ids[i] = id
	}
	return rules, ids, nil
}

// sortPolicyFlows orders flows by table, priority (highest first) and match
// text: like Sort, without rendering the actions (a policy flow's match is
// unique in its table and priority).
func sortPolicyFlows(flows []*openflow.Flow) {
	type keyed struct {
		f *openflow.Flow
		m string
	}
	ks := make([]keyed, len(flows))
	for i, f := range flows {
		ks[i] = keyed{f, f.MatchString()}
	}
	slices.SortFunc(ks, func(a, b keyed) int {
		return cmp.Or(cmp.Compare(a.f.TableID(), b.f.TableID()), cmp.Compare(b.f.Priority(), a.f.Priority()), cmp.Compare(a.m, b.m))
	})
	for i := range ks {
		flows[i] = ks[i].f
	}
}

// clauseFlow is one clause match shared by the conjunctions that use it.
type clauseFlow struct {
	key    clauseKey
	conjs  []openflow.Conjunction
	owners map[uint32]string // policy UID by conjunction ID
}

// clauseKey identifies a clause match without building it: rules share
// most of their clauses, so each match is built once.
type clauseKey struct {
	table  Table
	prio   uint16 // prioPolicyRule, or a tiered rule's own
	kind   clauseKind
	port   uint32       // clauseTarget
	prefix netip.Prefix // clausePeer
	proto  uint8        // clauseService
	ports  PortMask     // clauseService; Mask 0: every port
}

type clauseKind uint8

const (
	clauseTarget clauseKind = iota + 1
	clausePeer
	clauseService
)

// match builds the clause's match: a target is the packet's input port
// (egress) or output port (ingress), a peer its destination (egress) or
// source (ingress) prefix, a service its protocol and destination port.
func (k clauseKey) match() *openflow.Match {
	m := match().IP()
	switch k.kind {
	case clauseTarget:
		if isEgressTable(k.table) {
			return m.InPort(k.port)
		}
		return m.Reg(TargetPortField.Reg, regPort(k.port), 0xffffffff)
	case clausePeer:
		if isEgressTable(k.table) {
			return m.IPDst(k.prefix)
		}
		return m.IPSrc(k.prefix)
	}
	m.IPProto(k.proto)
	if k.ports.Mask == 0 {
		return m
	}
	switch k.proto {
	case ProtoTCP:
		return m.TCPDstMasked(k.ports.Value, k.ports.Mask)
	case ProtoUDP:
		return m.UDPDstMasked(k.ports.Value, k.ports.Mask)
	}
	return m.SCTPDstMasked(k.ports.Value, k.ports.Mask)
}

type policyBuilder struct {
	clauses map[clauseKey]*clauseFlow
	tables  map[Table]bool // tables that got rules
}

func (p *policyBuilder) clause(k clauseKey, policy string, c openflow.Conjunction) {
	cf := p.clauses[k]
	if cf == nil {
		cf = &clauseFlow{key: k, owners: map[uint32]string{}}
		p.clauses[k] = cf
	}
	if _, seen := cf.owners[c.ID]; !seen {
		cf.conjs = append(cf.conjs, c)
	}
	cf.owners[c.ID] = policy
}

// rule adds the clauses and the conj_id flow of one rule. A rule with an
// empty clause (no local targets, no IPv4 peer left) can never match and
// gets no flows.
func (p *policyBuilder) rule(b *builder, ru *PolicyRule, id uint32, exportDenied bool) error {
	parts, err := ruleParts(ru, id, b.cookie.Round(), exportDenied)
	if err != nil || len(parts.own) == 0 {
		return err
	}
	for _, c := range parts.clauses {
		p.clause(c.key, ru.Policy, c.conj)
	}
	p.tables[parts.table] = true
	b.flows = append(b.flows, parts.own...)
	return nil
}

// ruleClause is one clause of a rule's conjunction.
type ruleClause struct {
	key  clauseKey
	conj openflow.Conjunction
}

// rulePart is what one rule adds to the policy tables: its clauses and its
// own flows, the conj_id flow and an allow rule's metric flow (none, and no
// clauses, for a rule that can never match).
type rulePart struct {
	table   Table
	clauses []ruleClause
	own     []*openflow.Flow
}

// ruleParts are the clauses and the own flows of one rule with
// conjunction ID id under round r; with exportDenied a Drop or Reject
// rule sends its connections' first packet to the agent (PolicySet).
func ruleParts(ru *PolicyRule, id uint32, r Round, exportDenied bool) (rulePart, error) {
	table, next, prio, err := ruleTable(ru)
	if err != nil {
		return rulePart{}, err
	}
	var targets, peers, services []clauseKey
	for _, port := range sortedPorts(ru.Targets) {
		targets = append(targets, clauseKey{table: table, prio: prio, kind: clauseTarget, port: port})
	}
	for _, peer := range ru.Peers {
		if !peer.CIDR.Addr().Unmap().Is4() {
			continue
		}
		for _, c := range SubtractPrefixes(peer.CIDR, peer.Except) {
			peers = append(peers, clauseKey{table: table, prio: prio, kind: clausePeer, prefix: c})
		}
	}
	for _, svc := range ru.Services {
		ks, err := serviceKeys(table, prio, svc)
		if err != nil {
			return rulePart{}, fmt.Errorf("rule %q of policy %s: %w", ru.Key, ru.Policy, err)
		}
		services = append(services, ks...)
	}
	if len(targets) == 0 || len(peers) == 0 || (len(ru.Services) > 0 && len(services) == 0) {
		return rulePart{table: table}, nil
	}
	n := uint8(2)
	if len(ru.Services) > 0 {
		n = 3
	}
	part := rulePart{table: table}
	for k, ks := range [][]clauseKey{targets, peers, services} {
		for _, key := range ks {
			part.clauses = append(part.clauses, ruleClause{key, openflow.Conjunction{ID: id, Clause: uint8(k + 1), NClauses: n}})
		}
	}
	ob := &builder{cookie: NewCookie(r, CategoryPolicy, PolicyID(ru.Policy))}
	var log []byte
	switch {
	case ru.Log:
		log = PolicyLogUserdata(ru)
	case exportDenied && (ru.Action == ActionDrop || ru.Action == ActionReject):
		log = policyDeniedUserdata(ru.Action, ru.Direction, ru.Policy, ru.Key)
	}
	acts := actions()
	if ru.Action == ActionAllow {
		// The rule's ID goes with the connection (ConntrackCommit) so the
		// metric table counts its later packets (policy_stats.go).
		acts = loadMarks(acts, RegMark{ruleField(ru.Direction), id, "Rule"})
		mt, next := metricTable(ru.Direction)
		ob.add(mt, prioPolicyRule, metricMatch(ru.Direction, id), gotoT(next))
	}
	ob.add(table, prio, match().IP().ConjID(id), ruleActions(acts, ru.Action, next, table, log))
	part.own = ob.flows
	return part, nil
}

// flows renders the merged clause flows (split when long, see
// splitClause).
func (p *policyBuilder) flows(r Round) ([]*openflow.Flow, error) {
	var out []*openflow.Flow
	for _, cf := range p.clauses {
		fs, err := cf.render(r)
		if err != nil {
			return nil, err
		}
		out = append(out, fs...)
	}
	return out, nil
}

// render is the clause's flows: one per non-empty copy (see splitClause).
// A clause flow used by one policy only carries that policy's cookie; a
// shared one carries the policy category with object ID 0.
func (cf *clauseFlow) render(r Round) ([]*openflow.Flow, error) {
	copies, err := splitClause(cf.conjs)
	if err != nil {
		return nil, fmt.Errorf("clause %s: %w", cf.key.match().String(), err)
	}
	var out []*openflow.Flow
	for j, conjs := range copies {
		if len(conjs) == 0 {
			continue
		}
		id := uint64(0)
		if owners := ownersOf(conjs, cf.owners); len(owners) == 1 {
			id = PolicyID(owners[0])
		}
		a := actions()
		for _, c := range conjs {
			a.Conjunction(c.ID, c.Clause, c.NClauses)
		}
		m := cf.key.match()
		if j > 0 {
			m.Metadata(0, clauseCopyBit(j))
		}
		out = append(out, openflow.NewFlow(uint8(cf.key.table), cf.key.prio).
			Cookie(uint64(NewCookie(r, CategoryPolicy, id))).Match(m).Actions(a))
	}
	return out, nil
}

// serviceKeys are the clauses of one service: the protocol, and the
// destination port, or the masked ports that cover a range exactly.
func serviceKeys(t Table, prio uint16, s PolicyService) ([]clauseKey, error) {
	switch s.Protocol {
	case ProtoTCP, ProtoUDP, ProtoSCTP:
	default:
		return nil, fmt.Errorf("%w: protocol %d", ErrBadPolicy, s.Protocol)
	}
	k := clauseKey{table: t, prio: prio, kind: clauseService, proto: s.Protocol}
	if s.Port == 0 {
		if s.EndPort != 0 {
			return nil, fmt.Errorf("%w: endPort %d without a port", ErrBadPolicy, s.EndPort)
		}
		return []clauseKey{k}, nil
	}
	end := s.EndPort
	if end == 0 {
		end = s.Port
	}
	if end < s.Port {
		return nil, fmt.Errorf("%w: port range %d-%d", ErrBadPolicy, s.Port, end)
	}
	var ks []clauseKey
	for _, pm := range PortRangeMasks(s.Port, end) {
		k.ports = pm
		ks = append(ks, k)
	}
	return ks, nil
}

func sortedPorts(ports []uint32) []uint32 {
	out := slices.Clone(ports)
	slices.Sort(out)
	return slices.Compact(out)
}

func sortedAddrs(as []netip.Addr) []netip.Addr {
	out := slices.Clone(as)
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}
