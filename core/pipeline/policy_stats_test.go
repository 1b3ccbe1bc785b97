package pipeline

import (
	"slices"
	"testing"
)

// counted lists "<policy>/<key> <direction> first|later" for every flow of
// the trace that counts for a rule.
func counted(t *testing.T, tr *Trace, counters map[string]RuleCounter) []string {
	t.Helper()
	var out []string
	for _, s := range tr.Steps {
		if s.Flow == nil {
			continue
		}
		if rc, ok := counters[CounterKey(s.Flow)]; ok {
			kind := "first"
			if rc.Kind == CountLater {
				kind = "later"
			}
			out = append(out, rc.Policy+"/"+rc.Key+" "+rc.Direction.String()+" "+kind)
		}
	}
	slices.Sort(out)
	return out
}

// A connection's first packet is counted by the conj_id flows of the rules
// that allowed it; its later packets, both directions, by those rules'
// metric flows, through the rule IDs ConntrackCommit left in ct_label.
func TestTracePolicyStats(t *testing.T) {
	tr := policyTracer(t)
	counters, err := PolicyCounters(policyScenario())
	if err != nil {
		t.Fatal(err)
	}
	// Two flows per allow rule, every one of them found in PolicyFlows.
	if len(counters) != 8 {
		t.Errorf("%d counters, want 8", len(counters))
	}
	have := map[string]bool{}
	for _, f := range policyFlowsOrFail(t, policyScenario(), 1) {
		have[CounterKey(f)] = true
	}
	for k, rc := range counters {
		if !have[k] {
			t.Errorf("counter %+v names no flow (%s)", rc, k)
		}
	}

	both := func(kind string) []string { return []string{"db/0 ingress " + kind, "web/0 egress " + kind} }
	steps := []struct {
		name string
		p    Packet
		port uint32
		want []string
	}{
		{"web -> db SYN", TCPPacket(portWeb, webMAC, dbMAC, webIP, dbIP, 41000, 5432), portDB, both("first")},
		{"db -> web reply", TCPPacket(portDB, dbMAC, webMAC, dbIP, webIP, 5432, 41000), portWeb, both("later")},
		{"web -> db again", TCPPacket(portWeb, webMAC, dbMAC, webIP, dbIP, 41000, 5432), portDB, both("later")},
		// A connection one rule judges: web's egress to the outside.
		{"web -> outside", TCPPacket(portWeb, webMAC, gatewayMAC, webIP, externIP, 41001, 443), portGateway, []string{"web/1 egress first"}},
		{"outside -> web reply", fromTunnel(TCPPacket(0, nil, nil, externIP, webIP, 443, 41001)), portWeb, []string{"web/1 egress later"}},
		// Traffic no rule decided counts for none.
		{"db -> web (not isolated)", TCPPacket(portDB, dbMAC, webMAC, dbIP, webIP, 41002, 80), portWeb, nil},
		{"web -> db reply", TCPPacket(portWeb, webMAC, dbMAC, webIP, dbIP, 80, 41002), portDB, nil},
	}
	for _, st := range steps {
		res := trace(t, tr, st.p)
		if st.port != 0 {
			wantOutput(t, res, st.port)
		}
		if got := counted(t, res, counters); !slices.Equal(got, st.want) {
			t.Errorf("%s: counted %q, want %q\n%s", st.name, got, st.want, res)
		}
	}
}

// The rule IDs a committed connection carries in ct_label name, through
// PolicyRuleIDs, the allow rules that let it in: what flow export reads
// from the conntrack dump. Linux's and Windows' flow sets alike.
func TestPolicyRuleIDsFromLabel(t *testing.T) {
	for _, sc := range []string{"routed-encap-geneve", "windows-encap-geneve"} {
		t.Run(sc, func(t *testing.T) { testPolicyRuleIDsFromLabel(t, sc) })
	}
}

func testPolicyRuleIDsFromLabel(t *testing.T, sc string) {
	flows := buildOrFail(t, scenarioByName(t, sc), 1)
	tr, err := NewTracer(append(flows, policyFlowsOrFail(t, policyScenario(), 1)...))
	if err != nil {
		t.Fatal(err)
	}
	byID, err := PolicyRuleIDs(policyScenario())
	if err != nil {
		t.Fatal(err)
	}
	if len(byID) != 4 {
		t.Errorf("%d rules by ID, want the scenario's 4 allow rules", len(byID))
	}
	name := func(id uint32) string {
		if id == 0 {
			return "-"
		}
		r, ok := byID[id]
		if !ok {
			return "unknown"
		}
		return r.Policy + "/" + r.Key + " " + r.Direction.String() + " " + r.Action.String()
	}
	for _, st := range []struct {
		name            string
		p               Packet
		egress, ingress string
	}{
		{"web -> db", TCPPacket(portWeb, webMAC, dbMAC, webIP, dbIP, 42000, 5432), "web/0 egress Allow", "db/0 ingress Allow"},
		{"web -> outside", TCPPacket(portWeb, webMAC, gatewayMAC, webIP, externIP, 42001, 443), "web/1 egress Allow", "-"},
		{"db -> web (not isolated)", TCPPacket(portDB, dbMAC, webMAC, dbIP, webIP, 42002, 80), "-", "-"},
	} {
		trace(t, tr, st.p)
		c := tr.conns[connKey{zone: CtZone, proto: ProtoTCP, src: st.p.IPSrc, dst: st.p.IPDst, sport: st.p.SrcPort, dport: st.p.DstPort}]
		if c == nil {
			t.Fatalf("%s: not committed in zone %d", st.name, CtZone)
		}
		eg, ing := RuleIDsFromLabel(c.label)
		if got := name(eg); got != st.egress {
			t.Errorf("%s: egress rule %s (label %x), want %s", st.name, got, c.label, st.egress)
		}
		if got := name(ing); got != st.ingress {
			t.Errorf("%s: ingress rule %s (label %x), want %s", st.name, got, c.label, st.ingress)
		}
	}
}
