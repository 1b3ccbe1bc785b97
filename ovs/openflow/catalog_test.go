package openflow

import (
	"net/netip"
)

// The catalog is one flow per feature: every supported match field and
// action appears at least once. The unit tests check the rendered text, the
// integration test installs all of them into a real ovs-vswitchd and compares
// with ovs-ofctl's dump.

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ip(s string) netip.Addr    { return netip.MustParseAddr(s) }

type catalogFlow struct {
	name string
	flow *Flow
	want string // ovs-ofctl -O OpenFlow15 dump-flows --no-stats line (trimmed)
}

func catalogGroups() []*GroupEntry {
	return []*GroupEntry{
		{ID: 4, Type: GroupTypeSelect, SelectionMethod: "hash", Fields: []*Field{FieldIPSrc, FieldIPProto, FieldTCPSrc},
			Buckets: []Bucket{
				{ID: 0, Weight: 100, Actions: NewActions().CT(NewCT().Commit().NAT(NAT{Dst: true, IPMin: ip("10.0.0.1"), PortMin: 80}))},
				{ID: 1, Weight: 50, Actions: NewActions().Output(2)},
			}},
		{ID: 5, Type: GroupTypeAll, Buckets: []Bucket{{ID: 0, Actions: NewActions().Output(1)}, {ID: 1, Actions: NewActions().Output(2)}}},
		{ID: 6, Type: GroupTypeIndirect, Buckets: []Bucket{{ID: 0, Actions: NewActions().Output(1)}}},
	}
}

var catalogGroupText = []string{
	"group_id=4,type=select,selection_method=hash,fields(ip_src,nw_proto,tcp_src),bucket=bucket_id:0,weight:100,actions=ct(commit,nat(dst=10.0.0.1:80)),bucket=bucket_id:1,weight:50,actions=output:2",
	"group_id=5,type=all,bucket=bucket_id:0,actions=output:1,bucket=bucket_id:1,actions=output:2",
	"group_id=6,type=indirect,bucket=bucket_id:0,actions=output:1",
}

func catalogMeters() []*MeterEntry {
	return []*MeterEntry{
		{ID: 2, Flags: MeterKbps | MeterBurst, Bands: []MeterBand{{Rate: 1000, BurstSize: 100}}},
		{ID: 3, Flags: MeterPktps, Bands: []MeterBand{{Rate: 10}}},
	}
}

var catalogMeterText = []string{
	"meter=2 kbps burst bands=\ntype=drop rate=1000 burst_size=100",
	"meter=3 pktps bands=\ntype=drop rate=10",
}

var (
	mac1 = mac("00:00:00:00:00:01")
	mac2 = mac("0a:00:00:00:00:02")
)

