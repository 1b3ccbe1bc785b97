package traceflow

import (
	"errors"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
)

// modelSwitch holds flows by table, priority and match and applies
// flow-mods as OVS does (add replaces, strict delete, delete by cookie).
type modelSwitch map[string]*openflow.Flow

func (s modelSwitch) apply(t *testing.T, msgs []openflow.Message) {
	t.Helper()
	for _, m := range msgs {
		fm := m.(*openflow.FlowMod)
		switch fm.Command {
		case openflow.FlowAdd:
			s[flowKey(fm.Flow)] = fm.Flow
		case openflow.FlowDeleteStrict:
			delete(s, flowKey(fm.Flow))
		case openflow.FlowDelete:
			for k, f := range s {
				if f.CookieValue()&fm.CookieMask == fm.Flow.CookieValue()&fm.CookieMask {
					delete(s, k)
				}
			}
		default:
			t.Fatalf("command %d", fm.Command)
		}
	}
}

// inStep is "" when the switch's copies of tag are exactly Copies of its
// other flows, else the difference.
func (s modelSwitch) inStep(tag uint8, mode Mode) string {
	var base []*openflow.Flow
	have := map[string]string{}
	for _, k := range slices.Sorted(maps.Keys(s)) {
		f := s[k]
		switch {
		case !isTraceFlow(f):
			base = append(base, f)
		case pipeline.Cookie(f.CookieValue()).ID() == uint64(tag):
			have[k] = f.ActionsString()
		}
	}
	want, _, err := Copies(base, tag, Cookie(1, tag), mode)
	if err != nil {
		return err.Error()
	}
	var diff []string
	for _, c := range want {
		k := flowKey(c)
		if a, ok := have[k]; !ok || a != c.ActionsString() {
			diff = append(diff, "missing "+c.String())
		}
		delete(have, k)
	}
	for k := range have {
		diff = append(diff, "stale "+s[k].String())
	}
	return strings.Join(diff, "\n")
}

func adds(flows []*openflow.Flow) []openflow.Message {
	var out []openflow.Message
	for _, f := range flows {
		out = append(out, openflow.AddFlow(f))
	}
	return out
}

func deletes(flows []*openflow.Flow) []openflow.Message {
	var out []openflow.Message
	for _, f := range flows {
		out = append(out, openflow.DeleteFlowStrict(f))
	}
	return out
}

