package policystats

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
)

// A node with two policies: "web" allows egress to 10.0.0.0/8 on TCP 80
// (rule 0) and on a named port split in two numbers (rule 1, keys 1/6/8080
// and 1/6/9090); "deny" drops ingress from 10.9.0.0/16 (a tiered Drop).
func testSet() pipeline.PolicySet {
	peer := []pipeline.PolicyPeer{{CIDR: netip.MustParsePrefix("10.0.0.0/8")}}
	return pipeline.PolicySet{Rules: []pipeline.PolicyRule{
		{Policy: "web", Key: "0", Direction: pipeline.PolicyEgress, Targets: []uint32{5}, Peers: peer,
			Services: []pipeline.PolicyService{{Protocol: pipeline.ProtoTCP, Port: 80}}},
		{Policy: "web", Key: "1/6/8080", Direction: pipeline.PolicyEgress, Targets: []uint32{5}, Peers: peer,
			Services: []pipeline.PolicyService{{Protocol: pipeline.ProtoTCP, Port: 8080}}},
		{Policy: "web", Key: "1/6/9090", Direction: pipeline.PolicyEgress, Targets: []uint32{6}, Peers: peer,
			Services: []pipeline.PolicyService{{Protocol: pipeline.ProtoTCP, Port: 9090}}},
		{Policy: "deny", Key: "0", Direction: pipeline.PolicyIngress, Targets: []uint32{5},
			Peers: []pipeline.PolicyPeer{{CIDR: netip.MustParsePrefix("10.9.0.0/16")}},
			Tier:  pipeline.TierMain, Action: pipeline.ActionDrop, Priority: 2000},
	}}
}

// switchOf is a fake switch: the counting flows of testSet, whose counters
// a test sets by (policy, key, kind).
type switchOf struct {
	t        *testing.T
	counters map[string]pipeline.RuleCounter
	flows    map[string]*openflow.Flow
	counts   map[string]openflow.Stats
}

func newSwitch(t *testing.T) *switchOf {
	s := &switchOf{t: t, flows: map[string]*openflow.Flow{}, counts: map[string]openflow.Stats{}}
	var err error
	if s.counters, err = pipeline.PolicyCounters(testSet()); err != nil {
		t.Fatal(err)
	}
	flows, err := pipeline.PolicyFlows(testSet(), 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range flows {
		if _, ok := s.counters[pipeline.CounterKey(f)]; ok {
			s.flows[pipeline.CounterKey(f)] = f
		}
	}
	if len(s.flows) != len(s.counters) {
		t.Fatalf("%d counting flows, %d counters", len(s.flows), len(s.counters))
	}
	return s
}

func (s *switchOf) key(policy, key string, kind pipeline.CounterKind) string {
	for k, rc := range s.counters {
		if rc.Policy == policy && rc.Key == key && rc.Kind == kind {
			return k
		}
	}
	s.t.Fatalf("no flow counts %s/%s kind %d", policy, key, kind)
	return ""
}

// set sets a flow's counters to packets of 100 bytes each.
func (s *switchOf) set(policy, key string, kind pipeline.CounterKind, packets uint64) {
	s.counts[s.key(policy, key, kind)] = openflow.Stats{PacketCount: packets, ByteCount: 100 * packets}
}

// dump lists every counting flow but those in without.
func (s *switchOf) dump(without ...string) []openflow.FlowStats {
	var out []openflow.FlowStats
	for k, f := range s.flows {
		skip := false
		for _, w := range without {
			skip = skip || w == k
		}
		if !skip {
			out = append(out, openflow.FlowStats{Flow: f, Stats: s.counts[k]})
		}
	}
	return out
}

func all(string) bool { return true }

var t0 = time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)

func rules(t *Totals) map[Rule]Counts {
	out := map[Rule]Counts{}
	for _, p := range t.Report() {
		for _, r := range p.Rules {
			out[Rule{p.Policy, r.Index}] = r.Counts
		}
	}
	return out
}

func want(t *testing.T, got *Totals, w map[Rule]Counts) {
	t.Helper()
	if g := rules(got); !reflect.DeepEqual(g, w) {
		t.Errorf("totals %v, want %v", g, w)
	}
}

func TestSessionsPacketsBytes(t *testing.T) {
	sw, tot := newSwitch(t), New()
	// Rule web/0: 3 connections (the conj_id flow's 3 first packets),
	// then 20 later packets; the named-port parts of rule 1 add up; the
	// Drop rule's attempts are its sessions.
	sw.set("web", "0", pipeline.CountFirst, 3)
	sw.set("web", "0", pipeline.CountLater, 20)
	sw.set("web", "1/6/8080", pipeline.CountFirst, 1)
	sw.set("web", "1/6/9090", pipeline.CountFirst, 2)
	sw.set("web", "1/6/9090", pipeline.CountLater, 4)
	sw.set("deny", "0", pipeline.CountFirst, 5)
	added, changed := tot.Observe(sw.dump(), sw.counters, all, t0)
	if !changed || added != (Counts{Sessions: 11, Packets: 35, Bytes: 3500}) {
		t.Errorf("first dump: added %+v, changed %v", added, changed)
	}
	want(t, tot, map[Rule]Counts{
		{"web", 0}:  {Sessions: 3, Packets: 23, Bytes: 2300},
		{"web", 1}:  {Sessions: 3, Packets: 7, Bytes: 700},
		{"deny", 0}: {Sessions: 5, Packets: 5, Bytes: 500},
	})
	// The same counters again count nothing; growth counts once.
	if added, changed := tot.Observe(sw.dump(), sw.counters, all, t0.Add(time.Second)); changed || added != (Counts{}) {
		t.Errorf("an identical dump: added %+v, changed %v", added, changed)
	}
	sw.set("web", "0", pipeline.CountLater, 30)
	tot.Observe(sw.dump(), sw.counters, all, t0.Add(2*time.Second))
	if got := rules(tot)[Rule{"web", 0}]; got != (Counts{Sessions: 3, Packets: 33, Bytes: 3300}) {
		t.Errorf("web/0 after 10 more packets: %+v", got)
	}
	if p := tot.Report()[1]; p.Policy != "web" || !p.Since.Equal(t0) {
		t.Errorf("report %+v: want web counted since the first dump", p)
	}
}

