package pipeline

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/seine-cni/seine/ovs/openflow"
)

// Tiered policy (core/tiers/README.md): rules of Seine's tiered policies
// fill EgressTier/IngressTier (before Kubernetes NetworkPolicy) and
// EgressBaseline/IngressBaseline (after it, reached only by traffic of
// pods no NetworkPolicy isolates). Each rule is a conjunction, as a
// Kubernetes rule is, at an OpenFlow priority of its own (the agent's
// tiers.Allocator keeps them in evaluation order), and its conj_id flow
// takes the rule's action.

// PolicyTier says which tables a rule belongs to.
type PolicyTier uint8

// Policy tiers.
const (
	// TierNone: a Kubernetes NetworkPolicy rule (EgressPolicy, IngressPolicy).
	TierNone PolicyTier = iota
	// TierMain: a tier evaluated before Kubernetes NetworkPolicy.
	TierMain
	// TierBaseline: a tier evaluated after it.
	TierBaseline
)

// PolicyAction is what a rule does with the new connections it matches.
type PolicyAction uint8

// Policy actions. A Kubernetes NetworkPolicy rule allows.
const (
	ActionAllow PolicyAction = iota
	ActionDrop
	ActionReject
	// ActionPass skips the remaining tiers (TierMain: on to Kubernetes
	// NetworkPolicy); in the baseline it decides nothing (allowed).
	ActionPass
)