// TestShadowFollowsChanges: after every change of the node's flows (a new
// pod, a policy realized and replaced, a pod deleted, flows deleted by
// cookie, a neighbour one priority up coming and going), the copy changes
// Follow returns leave the switch's copies of each trace (an injected one
// and a live one at once) exactly what copying every flow again would
// give, and nothing is copied again that did not change.
func TestShadowFollowsChanges(t *testing.T) {
	st := nodeState(pipeline.BridgedUplink, pipeline.Encap, pipeline.Geneve)
	st.Node.ServiceProxy = true // a pod's hairpin flow outputs: it gets a copy
	base := baseFlows(t, st)
	sw := modelSwitch{}
	for _, f := range base {
		sw[flowKey(f)] = f
	}
	s, err := NewShadow(base)
	if err != nil {
		t.Fatal(err)
	}
	modes := map[uint8]Mode{testTag: {}, 9: {Live: true, ClusterCIDRs: []netip.Prefix{clusterNet}}}
	for _, tag := range []uint8{testTag, 9} {
		copies, _, err := s.Trace(tag, Cookie(1, tag), modes[tag])
		if err != nil {
			t.Fatal(err)
		}
		sw.apply(t, adds(copies))
	}
	step := func(what string, msgs []openflow.Message, maxChanges int) {
		t.Helper()
		sw.apply(t, msgs)
		out, err := s.Follow(msgs)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		sw.apply(t, out)
		for tag, mode := range modes {
			if d := sw.inStep(tag, mode); d != "" {
				t.Errorf("%s: copies of tag %d:\n%s", what, tag, d)
			}
		}
		if len(out) == 0 || len(out) > maxChanges {
			t.Errorf("%s: %d copy changes, want 1-%d", what, len(out), maxChanges)
		}
	}

	pod := pipeline.Pod{Namespace: "default", Name: "new-0", Port: 12, IPs: []netip.Addr{netip.MustParseAddr("10.244.1.12")}, MAC: mustMAC("0a:00:00:00:01:0c")}
	podFlows, err := pipeline.PodFlows(st.Node, pod, 1)
	if err != nil {
		t.Fatal(err)
	}
	step("a new pod", adds(podFlows), 6)

	// web-0 isolated for egress too, db-0's rule replaced by another.
	newPolicy := dbPolicy
	newPolicy.EgressIsolated = []uint32{portWeb}
	newPolicy.Rules = []pipeline.PolicyRule{{Policy: "uid-db", Key: "0", Direction: pipeline.PolicyIngress, Targets: []uint32{portDB},
		Peers:    []pipeline.PolicyPeer{{CIDR: netip.PrefixFrom(webIP, 32)}},
		Services: []pipeline.PolicyService{{Protocol: pipeline.ProtoTCP, Port: 5433}}}}
	oldPF, err := pipeline.PolicyFlows(dbPolicy, 1)
	if err != nil {
		t.Fatal(err)
	}
	newPF, err := pipeline.PolicyFlows(newPolicy, 1)
	if err != nil {
		t.Fatal(err)
	}
	var gone []*openflow.Flow
	for _, f := range oldPF {
		if !slices.ContainsFunc(newPF, func(n *openflow.Flow) bool { return n.Key() == f.Key() }) {
			gone = append(gone, f)
		}
	}
	step("a policy realized", append(adds(newPF), deletes(gone)...), 4)
	step("the pod deleted", deletes(podFlows), 6)
	c, m := uint64(pipeline.NewCookie(0, pipeline.CategoryPolicy, 0)), categoryMask
	step("the policy flows deleted by cookie", []openflow.Message{openflow.DeleteFlows(openflow.TableAll, nil, c, m)}, 4)

	// A flow one priority above a copied one takes its copy's place: the
	// copy goes (the two could overlap) and comes back when it goes.
	var out *openflow.Flow
	for _, f := range base {
		if f.TableID() == uint8(pipeline.Output) && strings.Contains(f.ActionsString(), "output") {
			out = f
			break
		}
	}
	neighbour := openflow.NewFlow(out.TableID(), out.Priority()+1).Cookie(out.CookieValue()).
		Match(openflow.NewMatch().IP().IPDstAddr(netip.MustParseAddr("10.244.1.99"))).Actions(openflow.NewActions())
	step("a neighbour one priority up", adds([]*openflow.Flow{neighbour}), 8)
	if d := sw.inStep(testTag, Mode{}); d != "" || slices.ContainsFunc(slices.Collect(maps.Values(sw)), func(f *openflow.Flow) bool {
		return isTraceFlow(f) && f.TableID() == out.TableID() && f.Priority() == out.Priority()+1 && strings.Contains(f.MatchString(), "reg0=0x200/0x200")
	}) {
		t.Errorf("the copy under a neighbour stayed:\n%s", d)
	}
	step("the neighbour gone", deletes([]*openflow.Flow{neighbour}), 8)

	// What cannot be followed says so.
	if _, err := s.Follow([]openflow.Message{openflow.DeleteFlows(openflow.TableAll, nil, 0, pipeline.RoundMask)}); !errors.Is(err, ErrCannotFollow) {
		t.Errorf("a delete by round: %v, want ErrCannotFollow", err)
	}
	s2, _ := NewShadow(base)
	if _, _, err := s2.Trace(testTag, Cookie(1, testTag), Mode{}); err != nil {
		t.Fatal(err)
	}
	resub := openflow.NewFlow(uint8(pipeline.Output), 5).Cookie(uint64(pipeline.NewCookie(1, pipeline.CategoryPod, 1))).
		Match(openflow.NewMatch().IP()).Actions(openflow.NewActions().Resubmit(openflow.PortInPort, uint8(pipeline.Output)))
	if _, err := s2.Follow(adds([]*openflow.Flow{resub})); !errors.Is(err, ErrCannotFollow) {
		t.Errorf("a table newly resubmitted to: %v, want ErrCannotFollow", err)
	}
}

// TestFlowKeyDumpedForm: a switch dumps reg0 and reg1 as one xreg0 and
// orders fields its own way; the flow's key is the same, so the copies of
// a dumped flow and of the flow the agent sent are one.
func TestFlowKeyDumpedForm(t *testing.T) {
	sent := openflow.NewFlow(100, 210).Match(openflow.NewMatch().IP().Reg(0, 0x200, 0x200).Reg(1, 5, 0xffffffff).InPort(5))
	dumped := openflow.NewFlow(100, 210).Match(openflow.NewMatch().InPort(5).IP().
		FieldMasked(openflow.XReg(0), []byte{0, 0, 2, 0, 0, 0, 0, 5}, []byte{0, 0, 2, 0, 0xff, 0xff, 0xff, 0xff}))
	if flowKey(sent) != flowKey(dumped) {
		t.Errorf("keys differ:\n%s\n%s", flowKey(sent), flowKey(dumped))
	}
	other := openflow.NewFlow(100, 210).Match(openflow.NewMatch().IP().Reg(0, 0x200, 0x200).Reg(1, 6, 0xffffffff).InPort(5))
	if flowKey(sent) == flowKey(other) {
		t.Errorf("flows with different matches share key %s", flowKey(sent))
	}
}
