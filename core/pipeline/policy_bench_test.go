package pipeline

import (
	"fmt"
	"net/netip"
	"testing"
)

// benchPolicySet: 100 local pods, 200 rules (half ingress, half egress),
// each applying to 20 pods, with 50 peer pods, a /16 block with an except,
// and 3 services (one a range).
func benchPolicySet() PolicySet {
	var s PolicySet
	for i := range 100 {
		s.IngressIsolated = append(s.IngressIsolated, uint32(10+i))
		s.EgressIsolated = append(s.EgressIsolated, uint32(10+i))
	}
	for r := range 200 {
		ru := PolicyRule{Policy: fmt.Sprintf("uid-%d", r/2), Key: fmt.Sprint(r % 2), Direction: PolicyIngress}
		if r%2 == 1 {
			ru.Direction = PolicyEgress
		}
		for i := range 20 {
			ru.Targets = append(ru.Targets, uint32(10+(r*7+i)%100))
		}
		for i := range 50 {
			a := netip.AddrFrom4([4]byte{10, 244, byte(2 + (r+i)%50), byte(i)})
			ru.Peers = append(ru.Peers, PolicyPeer{CIDR: netip.PrefixFrom(a, 32)})
		}
		ru.Peers = append(ru.Peers, PolicyPeer{CIDR: pfx("172.16.0.0/16"), Except: []netip.Prefix{pfx("172.16.5.0/24")}})
		ru.Services = []PolicyService{{Protocol: ProtoTCP, Port: uint16(8000 + r)}, {Protocol: ProtoUDP, Port: 53}, {Protocol: ProtoTCP, Port: 30000, EndPort: 32767}}
		s.Rules = append(s.Rules, ru)
	}
	return s
}

// BenchmarkPolicyFlows builds the flows of benchPolicySet.
func BenchmarkPolicyFlows(b *testing.B) {
	s := benchPolicySet()
	var n int
	for b.Loop() {
		flows, err := PolicyFlows(s, 1)
		if err != nil {
			b.Fatal(err)
		}
		n = len(flows)
	}
	b.ReportMetric(float64(n), "flows")
}