// Counters that went down were reset (ovs-vswitchd restarted, the flow
// was deleted and added): all they hold counts. A flow missing from a
// dump counts from zero when it is back.
func TestCounterResets(t *testing.T) {
	sw, tot := newSwitch(t), New()
	sw.set("web", "0", pipeline.CountFirst, 10)
	tot.Observe(sw.dump(), sw.counters, all, t0)
	sw.set("web", "0", pipeline.CountFirst, 4) // reset, then 4 more
	tot.Observe(sw.dump(), sw.counters, all, t0)
	if got := rules(tot)[Rule{"web", 0}].Sessions; got != 14 {
		t.Errorf("after a reset: %d sessions, want 14", got)
	}
	gone := sw.key("web", "0", pipeline.CountFirst)
	tot.Observe(sw.dump(gone), sw.counters, all, t0)
	sw.set("web", "0", pipeline.CountFirst, 6) // back, with 6: more than before it went
	tot.Observe(sw.dump(), sw.counters, all, t0)
	if got := rules(tot)[Rule{"web", 0}].Sessions; got != 20 {
		t.Errorf("a flow that went and came back: %d sessions, want 20", got)
	}
}

// A restarted agent loads its totals and last readings; its replay
// replaces the flows in place, which keeps their counters, and flows it
// cannot name yet (its policies not loaded) keep their last reading: no
// packet is counted twice or lost.
func TestAgentRestart(t *testing.T) {
	sw, tot := newSwitch(t), New()
	path := filepath.Join(tempDir(t), "policy", "stats.json")
	sw.set("web", "0", pipeline.CountFirst, 10)
	sw.set("web", "0", pipeline.CountLater, 100)
	tot.Observe(sw.dump(), sw.counters, all, t0)
	if err := tot.Save(path); err != nil {
		t.Fatal(err)
	}
	sw.set("web", "0", pipeline.CountLater, 150) // traffic while the agent is away
	loaded, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want(t, loaded, rules(tot))
	// The first dump after the restart, before the policies are loaded.
	loaded.Observe(sw.dump(), nil, func(string) bool { return true }, t0.Add(time.Minute))
	sw.set("web", "0", pipeline.CountLater, 160)
	loaded.Observe(sw.dump(), sw.counters, all, t0.Add(2*time.Minute))
	want(t, loaded, map[Rule]Counts{
		{"web", 0}:  {Sessions: 10, Packets: 170, Bytes: 17000},
		{"web", 1}:  {},
		{"deny", 0}: {},
	})
	if p := loaded.Report(); p[len(p)-1].Policy != "web" || !p[len(p)-1].Since.Equal(t0) {
		t.Errorf("since not kept across the restart: %+v", p)
	}
}

// A policy the node no longer has keeps its totals for Retention, and
// counts on from them if it comes back; then they go.
func TestPoliciesGone(t *testing.T) {
	sw, tot := newSwitch(t), New()
	sw.set("deny", "0", pipeline.CountFirst, 1)
	tot.Observe(sw.dump(), sw.counters, all, t0)
	notDeny := func(p string) bool { return p != "deny" }
	away := sw.key("deny", "0", pipeline.CountFirst)
	tot.Observe(sw.dump(away), sw.counters, notDeny, t0.Add(time.Hour))
	sw.set("deny", "0", pipeline.CountFirst, 2) // back on the node, 2 new attempts
	tot.Observe(sw.dump(), sw.counters, all, t0.Add(2*time.Hour))
	if got := rules(tot)[Rule{"deny", 0}].Sessions; got != 3 {
		t.Errorf("a policy back within the retention: %d sessions, want 3", got)
	}
	tot.Observe(sw.dump(away), sw.counters, notDeny, t0.Add(3*time.Hour))
	if added, changed := tot.Observe(sw.dump(away), sw.counters, notDeny, t0.Add(2*time.Hour+Retention+time.Second)); !changed || added != (Counts{}) {
		t.Errorf("the retention's end: added %+v, changed %v", added, changed)
	}
	for _, p := range tot.Report() {
		if p.Policy == "deny" {
			t.Errorf("deny still reported after the retention: %+v", p)
		}
	}
}

func TestLoadRefusesOtherFiles(t *testing.T) {
	dir := tempDir(t)
	if tot, err := Load(filepath.Join(dir, "none.json")); err != nil || len(tot.Report()) != 0 {
		t.Errorf("missing file: %v, %v", tot.Report(), err)
	}
	bad := filepath.Join(dir, "bad.json")
	for _, body := range []string{`{"version":2}`, `{"version":`} {
		if err := writeFile(bad, body); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(bad); err == nil {
			t.Errorf("%s: loaded", body)
		}
	}
}

func writeFile(path, body string) error { return os.WriteFile(path, []byte(body), 0o600) }

// tempDir is a temporary directory removed at the end if the OS lets it:
// under Wine, t.TempDir's cleanup fails on any file in it
// (test/windows/README.md), and winetest removes what is left.
func tempDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "seine-policystats-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}
