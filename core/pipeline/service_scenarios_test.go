package pipeline

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/seine-cni/seine/core/hostport"
	"github.com/seine-cni/seine/core/proxy"
	"github.com/seine-cni/seine/ovs/openflow"
)

// The Services of the service golden file and tracer cases, on the
// bridged Geneve node of scenarios() with the service proxy on.

var (
	webVIP      = netip.MustParseAddr("10.96.0.10")
	npVIP       = netip.MustParseAddr("10.96.0.11")
	stickyVIP   = netip.MustParseAddr("10.96.0.12")
	localVIP    = netip.MustParseAddr("10.96.0.13")
	dayVIP      = netip.MustParseAddr("10.96.0.14")
	udpVIP      = netip.MustParseAddr("10.96.0.15")
	lbIP        = netip.MustParseAddr("192.0.2.10")
	extSvcIP    = netip.MustParseAddr("192.0.2.20")
	clientIP    = netip.MustParseAddr("198.51.100.7") // inside np's source range
	strangerIP  = netip.MustParseAddr("203.0.113.9")  // outside it
	clientMAC   = mustMAC("52:54:00:00:99:07")
	sourceRange = pfx("198.51.100.0/24")
)

func ep(ip netip.Addr, port uint16, local bool) proxy.Endpoint {
	return proxy.Endpoint{IP: ip, Port: port, Local: local, Ready: true, Serving: true}
}

// serviceFixtures: web (three ports: http, also on node port 30081, to a
// local and a remote endpoint; dns without endpoints; syslog, a second UDP
// port), np (NodePort, external and load-balancer IPs,
// externalTrafficPolicy Local, a source range), sticky (ClientIP affinity),
// local (internalTrafficPolicy Local without local endpoints), day (UDP,
// affinity of a day: beyond OpenFlow's 16-bit timeouts).
func serviceFixtures() ([]*proxy.Service, map[string]map[string]uint32) {
	web := &proxy.Service{Namespace: "default", Name: "web", Ports: []proxy.Port{
		{Name: "dns", Protocol: proxy.ProtoUDP, Port: 53, ClusterIP: webVIP, ClusterEndpoints: []proxy.Endpoint{}},
		{Name: "http", Protocol: proxy.ProtoTCP, Port: 80, ClusterIP: webVIP, NodePort: 30081, HasEndpoints: true,
			ClusterEndpoints: []proxy.Endpoint{ep(webIP, 8080, true), ep(peerBPod, 8080, false)}},
		{Name: "syslog", Protocol: proxy.ProtoUDP, Port: 514, ClusterIP: webVIP, HasEndpoints: true,
			ClusterEndpoints: []proxy.Endpoint{ep(webIP, 5514, true)}},
	}}
	np := &proxy.Service{Namespace: "default", Name: "np", Ports: []proxy.Port{{
		Protocol: proxy.ProtoTCP, Port: 80, ClusterIP: npVIP, NodePort: 30080,
		ExternalIPs: []netip.Addr{extSvcIP}, LoadBalancerIPs: []netip.Addr{lbIP},
		SourceRanges: []netip.Prefix{sourceRange}, ExternalLocal: true, HasEndpoints: true,
		ClusterEndpoints: []proxy.Endpoint{ep(dbIP, 5432, true), ep(peerCPod, 5432, false)},
		LocalEndpoints:   []proxy.Endpoint{ep(dbIP, 5432, true)},
	}}}
	sticky := &proxy.Service{Namespace: "default", Name: "sticky", Ports: []proxy.Port{{
		Protocol: proxy.ProtoTCP, Port: 80, ClusterIP: stickyVIP, AffinitySeconds: 10800, HasEndpoints: true,
		ClusterEndpoints: []proxy.Endpoint{ep(webIP, 8080, true), ep(peerBPod, 8080, false)},
	}}}
	local := &proxy.Service{Namespace: "default", Name: "local", Ports: []proxy.Port{{
		Protocol: proxy.ProtoTCP, Port: 80, ClusterIP: localVIP, InternalLocal: true, HasEndpoints: true,
		LocalEndpoints: []proxy.Endpoint{},
	}}}
	day := &proxy.Service{Namespace: "default", Name: "day", Ports: []proxy.Port{{
		Protocol: proxy.ProtoUDP, Port: 53, ClusterIP: dayVIP, AffinitySeconds: 86400, HasEndpoints: true,
		ClusterEndpoints: []proxy.Endpoint{ep(dbIP, 5353, true)},
	}}}
	ids := map[string]map[string]uint32{
		"default/web":    {"http/TCP": 1, "dns/UDP": 2, "syslog/UDP": 7},
		"default/np":     {"/TCP": 3},
		"default/sticky": {"/TCP": 4},
		"default/local":  {"/TCP": 5},
		"default/day":    {"/UDP": 6},
	}
	return []*proxy.Service{web, np, sticky, local, day}, ids
}

// serviceState is the bridged Geneve node with the service proxy on.
func serviceState() State {
	return withHostPorts(baseState(OSLinux, BridgedUplink, Encap, Geneve))
}

// withHostPorts turns the service proxy on and gives the pods the upstream
// HostPort spec's three mappings of port 54323 (web-0 TCP on the node IP,
// db-0 UDP on the node IP and TCP on 127.0.0.1, the host's alone: no
// flow) and web-0 TCP 8443 on every address.
func withHostPorts(s State) State {
	s.Node.ServiceProxy = true
	s.Pods[0].HostPorts = []hostport.Mapping{
		{Protocol: hostport.TCP, HostIP: nodeIP, HostPort: 54323, PodPort: 8080},
		{Protocol: hostport.TCP, HostPort: 8443, PodPort: 8080},
	}
	s.Pods[1].HostPorts = []hostport.Mapping{
		{Protocol: hostport.UDP, HostIP: nodeIP, HostPort: 54323, PodPort: 5353},
		{Protocol: hostport.TCP, HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 54323, PodPort: 5432},
	}
	return s
}

// serviceFlowsOf builds the node's flows and every fixture Service's.
func serviceFlowsOf(t *testing.T) ([]*openflow.Flow, []*openflow.GroupEntry) {
	t.Helper()
	st := serviceState()
	flows := buildOrFail(t, st, goldenRound)
	var groups []*openflow.GroupEntry
	svcs, ids := serviceFixtures()
	for _, s := range svcs {
		set, err := ServiceFlows(st.Node, s, ids[s.Key()], goldenRound)
		if err != nil {
			t.Fatalf("service %s: %v", s.Key(), err)
		}
		flows = append(flows, set.Flows...)
		groups = append(groups, set.Groups...)
	}
	Sort(flows)
	slices.SortFunc(groups, func(a, b *openflow.GroupEntry) int { return int(a.ID) - int(b.ID) })
	return flows, groups
}

// groupText renders groups one per line as "ovs-ofctl dump-groups" does.
func groupText(groups []*openflow.GroupEntry) string {
	var sb strings.Builder
	for _, g := range groups {
		sb.WriteString(g.String() + "\n")
	}
	return sb.String()
}

// TestServiceGolden compares the node's flows and the fixture Services'
// flows and groups with testdata/services-bridged-geneve.flows.
func TestServiceGolden(t *testing.T) {
	flows, groups := serviceFlowsOf(t)
	checkGolden(t, "services-bridged-geneve", Text(flows)+groupText(groups))
}
