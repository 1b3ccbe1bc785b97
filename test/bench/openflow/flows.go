// Package openflowbench measures the ovs/openflow library against
// ovs-ofctl: installing representative pipeline flows in one bundle, and
// the memory a cached flow costs. See bench_test.go.
package openflowbench

import (
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/seine-cni/seine/ovs/openflow"
)

// NumGroups is how many select groups the service flows refer to; they
// must exist before the flows are installed.
const NumGroups = 64

// Groups returns the service load-balancing groups the flows use.
func Groups() []*openflow.GroupEntry {
	var gs []*openflow.GroupEntry
	for i := 0; i < NumGroups; i++ {
		g := &openflow.GroupEntry{ID: uint32(i + 1), Type: openflow.GroupTypeSelect, SelectionMethod: "hash",
			Fields: []*openflow.Field{openflow.FieldIPSrc, openflow.FieldIPDst, openflow.FieldIPProto, openflow.FieldTCPSrc, openflow.FieldTCPDst}}
		for j := 0; j < 2; j++ {
			ep := netip.AddrFrom4([4]byte{10, 244, byte(i), byte(j + 2)})
			g.Buckets = append(g.Buckets, openflow.Bucket{ID: uint32(j), Weight: 100,
				Actions: openflow.NewActions().SetFieldUint(openflow.Reg(3), uint64(binary.BigEndian.Uint32(ep.AsSlice()))).
					Load(openflow.Reg(4).Range(0, 15), 8080).Resubmit(openflow.PortInPort, 42)})
		}
		gs = append(gs, g)
	}
	return gs
}

// Flows returns n flows shaped like an Antrea-style pipeline's: pod
// classification, spoof guard, conntrack, service load balancing, policy
// conjunctions, L3 forwarding and L2 output, in rotation. Match and Actions
// builders are reused, so the result holds only the flows themselves.
func Flows(n int) []*openflow.Flow {
	flows := make([]*openflow.Flow, 0, n)
	m, a := openflow.NewMatch(), openflow.NewActions()
	const cookie = 0x1000_0000_0000_0000
	for i := 0; len(flows) < n; i++ {
		port := uint32(i/8 + 10) // OVS ports are 16-bit: stay below 0xff00
		ip4 := [4]byte{10, byte(1 + i>>16), byte(i >> 8), byte(i)}
		podIP := netip.AddrFrom4(ip4)
		mac := net.HardwareAddr{0x0a, 0x58, ip4[0], ip4[1], ip4[2], ip4[3]}
		var f *openflow.Flow
		switch i % 8 {
		case 0: // classifier: pod port → mark source, go to spoof guard
			f = openflow.NewFlow(0, 190).Match(m.Reset().InPort(port)).
				Actions(a.Reset().Load(openflow.Reg(0).Range(0, 3), 2).GotoTable(10))
		case 1: // spoof guard
			f = openflow.NewFlow(10, 200).Match(m.Reset().IP().InPort(port).EthSrc(mac).IPSrcAddr(podIP)).
				Actions(a.Reset().GotoTable(20))
		case 2: // conntrack zone
			f = openflow.NewFlow(20, 200).Match(m.Reset().IP().Reg(0, 2, 0xf).IPSrcAddr(podIP)).
				Actions(a.Reset().CT(openflow.NewCT().Zone(65520).Table(21).NAT(openflow.NAT{})))
		case 3: // service load balancing
			f = openflow.NewFlow(40, 200).Match(m.Reset().TCP().IPDstAddr(netip.AddrFrom4([4]byte{10, 96, ip4[2], ip4[3]})).TCPDst(uint16(80 + i%1000))).
				Actions(a.Reset().Load(openflow.Reg(4).Range(16, 18), 2).Group(uint32(i%NumGroups + 1)))
		case 4: // egress policy: conjunction clause
			f = openflow.NewFlow(50, 200).Match(m.Reset().IP().IPSrcAddr(podIP)).
				Actions(a.Reset().Conjunction(uint32(i%5000+1), 1, 3))
		case 5: // egress policy: conjunction hit
			f = openflow.NewFlow(50, 190).Match(m.Reset().ConjID(uint32(i))).
				Actions(a.Reset().Load(openflow.Reg(3).All(), uint64(i)).GotoTable(60))
		case 6: // L3 forwarding to a local pod
			f = openflow.NewFlow(70, 200).Match(m.Reset().IP().Reg(0, 0x200, 0x200).IPDstAddr(podIP)).
				Actions(a.Reset().SetEthSrc(net.HardwareAddr{0x0a, 0x58, 0, 0, 0, 1}).SetEthDst(mac).DecTTL().GotoTable(80))
		case 7: // L2 output
			f = openflow.NewFlow(80, 200).Match(m.Reset().EthDst(mac)).
				Actions(a.Reset().Load(openflow.Reg(1).All(), uint64(port)).Load(openflow.Reg(0).Bit(16), 1).GotoTable(90))
		}
		flows = append(flows, f.Cookie(cookie|uint64(i%8)))
	}
	return flows
}
