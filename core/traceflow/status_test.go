package traceflow

import (
	"errors"
	"strings"
	"testing"
	"time"

	crd "github.com/seine-cni/seine/core/apis/crd/v1beta1"
)

func TestValidate(t *testing.T) {
	ok := crd.TraceflowSpec{Source: crd.Source{Namespace: "default", Pod: "a"}, Destination: crd.Destination{Namespace: "default", Pod: "b"}}
	if err := Validate(ok); err != nil {
		t.Fatalf("valid spec: %v", err)
	}
	for want, mod := range map[string]func(*crd.TraceflowSpec){
		"source needs":                  func(s *crd.TraceflowSpec) { s.Source.Pod = "" },
		"exactly one":                   func(s *crd.TraceflowSpec) { s.Destination.IP = "10.0.0.1" },
		"pod, service or ip (got 0)":    func(s *crd.TraceflowSpec) { s.Destination.Pod = "" },
		"needs a namespace":             func(s *crd.TraceflowSpec) { s.Destination = crd.Destination{Service: "web"} },
		"only IPv4":                     func(s *crd.TraceflowSpec) { s.Destination = crd.Destination{IP: "fd00::1"} },
		"destination ip":                func(s *crd.TraceflowSpec) { s.Destination = crd.Destination{IP: "nope"} },
		"want TCP, UDP":                 func(s *crd.TraceflowSpec) { s.Packet.Protocol = "SCTP" },
		"dstPort 70000":                 func(s *crd.TraceflowSpec) { s.Packet.DstPort = 70000 },
		"timeout 301":                   func(s *crd.TraceflowSpec) { s.Timeout = 301 },
		"droppedOnly needs liveTraffic": func(s *crd.TraceflowSpec) { s.DroppedOnly = true },
		"source ip is for live traffic": func(s *crd.TraceflowSpec) { s.Source = crd.Source{IP: "10.0.0.1"} },
		"a pod or an ip, not both":      func(s *crd.TraceflowSpec) { s.LiveTraffic, s.Source.IP = true, "10.0.0.1" },
		"source ip \"fd00::1\"": func(s *crd.TraceflowSpec) {
			s.LiveTraffic, s.Source = true, crd.Source{IP: "fd00::1"}
		},
		"source pod or a destination pod": func(s *crd.TraceflowSpec) {
			s.LiveTraffic, s.Source, s.Destination = true, crd.Source{IP: "10.0.0.1"}, crd.Destination{IP: "10.0.0.2"}
		},
		"live traffic is matched by protocol and ports": func(s *crd.TraceflowSpec) { s.LiveTraffic, s.Packet.TTL = true, 3 },
		"ports need a protocol with ports":              func(s *crd.TraceflowSpec) { s.LiveTraffic, s.Packet.DstPort = true, 80 },
		"live traffic needs": func(s *crd.TraceflowSpec) {
			s.LiveTraffic, s.Source, s.Destination = true, crd.Source{}, crd.Destination{}
		},
		"ttl 256": func(s *crd.TraceflowSpec) { s.Packet.TTL = 256 },
	} {
		s := ok
		mod(&s)
		err := Validate(s)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v", want, err)
		}
	}
	for name, live := range map[string]crd.TraceflowSpec{
		"from a pod to anywhere": {LiveTraffic: true, Source: crd.Source{Namespace: "default", Pod: "a"}},
		"from an IP to a pod": {LiveTraffic: true, Source: crd.Source{IP: "192.0.2.1"},
			Destination: crd.Destination{Namespace: "default", Pod: "b"}, Packet: crd.Packet{Protocol: "TCP", DstPort: 80}},
		"from anywhere to a pod, dropped only": {LiveTraffic: true, DroppedOnly: true, Destination: crd.Destination{Namespace: "default", Pod: "b"}},
		"from a pod to a Service, UDP":         {LiveTraffic: true, Source: crd.Source{Namespace: "default", Pod: "a"}, Destination: crd.Destination{Namespace: "default", Service: "dns"}, Packet: crd.Packet{Protocol: "UDP"}},
	} {
		if err := Validate(live); err != nil {
			t.Errorf("live %s: %v", name, err)
		}
	}
	if d := Timeout(ok); d != 20*time.Second {
		t.Errorf("default timeout %s", d)
	}
}

func TestEndedReady(t *testing.T) {
	fwd := crd.Observation{Component: crd.ComponentForwarding, Action: crd.ActionForwarded, TunnelDstIP: "192.168.10.12"}
	st := crd.TraceflowStatus{SourceNode: "n1", Nodes: []string{"n1", "n2"},
		Results: []crd.NodeResult{{Node: "n1", FlowsInstalled: true, Observations: []crd.Observation{sgFwd, fwd}}}}
	if Ended(crd.TraceflowSpec{}, st) {
		t.Error("forwarded into a tunnel is not the end")
	}
	if Ready(st) {
		t.Error("ready before n2 installed")
	}
	if r := TimeoutReason(crd.TraceflowSpec{}, st, 20*time.Second); !strings.Contains(r, "node n2 did not install") {
		t.Errorf("reason %q", r)
	}
	st.Results = append(st.Results, crd.NodeResult{Node: "n2", FlowsInstalled: true})
	if !Ready(st) {
		t.Error("not ready with both installed")
	}
	if r := TimeoutReason(crd.TraceflowSpec{LiveTraffic: true}, crd.TraceflowStatus{SourceNode: "n1"}, time.Second); !strings.Contains(r, "no live packet matched") {
		t.Errorf("live reason %q", r)
	}
	if r := TimeoutReason(crd.TraceflowSpec{LiveTraffic: true, DroppedOnly: true}, crd.TraceflowStatus{SourceNode: "n1"}, time.Second); !strings.Contains(r, "no matching live packet was dropped") {
		t.Errorf("droppedOnly reason %q", r)
	}
	if r := TimeoutReason(crd.TraceflowSpec{}, st, 20*time.Second); !strings.Contains(r, "last seen on n1, Forwarding Forwarded to 192.168.10.12") {
		t.Errorf("reason %q", r)
	}
	st.Results[1].Observations = []crd.Observation{received("tunnel"), {Component: crd.ComponentForwarding, Action: crd.ActionDelivered}}
	if !Ended(crd.TraceflowSpec{}, st) {
		t.Error("delivered is the end")
	}
}

// TestEndedWaitsForTheSourceNode: the destination's Delivered can reach the
// status before the source node's report (seen in the lab under load: a
// trace Succeeded with nothing from its source node); the trace ends only
// when both are in, but a droppedOnly trace ends at its drop.
func TestEndedWaitsForTheSourceNode(t *testing.T) {
	delivered := crd.NodeResult{Node: "n2", FlowsInstalled: true,
		Observations: []crd.Observation{received("tunnel"), {Component: crd.ComponentForwarding, Action: crd.ActionDelivered}}}
	st := crd.TraceflowStatus{SourceNode: "n1", Nodes: []string{"n1", "n2"},
		Results: []crd.NodeResult{{Node: "n1", FlowsInstalled: true}, delivered}}
	if Ended(crd.TraceflowSpec{}, st) {
		t.Error("ended before the source node reported")
	}
	if !HasVerdict(st.Results) {
		t.Error("no verdict in a Delivered")
	}
	if !Ended(crd.TraceflowSpec{LiveTraffic: true, DroppedOnly: true}, st) {
		t.Error("a droppedOnly trace waits for a source node that reports drops only")
	}
	st.Results[0].Observations = []crd.Observation{sgFwd}
	if !Ended(crd.TraceflowSpec{}, st) {
		t.Error("not ended with the source node's and the destination's observations")
	}
}
