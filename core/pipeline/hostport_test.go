package pipeline

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/seine-cni/seine/core/hostport"
	"github.com/seine-cni/seine/ovs/openflow"
)

// A client on the uplink reaches a pod's host port on the node IP: the
// pod gets the connection with the client's address, the reply leaves by
// the uplink from the host port, and the mappings of one port number are
// told apart by protocol.
func TestTraceHostPortFromUplink(t *testing.T) {
	tr := serviceTracer(t, 0)
	syn := TCPPacket(portUplink, clientMAC, nodeMAC, clientIP, nodeIP, 50000, 54323)
	out := wantOutput(t, trace(t, tr, syn), portWeb)
	wantTuple(t, out.Packet, clientIP, 50000, webIP, 8080)
	wantMACs(t, out.Packet, gatewayMAC, webMAC)
	back := wantOutput(t, trace(t, tr, reply(out.Packet, portWeb)), portUplink)
	wantTuple(t, back.Packet, nodeIP, 54323, clientIP, 50000)
	wantMACs(t, back.Packet, nodeMAC, clientMAC)

	// UDP on the same port number: db-0.
	dg := UDPPacket(portUplink, clientMAC, nodeMAC, clientIP, nodeIP, 50001, 54323)
	out = wantOutput(t, trace(t, tr, dg), portDB)
	wantTuple(t, out.Packet, clientIP, 50001, dbIP, 5353)
	back = wantOutput(t, trace(t, tr, reply(out.Packet, portDB)), portUplink)
	wantTuple(t, back.Packet, nodeIP, 54323, clientIP, 50001)

	// A mapping without hostIP: every node address.
	out = wantOutput(t, trace(t, tr, TCPPacket(portUplink, clientMAC, nodeMAC, clientIP, nodeIP, 50002, 8443)), portWeb)
	wantTuple(t, out.Packet, clientIP, 50002, webIP, 8080)

	// Another port of the node IP is still the host's.
	wantOutput(t, trace(t, tr, TCPPacket(portUplink, clientMAC, nodeMAC, clientIP, nodeIP, 50003, 54324)), openflow.PortLocal)
}

// A pod reaches another pod's host port on the node IP (as the host's
// PREROUTING DNAT of a portmap plugin would), and its own through SNAT.
func TestTraceHostPortFromPod(t *testing.T) {
	tr := serviceTracer(t, 0)
	out := wantOutput(t, trace(t, tr, TCPPacket(portDB, dbMAC, gatewayMAC, dbIP, nodeIP, 40000, 54323)), portWeb)
	wantTuple(t, out.Packet, dbIP, 40000, webIP, 8080)
	back := wantOutput(t, trace(t, tr, reply(out.Packet, portWeb)), portDB)
	wantTuple(t, back.Packet, nodeIP, 54323, dbIP, 40000)
	// web-0 to its own host port: hairpin.
	out = wantOutput(t, trace(t, tr, TCPPacket(portWeb, webMAC, gatewayMAC, webIP, nodeIP, 40001, 8443)), portWeb)
	if out.Packet.IPSrc != gatewayIP || out.Packet.IPDst != webIP || out.Packet.DstPort != 8080 {
		t.Errorf("hairpin %s, want %s -> %s:8080", out.Packet, gatewayIP, webIP)
	}
}

// The 127.0.0.1 mapping gets no flow: it is the host's to DNAT. A host
// port is the pod's: it goes with the pod's cookie.
func TestHostPortFlowsArePods(t *testing.T) {
	st := serviceState()
	db, err := PodFlows(st.Node, st.Pods[1], goldenRound)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for _, f := range db {
		s := f.String()
		if strings.Contains(s, "tp_dst=54323") {
			n++
			if !strings.Contains(s, "udp") {
				t.Errorf("db-0's only bridge mapping is UDP: %s", s)
			}
			if Cookie(f.CookieValue()).Category() != CategoryPod {
				t.Errorf("not under the pod's cookie: %s", s)
			}
		}
	}
	if n != 2 { // the uplink's Classifier and ServiceLB
		t.Errorf("%d flows of db-0's host ports, want 2", n)
	}
	// Without the service proxy (kube-proxy mode) the host maps them alone.
	st.Node.ServiceProxy = false
	db, err = PodFlows(st.Node, st.Pods[1], goldenRound)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range db {
		if strings.Contains(f.String(), "54323") {
			t.Errorf("host port flow without the proxy: %s", f)
		}
	}
}

// A Windows node (bridged uplink, the Hyper-V extension) takes the same
// host port flows as a Linux node with the netdev datapath.
func TestHostPortFlowsWindows(t *testing.T) {
	lin := serviceState()
	win := withHostPorts(baseState(OSWindows, BridgedUplink, Encap, Geneve))
	if got, want := Text(buildOrFail(t, win, goldenRound)), Text(buildOrFail(t, lin, goldenRound)); got != want {
		t.Errorf("windows flows differ from linux bridged:\n%s", lineDiff(want, got))
	}
}

func TestHostPortValidation(t *testing.T) {
	any80 := hostport.Mapping{Protocol: hostport.TCP, HostPort: 80, PodPort: 8080}
	node80 := hostport.Mapping{Protocol: hostport.TCP, HostIP: nodeIP, HostPort: 80, PodPort: 80}
	for name, mut := range map[string]func(*State){
		"two pods": func(s *State) {
			s.Pods[0].HostPorts, s.Pods[1].HostPorts = []hostport.Mapping{any80}, []hostport.Mapping{node80}
		},
		"one pod": func(s *State) { s.Pods[0].HostPorts = []hostport.Mapping{node80, any80} },
		"IPv6": func(s *State) {
			s.Pods[0].HostPorts = []hostport.Mapping{{Protocol: hostport.TCP, HostIP: netip.MustParseAddr("::1"), HostPort: 80, PodPort: 80}}
		},
		"port 0":     func(s *State) { s.Pods[0].HostPorts = []hostport.Mapping{{Protocol: hostport.TCP, PodPort: 80}} },
		"protocol 1": func(s *State) { s.Pods[0].HostPorts = []hostport.Mapping{{Protocol: 1, HostPort: 80, PodPort: 80}} },
	} {
		st := serviceState()
		st.Pods[0].HostPorts, st.Pods[1].HostPorts = nil, nil
		mut(&st)
		if _, err := Build(st, goldenRound); err == nil {
			t.Errorf("%s: built, want an error", name)
		}
	}
}

// The gateway has route_localnet (the host's connections from 127.0.0.1
// to a host port leave by it), so the bridge never hands the host a pod's
// packet to 127.0.0.0/8 (CVE-2020-8558), on any node.
func TestTracePodToLoopbackDropped(t *testing.T) {
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			tr, err := NewTracer(buildOrFail(t, sc.state, goldenRound))
			if err != nil {
				t.Fatal(err)
			}
			wantDrop(t, trace(t, tr, TCPPacket(portWeb, webMAC, gatewayMAC, webIP, netip.MustParseAddr("127.0.0.1"), 40000, 10250)), L3Forwarding, "")
		})
	}
}