func (a PolicyAction) String() string {
	switch a {
	case ActionAllow:
		return "Allow"
	case ActionDrop:
		return "Drop"
	case ActionReject:
		return "Reject"
	case ActionPass:
		return "Pass"
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// The priorities of tiered rules, and above them the flows every tier
// table starts with. Tiered rules take even priorities only (Traceflow's
// tagged copy of a flow takes the priority above it).
const (
	TierPrioMin uint16 = 1000
	TierPrioMax uint16 = 64000

	prioTierReply     uint16 = 65000 // RejectReplyMark: the agent's answers pass
	prioTierBypass    uint16 = 64900 // ct_state=-new+trk
	prioTierNode      uint16 = 64800 // ingress: the node reaching its pods
	prioTierKubeProxy uint16 = 64700 // egress, kube-proxy mode: to the service CIDRs
)

// PolicyRejectMeter bounds the packet-ins of rejected connections
// (PolicyRejectRate per second): a flood of denied SYNs cannot starve the
// agent; what the meter drops is dropped, and the client retries.
const (
	PolicyRejectMeter uint32 = 2
	PolicyRejectRate  uint32 = 200
)

// PacketInPolicyReject is the first byte of the userdata of a packet-in of
// a connection a tiered rule rejects.
const PacketInPolicyReject byte = 3

// PolicyLogMeter bounds the packet-ins of connections that rules with
// enableLogging decide (PolicyLogRate per second, as a burst too): a flood
// cannot starve the agent; what the meter drops goes unlogged (and is
// counted: seine_agent_ovs_meter_dropped_packets_total{reason="policy_log"}),
// the connection itself is decided as if not logged.
const (
	PolicyLogMeter uint32 = 3
	PolicyLogRate  uint32 = 100
)

// PacketInPolicyLog is the first byte of the userdata of a packet-in of a
// connection a rule with enableLogging decided; PolicyLogUserdata says
// what follows.
const PacketInPolicyLog byte = 4

// PolicyLogUserdata is the userdata of a logged rule's packet-in:
// PacketInPolicyLog, the rule's action and direction, then its policy's
// UID, a slash and its Key.
func PolicyLogUserdata(ru *PolicyRule) []byte {
	b := []byte{PacketInPolicyLog, byte(ru.Action), byte(ru.Direction)}
	return append(append(append(b, ru.Policy...), '/'), ru.Key...)
}

// PacketInPolicyDenied is the first byte of the userdata of a packet-in of
// a connection policy denied, sent for flow export alone
// (PolicySet.ExportDenied); the rest is as PolicyLogUserdata's. A denied
// connection of a rule with enableLogging sends PacketInPolicyLog, which
// serves both.
const PacketInPolicyDenied byte = 5

// policyDeniedUserdata is the userdata of a denied connection's packet-in
// for flow export: policy and key are empty for an isolated pod's default
// drop (no one rule decided it).
func policyDeniedUserdata(a PolicyAction, d PolicyDirection, policy, key string) []byte {
	b := []byte{PacketInPolicyDenied, byte(a), byte(d)}
	return append(append(append(b, policy...), '/'), key...)
}

// isolationFlow drops the new connections of an isolated pod (port) that
// no rule of table t allowed; with exportDenied it first sends the packet
// to the agent through PolicyLogMeter.
func isolationFlow(t Table, port uint32, cookie Cookie, exportDenied bool) *openflow.Flow {
	m := match().IP().InPort(port)
	dir := PolicyEgress
	if t == IngressPolicy {
		m, dir = match().IP().Reg(TargetPortField.Reg, regPort(port), 0xffffffff), PolicyIngress
	}
	f := openflow.NewFlow(uint8(t), prioPolicyIsolate).Cookie(uint64(cookie)).Match(m)
	if exportDenied {
		f.Actions(actions().Controller(openflow.Controller{
			Reason: openflow.ReasonAction, Userdata: policyDeniedUserdata(ActionDrop, dir, "", ""), MeterID: PolicyLogMeter,
		}))
	}
	return f
}

// IsIsolationFlow tells an isolated pod's default-drop flow.
func IsIsolationFlow(f *openflow.Flow) bool {
	t := Table(f.TableID())
	return (t == EgressPolicy || t == IngressPolicy) && f.Priority() == prioPolicyIsolate
}

// PolicyLogInfo is what a logged or denied rule's packet-in says of its
// rule.
type PolicyLogInfo struct {
	Action    PolicyAction
	Direction PolicyDirection
	Policy    string // the policy's UID ("" for an isolated pod's default drop)
	Key       string // the rule's Key in its policy
	// Log is true for a rule with enableLogging (PacketInPolicyLog); false
	// for a denied connection sent for flow export alone.
	Log bool
}

// ParsePolicyLogUserdata reads PolicyLogUserdata and a denied
// connection's userdata; ok is false for any other userdata.
func ParsePolicyLogUserdata(u []byte) (info PolicyLogInfo, ok bool) {
	if len(u) < 3 || (u[0] != PacketInPolicyLog && u[0] != PacketInPolicyDenied) {
		return info, false
	}
	rest := string(u[3:])
	i := strings.IndexByte(rest, '/')
	if i < 0 {
		return info, false
	}
	return PolicyLogInfo{Action: PolicyAction(u[1]), Direction: PolicyDirection(u[2]), Policy: rest[:i], Key: rest[i+1:],
		Log: u[0] == PacketInPolicyLog}, true
}

// PolicyMeters are the meters the policy flows use. OVS refuses meter mods
// inside bundles: install them before the flows.
func PolicyMeters() []*openflow.MeterEntry {
	return []*openflow.MeterEntry{{
		ID: PolicyRejectMeter, Flags: openflow.MeterPktps | openflow.MeterBurst,
		Bands: []openflow.MeterBand{{Rate: PolicyRejectRate, BurstSize: PolicyRejectRate}},
	}, {
		ID: PolicyLogMeter, Flags: openflow.MeterPktps | openflow.MeterBurst,
		Bands: []openflow.MeterBand{{Rate: PolicyLogRate, BurstSize: PolicyLogRate}},
	}}
}

func isEgressTable(t Table) bool { return t == EgressTier || t == EgressPolicy || t == EgressBaseline }

// ruleTable is the table of a rule, where its allowed connections go on,
// and the priority of its flows.
func ruleTable(ru *PolicyRule) (table, next Table, prio uint16, err error) {
	egress := false
	switch ru.Direction {
	case PolicyEgress:
		egress, next = true, L3Forwarding
	case PolicyIngress:
		next = ConntrackCommit
	default:
		return 0, 0, 0, fmt.Errorf("%w: rule %q of policy %s has direction %s", ErrBadPolicy, ru.Key, ru.Policy, ru.Direction)
	}
	switch ru.Tier {
	case TierNone:
		if ru.Action != ActionAllow {
			return 0, 0, 0, fmt.Errorf("%w: rule %q of policy %s: a Kubernetes rule only allows (%s)", ErrBadPolicy, ru.Key, ru.Policy, ru.Action)
		}
		table = IngressPolicy
		if egress {
			table = EgressPolicy
		}
		return table, next, prioPolicyRule, nil
	case TierMain:
		table = IngressTier
		if egress {
			table = EgressTier
		}
	case TierBaseline:
		table = IngressBaseline
		if egress {
			table = EgressBaseline
		}
	default:
		return 0, 0, 0, fmt.Errorf("%w: rule %q of policy %s: tier %d", ErrBadPolicy, ru.Key, ru.Policy, ru.Tier)
	}
	if ru.Priority < TierPrioMin || ru.Priority > TierPrioMax {
		return 0, 0, 0, fmt.Errorf("%w: rule %q of policy %s: priority %d outside %d-%d", ErrBadPolicy, ru.Key, ru.Policy, ru.Priority, TierPrioMin, TierPrioMax)
	}
	if ru.Action > ActionPass {
		return 0, 0, 0, fmt.Errorf("%w: rule %q of policy %s: %s", ErrBadPolicy, ru.Key, ru.Policy, ru.Action)
	}
	return table, next, ru.Priority, nil
}

// ruleActions are the actions of a rule's conj_id flow: Allow continues
// past every policy table of its direction (next), Drop drops, Reject asks
// the agent to answer (through the meter) and drops, Pass goes on to
// Kubernetes NetworkPolicy from a tier table and past the baseline from a
// baseline table; they follow acts (an Allow's rule ID). A logged rule (log: its userdata; or a denied
// connection's, for flow export) first sends the
// packet to the agent through PolicyLogMeter, then does the same.
func ruleActions(acts *openflow.Actions, a PolicyAction, next Table, table Table, log []byte) *openflow.Actions {
	if log != nil {
		acts.Controller(openflow.Controller{Reason: openflow.ReasonAction, Userdata: log, MeterID: PolicyLogMeter})
	}
	switch a {
	case ActionDrop:
		if log == nil {
			return nil
		}
		return acts
	case ActionReject:
		return acts.Controller(openflow.Controller{
			Reason: openflow.ReasonAction, Userdata: []byte{PacketInPolicyReject}, MeterID: PolicyRejectMeter,
		})
	case ActionPass:
		switch table {
		case EgressTier:
			return acts.GotoTable(uint8(EgressPolicy))
		case IngressTier:
			return acts.GotoTable(uint8(IngressPolicy))
		}
	}
	return acts.GotoTable(uint8(next))
}

// tierTableFlows are the flows a tier or baseline table holds once it has
// rules: the agent's reject answers, connections already judged and (for
// ingress) the node's own sources pass.
func tierTableFlows(b *builder, t Table, nodeSources []netip.Addr) {
	next := L3Forwarding
	if !isEgressTable(t) {
		next = ConntrackCommit
	}
	b.add(t, prioTierReply, RejectReplyMark.match(match().IP()), gotoT(next))
	b.add(t, prioTierBypass, match().IP().CTState(openflow.CTTracked, openflow.CTTracked|openflow.CTNew), gotoT(next))
	if isEgressTable(t) {
		return
	}
	for _, a := range sortedAddrs(nodeSources) {
		if a.Unmap().Is4() {
			b.add(t, prioTierNode, match().IP().IPSrcAddr(a), gotoT(next))
		}
	}
}

// PolicyRejectActions are the actions of the packet-out that carries the
// agent's answer to a rejected connection (a TCP RST or an ICMP
// unreachable from the destination to the source): marked so every policy
// table lets it pass, and routed like a reply — through conntrack with NAT
// (the answer to a connection the proxy DNATed is un-DNATed to the Service
// address the client used), then from L3Forwarding to a local pod, a
// tunnel or the uplink.
func PolicyRejectActions() *openflow.Actions {
	return loadMarks(actions(), RejectReplyMark, RewriteMACMark).
		CT(openflow.NewCT().Zone(CtZone).Table(uint8(L3Forwarding)).NAT(openflow.NAT{}))
}