func catalog() []catalogFlow {
	M, A := NewMatch, NewActions
	label := make([]byte, 16)
	label[15] = 1
	xx := make([]byte, 16)
	xx[3], xx[15] = 7, 9
	xxMask := make([]byte, 16)
	xxMask[3], xxMask[15] = 0xff, 0x0f
	flows := []catalogFlow{
		{"in_port eth ip masked, load resubmit", NewFlow(0, 100).Match(M().IP().InPort(3).EthSrc(mac1).IPSrc(pfx("10.0.0.0/24"))).
			Actions(A().Load(Reg(0).Range(0, 15), 1).Resubmit(PortInPort, 1)),
			"priority=100,ip,in_port=3,dl_src=00:00:00:00:00:01,nw_src=10.0.0.0/24 actions=set_field:0x1/0xffff->reg0,resubmit(,1)"},
		{"tcp reg masked, ct commit nat exec", NewFlow(1, 200).Cookie(0x55).Match(M().TCP().IPDst(pfx("10.1.0.1/32")).TCPDst(80).Reg(0, 1, 0xffff)).
			Actions(A().CT(NewCT().Commit().Zone(65520).Table(2).NAT(NAT{Dst: true, IPMin: ip("10.0.0.5"), PortMin: 8080}).
				Exec(A().SetFieldMasked(FieldCTMark, []byte{0, 0, 0, 1}, []byte{0, 0, 0, 1}))).Output(2)),
			"cookie=0x55, table=1, priority=200,tcp,reg0=0x1/0xffff,nw_dst=10.1.0.1,tp_dst=80 actions=ct(commit,table=2,zone=65520,nat(dst=10.0.0.5:8080),exec(set_field:0x1/0x1->ct_mark)),output:2"},
		{"drop", NewFlow(2, 0), "table=2, priority=0 actions=drop"},
		{"ct_state ct_zone ct_mark ipv6, set_field move goto", NewFlow(3, 10).Match(M().CTState(CTNew|CTTracked, CTNew|CTTracked).CTZone(5).CTMark(2, 0xff).IPv6().IPv6Src(pfx("fe80::/64"))).
			Actions(A().SetReg(3, 5).Move(Reg(0).All(), Reg(1).All()).GotoTable(4)),
			"table=3, priority=10,ct_state=+new+trk,ct_zone=5,ct_mark=0x2/0xff,ipv6,ipv6_src=fe80::/64 actions=set_field:0x5->reg3,move:NXM_NX_REG0[]->NXM_NX_REG1[],goto_table:4"},
		{"arp, conjunction", NewFlow(4, 5).Match(M().ARP().ARPOp(1).ARPTPA(pfx("10.0.0.1/32"))).Actions(A().Conjunction(7, 1, 2)),
			"table=4, priority=5,arp,arp_tpa=10.0.0.1,arp_op=1 actions=conjunction(7,1/2)"},
		{"conj_id, controller2", NewFlow(4, 6).Match(M().ConjID(7).IP()).
			Actions(A().Controller(Controller{Reason: ReasonNoMatch, MaxLen: 128, ControllerID: 3, Userdata: []byte{1, 2, 3}, Pause: true, MeterID: 2})),
			"table=4, priority=6,conj_id=7,ip actions=controller(reason=no_match,max_len=128,id=3,userdata=01.02.03,pause,meter_id=2)"},
		{"udp port mask ttl dscp, misc actions", NewFlow(5, 7).Match(M().UDP().UDPSrcMasked(0x1000, 0xf000).NwTTL(5).IPDSCP(4)).
			Actions(A().DecTTL().PushVLAN(0x8100).SetVlanVID(100).PopVLAN().Note([]byte{1, 2}).OutputReg(Reg(1).Range(0, 15)).
				Group(4).OutputInPort().OutputLocal().OutputController(65535)),
			"table=5, priority=7,udp,nw_tos=16,nw_ttl=5,tp_src=0x1000/0xf000 actions=dec_ttl,push_vlan:0x8100,set_field:4196->vlan_vid,pop_vlan,note:01.02.00.00.00.00,output:NXM_NX_REG1[0..15],group:4,IN_PORT,LOCAL,CONTROLLER:65535"},
		{"tunnel pkt_mark metadata, learn resubmit ct", NewFlow(6, DefaultPriority).Match(M().CTState(CTTracked, CTTracked|CTInvalid).IP().IPProto(6).
			TunID(5, ^uint64(0)).TunDst(pfx("192.168.1.1/32")).PktMark(3, 0xf).Metadata(1, 0xff)).
			Actions(A().Learn(&Learn{TableID: 7, IdleTimeout: 60, Priority: 200, Cookie: 3, FinIdle: 5, FinHard: 10, DeleteLearned: true}).
				ResubmitCT(PortInPort, 8).Resubmit(5, 8)),
			"table=6, pkt_mark=0x3/0xf,ct_state=-inv+trk,tcp,tun_id=0x5,tun_dst=192.168.1.1,metadata=0x1/0xff actions=learn(table=7,idle_timeout=60,fin_idle_timeout=5,fin_hard_timeout=10,priority=200,delete_learned,cookie=0x3),resubmit(,8,ct),resubmit(5,8)"},
		{"learn specs", NewFlow(7, 100).Match(M().TCP()).
			Actions(A().Learn(NewLearn(8).MatchValue(FieldEthType.All(), 0x800).MatchValue(FieldIPProto.All(), 6).
				MatchField(FieldIPSrc.All(), FieldIPSrc.All()).MatchField(FieldIPDst.All(), FieldIPDst.All()).MatchField(FieldTCPDst.All(), FieldTCPDst.All()).
				MatchField(Reg(2).All(), Reg(3).All()).
				LoadField(Reg(3).All(), Reg(3).All()).LoadValue(Reg(0).Bit(19), 1).Output(FieldInPort16.All()))),
			"table=7, priority=100,tcp actions=learn(table=8,eth_type=0x800,nw_proto=6,NXM_OF_IP_SRC[],NXM_OF_IP_DST[],NXM_OF_TCP_DST[],NXM_NX_REG2[]=NXM_NX_REG3[],load:NXM_NX_REG3[]->NXM_NX_REG3[],load:0x1->NXM_NX_REG0[19],output:NXM_OF_IN_PORT[])"},
		{"ipv6 tcp6 label tcp_flags", NewFlow(9, 1).Match(M().TCP6().IPv6Dst(pfx("fd00::1/128")).IPv6Label(0x12345, 0xfffff).TCPFlags(0x002, 0x012).TCPSrcMasked(0x400, 0xfc00)),
			"table=9, priority=1,tcp6,ipv6_dst=fd00::1,ipv6_label=0x12345,tp_src=0x400/0xfc00,tcp_flags=+syn-ack actions=drop"},
		{"icmp", NewFlow(9, 2).Match(M().ICMP().ICMPType(8).ICMPCode(0).IPECN(1)), "table=9, priority=2,icmp,nw_ecn=1,icmp_type=8,icmp_code=0 actions=drop"},
		{"icmp6 nd", NewFlow(9, 3).Match(M().ICMP6().ICMPv6Type(135).ICMPv6Code(0).NDTarget(ip("fd00::5")).NDSLL(mac2)), "table=9, priority=3,icmp6,icmp_type=135,icmp_code=0,nd_target=fd00::5,nd_sll=0a:00:00:00:00:02 actions=drop"},
		{"icmp6 nd tll", NewFlow(9, 4).Match(M().ICMP6().ICMPv6Type(136).NDTLL(mac2)), "table=9, priority=4,icmp6,icmp_type=136,nd_tll=0a:00:00:00:00:02 actions=drop"},
		{"arp full", NewFlow(9, 5).Match(M().ARP().ARPSPA(pfx("10.0.0.0/8")).ARPSHA(mac1).ARPTHA(mac2).EthDstMasked(mac2, mac("ff:ff:ff:00:00:00"))), "table=9, priority=5,arp,dl_dst=0a:00:00:00:00:00/ff:ff:ff:00:00:00,arp_spa=10.0.0.0/8,arp_sha=00:00:00:00:00:01,arp_tha=0a:00:00:00:00:02 actions=drop"},
		{"vlan", NewFlow(9, 6).Match(M().VlanVID(10).VlanPCP(3)), "table=9, priority=6,dl_vlan=10,dl_vlan_pcp=3 actions=drop"},
		{"sctp", NewFlow(9, 7).Match(M().SCTP().SCTPSrc(1000).SCTPDstMasked(0x100, 0xff00)), "table=9, priority=7,sctp,tp_src=1000,tp_dst=0x100/0xff00 actions=drop"},
		{"udp6", NewFlow(9, 8).Match(M().UDP6().UDPDst(53)), "table=9, priority=8,udp6,tp_dst=53 actions=drop"},
		{"nw_frag later", NewFlow(9, 9).Match(M().UDP().IPDst(pfx("10.96.0.10/32")).NwFrag(NwFragAny|NwFragLater, NwFragAny|NwFragLater)), "table=9, priority=9,udp,nw_dst=10.96.0.10,nw_frag=later actions=drop"},
		{"nw_frag first", NewFlow(9, 10).Match(M().IP().NwFrag(NwFragAny, NwFragAny|NwFragLater)), "table=9, priority=10,ip,nw_frag=first actions=drop"},
		{"nw_frag yes", NewFlow(9, 11).Match(M().IP().NwFrag(NwFragAny, NwFragAny)), "table=9, priority=11,ip,nw_frag=yes actions=drop"},
		{"nw_frag not_later", NewFlow(9, 12).Match(M().IP().NwFrag(0, NwFragLater)), "table=9, priority=12,ip,nw_frag=not_later actions=drop"},
		{"ct tuple v4", NewFlow(10, 1).Match(M().CTState(CTTracked|CTEstablished, CTTracked|CTEstablished).IP().CTNwProto(6).CTNwSrc(pfx("10.0.0.0/16")).CTNwDst(pfx("10.96.0.1/32")).CTTpSrc(1234).CTTpDst(443)), "table=10, priority=1,ct_state=+est+trk,ct_nw_src=10.0.0.0/16,ct_nw_dst=10.96.0.1,ct_nw_proto=6,ct_tp_src=1234,ct_tp_dst=443,ip actions=drop"},
		{"ct tuple v6 label", NewFlow(10, 2).Match(M().CTState(CTTracked|CTReply, CTTracked|CTReply).IPv6().CTNwProto(17).CTIPv6Src(pfx("fd00::/64")).CTIPv6Dst(pfx("fd00::1/128")).CTLabel(0, 1, 0, 0xff)), "table=10, priority=2,ct_state=+rpl+trk,ct_label=0x1/0xff,ct_ipv6_src=fd00::/64,ct_ipv6_dst=fd00::1,ct_nw_proto=17,ipv6 actions=drop"},
		{"xxreg tun_src", NewFlow(10, 3).Match(M().XXReg(0, xx, nil).TunSrc(pfx("192.168.0.0/16"))), "table=10, priority=3,reg0=0x7,reg1=0,reg2=0,reg3=0x9,tun_src=192.168.0.0/16 actions=drop"},
		{"tun_metadata", NewFlow(10, 4).Match(M().TunMetadata(0, []byte{0, 0, 0, 5}, nil)), "table=10, priority=4,tun_metadata0=0x5 actions=drop"},
		{"eth_type other, eth dst", NewFlow(10, 5).Match(M().EthType(0x88cc).EthDst(mac2)), "table=10, priority=5,dl_dst=0a:00:00:00:00:02,dl_type=0x88cc actions=drop"},
		{"set fields", NewFlow(11, 1).Match(M().IP()).
			Actions(A().SetEthSrc(mac1).SetEthDst(mac2).SetIPSrc(ip("10.0.0.9")).SetIPDst(ip("10.0.0.10")).SetTunDst(ip("192.168.9.9")).SetTunID(0x10).
				SetFieldUint(FieldPktMark, 7).Load(XXReg(1).Range(0, 63), 0xabc).Move(FieldIPSrc.All(), Reg(4).All())),
			"table=11, priority=1,ip actions=set_field:00:00:00:00:00:01->eth_src,set_field:0a:00:00:00:00:02->eth_dst,set_field:10.0.0.9->ip_src,set_field:10.0.0.10->ip_dst,set_field:192.168.9.9->tun_dst,set_field:0x10->tun_id,set_field:0x7->pkt_mark,set_field:0xabc/0xffffffffffffffff->xxreg1,move:NXM_OF_IP_SRC[]->NXM_NX_REG4[]"},
		{"nat src range", NewFlow(11, 2).Match(M().CTState(CTNew|CTTracked, CTNew|CTTracked).IP()).
			Actions(A().CT(NewCT().Commit().ZoneField(Reg(6).Range(0, 15)).NAT(NAT{Src: true, IPMin: ip("10.0.0.1"), IPMax: ip("10.0.0.9"), PortMin: 1000, PortMax: 2000, Persistent: true, Random: true}).
				Exec(A().SetFieldMasked(FieldCTLabel, label, label).Load(FieldCTMark.Range(4, 7), 3)))),
			"table=11, priority=2,ct_state=+new+trk,ip actions=ct(commit,zone=NXM_NX_REG6[0..15],nat(src=10.0.0.1-10.0.0.9:1000-2000,persistent,random),exec(set_field:0x1/0x1->ct_label,set_field:0x30/0xf0->ct_mark))"},
		{"nat plain, ct alg, ct_clear", NewFlow(11, 3).Match(M().TCP()).
			Actions(A().CT(NewCT().Table(12).Zone(3).NAT(NAT{})).CT(NewCT().Commit().Alg(21)).CTClear()),
			"table=11, priority=3,tcp actions=ct(table=12,zone=3,nat),ct(commit,alg=ftp),ct_clear"},
		{"nat v6 hash", NewFlow(11, 4).Match(M().IPv6()).
			Actions(A().CT(NewCT().Commit().NAT(NAT{Dst: true, IPMin: ip("fd00::1"), PortMin: 80, Hash: true}))),
			"table=11, priority=4,ipv6 actions=ct(commit,nat(dst=[fd00::1]:80,hash))"},
		{"instructions", NewFlow(11, 5).IdleTimeout(30).HardTimeout(60).Flags(FlagSendFlowRem).Match(M().InPort(1)).
			Actions(A().Meter(3).Output(2).ClearActions().WriteMetadata(0x10, 0xf0).GotoTable(12)),
			"table=11, idle_timeout=30, hard_timeout=60, send_flow_rem priority=5,in_port=1 actions=meter:3,output:2,clear_actions,write_metadata:0x10/0xf0,goto_table:12"},
		{"tun_metadata masked, set tun_metadata, xxreg masked", NewFlow(10, 6).Match(M().TunMetadata(1, []byte{0, 0, 0x12, 0}, []byte{0, 0, 0xff, 0}).XXReg(2, xx, xxMask)).
			Actions(A().SetField(TunMetadata(0), []byte{0, 0, 0, 7}).Output(1)),
			"table=10, priority=6,reg8=0x7/0xff,reg11=0x9/0xf,tun_metadata1=0x1200/0xff00 actions=set_field:0x7->tun_metadata0,output:1"},
	}
	_ = label
	_ = xx
	return flows
}
