package pipeline

import (
	"fmt"
	"slices"
	"strings"

	"github.com/seine-cni/seine/ovs/openflow"
)

// Policy stats. A policy table sees only a connection's first packet (the
// rest pass its ct_state=-new+trk bypass), so the counters of a rule's
// conj_id flow count the connections the rule decided (sessions) and their
// first packets. An Allow rule's conj_id flow also loads the rule's ID
// into EgressRuleField/IngressRuleField; ConntrackCommit keeps it in the
// connection's ct_label, and the rule's flow in EgressMetric/IngressMetric
// (ct_state=-new+trk, its ID in ct_label) counts every later packet of the
// connection, both directions. A Drop or Reject rule's connections never
// get further than their first packet: its conj_id flow counts them all.

// ruleField is the register an allow rule of direction d loads its ID into.
func ruleField(d PolicyDirection) RegField {
	if d == PolicyEgress {
		return EgressRuleField
	}
	return IngressRuleField
}

// metricTable is the metric table of direction d, and the table after it.
func metricTable(d PolicyDirection) (Table, Table) {
	if d == PolicyEgress {
		return EgressMetric, IngressMetric
	}
	return IngressMetric, Output
}

// metricMatch matches the later packets of the connections that the
// allow rule id of direction d let in.
func metricMatch(d PolicyDirection, id uint32) *openflow.Match {
	m := match().IP().CTState(openflow.CTTracked, openflow.CTTracked|openflow.CTNew)
	if d == PolicyEgress {
		return m.CTLabel(uint64(id)<<(EgressRuleLabelLo-64), 0, 0xffffffff<<(EgressRuleLabelLo-64), 0)
	}
	return m.CTLabel(uint64(id)<<(IngressRuleLabelLo-64), 0, 0xffffffff<<(IngressRuleLabelLo-64), 0)
}

// CounterKind says what a policy flow's counters count for its rule.
type CounterKind uint8

const (
	// CountFirst: the rule's conj_id flow, one packet per connection the
	// rule decided (sessions).
	CountFirst CounterKind = iota + 1
	// CountLater: an allow rule's metric flow, the later packets of those
	// connections.
	CountLater
)

// RuleCounter is what one policy flow counts: a rule (its policy's UID
// and Key) and which of its packets.
type RuleCounter struct {
	Policy    string
	Key       string
	Direction PolicyDirection
	Action    PolicyAction
	Kind      CounterKind
}

// PolicyCounters names the flows of PolicyFlows(s) whose counters count
// for a rule, by CounterKey. A rule that gets no flows (an empty clause)
// has none.
func PolicyCounters(s PolicySet) (map[string]RuleCounter, error) {
	rules, ids, err := policyRuleIDs(s.Rules)
	if err != nil {
		return nil, err
	}
	out := make(map[string]RuleCounter, len(rules))
	for i := range rules {
		ru := &rules[i]
		table, _, prio, err := ruleTable(ru)
		if err != nil {
			return nil, err
		}
		rc := RuleCounter{Policy: ru.Policy, Key: ru.Key, Direction: ru.Direction, Action: ru.Action, Kind: CountFirst}
		out[counterKey(uint8(table), prio, match().IP().ConjID(ids[i]))] = rc
		if ru.Action == ActionAllow {
			mt, _ := metricTable(ru.Direction)
			rc.Kind = CountLater
			out[counterKey(uint8(mt), prioPolicyRule, metricMatch(ru.Direction, ids[i]))] = rc
		}
	}
	return out, nil
}

func counterKey(table uint8, prio uint16, m *openflow.Match) string {
	return CounterKey(openflow.NewFlow(table, prio).Match(m))
}

// CounterKey names a flow by table, priority and match, with the match's
// fields sorted: a switch may hand a match back with its fields reordered.
func CounterKey(f *openflow.Flow) string {
	fields := strings.Split(f.MatchString(), ",")
	slices.Sort(fields)
	return fmt.Sprintf("%d/%s", f.TableID(), strings.Join(fields, ","))
}

// RuleRef names one rule of a policy set: its policy's UID, its Key, its
// direction and action.
type RuleRef struct {
	Policy    string
	Key       string
	Direction PolicyDirection
	Action    PolicyAction
}

// PolicyRuleIDs are the rules of s by the ID an allow rule leaves in its
// connections' ct_label (EgressRuleLabelLo, IngressRuleLabelLo): the
// conjunction IDs PolicyFlows gives them. Flow export names the policy
// and rule of a conntrack entry from them. Only allow rules are listed: a
// Drop, Reject or Pass rule never commits a connection.
func PolicyRuleIDs(s PolicySet) (map[uint32]RuleRef, error) {
	rules, ids, err := policyRuleIDs(s.Rules)
	if err != nil {
		return nil, err
	}
	out := make(map[uint32]RuleRef, len(rules))
	for i := range rules {
		ru := &rules[i]
		if ru.Action == ActionAllow {
			out[ids[i]] = RuleRef{Policy: ru.Policy, Key: ru.Key, Direction: ru.Direction, Action: ru.Action}
		}
	}
	return out, nil
}

// RuleIDsFromLabel reads the allow rules' IDs from a connection's ct_label
// (most significant byte first, as ovs-vswitchd prints it): 0 where no
// rule of that direction was met (the pod is not isolated that way).
func RuleIDsFromLabel(label [16]byte) (egress, ingress uint32) {
	word := func(lo int) uint32 { // bits lo..lo+31, lo a multiple of 32
		i := 16 - lo/8 - 4
		return uint32(label[i])<<24 | uint32(label[i+1])<<16 | uint32(label[i+2])<<8 | uint32(label[i+3])
	}
	return word(EgressRuleLabelLo), word(IngressRuleLabelLo)
}
