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
		"source needs":               func(s *crd.TraceflowSpec) { s.Source.Pod = "" },
		"exactly one":                func(s *crd.TraceflowSpec) { s.Destination.IP = "10.0.0.1" },
		"pod, service or ip (got 0)": func(s *crd.TraceflowSpec) { s.Destination.Pod = "" },
		"needs a namespace":          func(s *crd.TraceflowSpec) { s.Destination = crd.Destination{Service: "web"} },
		"only IPv4":                  func(s *crd.TraceflowSpec) { s.Destination = crd.Destination{IP: "fd00::1"} },
		"destination ip":             func(s *crd.TraceflowSpec) { s.Destination = crd.Destination{IP: "nope"} },
		"want TCP, UDP":              func(s *crd.TraceflowSpec) { s.Packet.Protocol = "SCTP" },
		"dstPort 70000":              func(s *crd.TraceflowSpec) { s.Packet.DstPort = 70000 },
		"timeout 301":                func(s *crd.TraceflowSpec) { s.Timeout = 301 },
		"not supported yet":          func(s *crd.TraceflowSpec) { s.LiveTraffic = true },
		"ttl 256":                    func(s *crd.TraceflowSpec) { s.Packet.TTL = 256 },
	} {
		s := ok
		mod(&s)
		err := Validate(s)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v", want, err)
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
	if Ended(st.Results) {
		t.Error("forwarded into a tunnel is not the end")
	}
	if Ready(st) {
		t.Error("ready before n2 installed")
	}
	if r := TimeoutReason(st, 20*time.Second); !strings.Contains(r, "node n2 did not install") {
		t.Errorf("reason %q", r)
	}
	st.Results = append(st.Results, crd.NodeResult{Node: "n2", FlowsInstalled: true})
	if !Ready(st) {
		t.Error("not ready with both installed")
	}
	if r := TimeoutReason(st, 20*time.Second); !strings.Contains(r, "last seen on n1, Forwarding Forwarded to 192.168.10.12") {
		t.Errorf("reason %q", r)
	}
	st.Results[1].Observations = []crd.Observation{received("tunnel"), {Component: crd.ComponentForwarding, Action: crd.ActionDelivered}}
	if !Ended(st.Results) {
		t.Error("delivered is the end")
	}
}
