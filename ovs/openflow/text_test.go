package openflow

import (
	"errors"
	"strings"
	"testing"
)

func TestCatalogText(t *testing.T) {
	for _, cf := range catalog() {
		if got := cf.flow.String(); got != cf.want {
			t.Errorf("%s:\n got  %s\n want %s", cf.name, got, cf.want)
		}
	}
}

func TestGroupMeterText(t *testing.T) {
	for i, g := range catalogGroups() {
		if got := g.String(); got != catalogGroupText[i] {
			t.Errorf("group %d:\n got  %s\n want %s", g.ID, got, catalogGroupText[i])
		}
	}
	for i, m := range catalogMeters() {
		if got := m.String(); got != catalogMeterText[i] {
			t.Errorf("meter %d:\n got  %q\n want %q", m.ID, got, catalogMeterText[i])
		}
	}
}

func TestMatchText(t *testing.T) {
	for _, tc := range []struct {
		m    *Match
		want string
	}{
		{NewMatch(), ""},
		{NewMatch().CTState(CTNew|CTTracked, 0xff), "ct_state=new|trk"},
		{NewMatch().CTState(0, 0xff), "ct_state=0"},
		{NewMatch().Reg(3, 0, 0xffffffff), "reg3=0"},
		{NewMatch().RegBits(1, 16, 31, 0xab), "reg1=0xab0000/0xffff0000"},
		{NewMatch().TCP().TCPFlags(0x12, 0xfff), "tcp,tcp_flags=syn|ack"},
		{NewMatch().IP().IPSrcMasked(ip("10.1.0.3"), 0xff00ff00), "ip,nw_src=10.0.0.0/255.0.255.0"},
		{NewMatch().IPv6().IPv6Src(pfx("fd00::/120")), "ipv6,ipv6_src=fd00::/120"},
		{NewMatch().InPort(PortLocal), "in_port=LOCAL"},
		{NewMatch().EthType(0x0806), "arp"},
		{NewMatch().IP().IPProto(47), "ip,nw_proto=47"},
		{NewMatch().VlanVID(5), "dl_vlan=5"},
		{NewMatch().TunID(0x100, 0xff00), "tun_id=0x100/0xff00"},
		{NewMatch().CTLabel(1, 0, ^uint64(0), ^uint64(0)), "ct_label=0x10000000000000000"},
		{NewMatch().XXReg(1, make([]byte, 16), nil), "reg4=0,reg5=0,reg6=0,reg7=0"},
	} {
		if got := tc.m.String(); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}

func TestActionText(t *testing.T) {
	for _, tc := range []struct {
		a    *Actions
		want string
	}{
		{NewActions(), "drop"},
		{NewActions().Output(PortNormal), "NORMAL"},
		{NewActions().Resubmit(3, TableAll), "resubmit:3"},
		{NewActions().Resubmit(PortInPort, 4), "resubmit(,4)"},
		{NewActions().Controller(Controller{Reason: ReasonAction}), "CONTROLLER:65535"},
		{NewActions().Controller(Controller{Reason: ReasonAction, MaxLen: 100}), "CONTROLLER:100"},
		{NewActions().Controller(Controller{Reason: ReasonAction, MaxLen: 100, ControllerID: 2}), "controller(max_len=100,id=2)"},
		{NewActions().Load(Reg(2).Bit(0), 1), "set_field:0x1/0x1->reg2"},
		{NewActions().Move(Reg(0).Range(0, 15), FieldTunID.Range(0, 15)), "move:NXM_NX_REG0[0..15]->NXM_NX_TUN_ID[0..15]"},
		{NewActions().SetFieldUint(FieldInPort, 5), "set_field:5->in_port"},
		{NewActions().CT(NewCT()), "ct()"},
		{NewActions().CT(NewCT().NAT(NAT{Src: true})), "ct(nat(src))"},
		{NewActions().WriteMetadata(1, ^uint64(0)), "write_metadata:0x1"},
		{NewActions().Learn(NewLearn(3).MatchValue(Reg(1).Range(0, 7), 5)), "learn(table=3,NXM_NX_REG1[0..7]=0x5)"},
	} {
		if got := tc.a.String(); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}

func TestFlowModDescribe(t *testing.T) {
	f := NewFlow(3, 5).Match(NewMatch().IP()).Actions(NewActions().Output(1))
	for _, tc := range []struct {
		m    Message
		want string
	}{
		{AddFlow(f), "flow_mod add table=3, priority=5,ip actions=output:1"},
		{AddFlow(NewFlow(0, 5)), "flow_mod add table=0, priority=5 actions=drop"},
		{DeleteFlowStrict(f), "flow_mod delete_strict table=3 priority=5,ip"},
		{DeleteFlows(TableAll, nil, 0x100, 0xf00), "flow_mod delete table=255 cookie=0x100/0xf00"},
		{&BarrierRequest{}, "barrier_request"},
	} {
		if got := Describe(tc.m); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}

func TestErrorNames(t *testing.T) {
	e := &Error{Msg: &ErrorMsg{Type: ErrTypeBadAction, Code: 9}, Request: "flow_mod add table=0, priority=1 actions=group:3"}
	if got := e.Error(); got != "openflow: OFPBAC_BAD_OUT_GROUP for flow_mod add table=0, priority=1 actions=group:3" {
		t.Errorf("Error() = %q", got)
	}
	if !errors.Is(e, ErrorCode(ErrTypeBadAction, 9)) || errors.Is(e, ErrorCode(ErrTypeBadAction, 8)) {
		t.Error("errors.Is on error codes does not discriminate")
	}
	nx := &ErrorMsg{Type: ErrTypeExperimenter, Code: 3, Experimenter: nxVendor}
	if !strings.HasPrefix(nx.Name(), "NX") {
		t.Errorf("Nicira error name = %q", nx.Name())
	}
	if got := (&ErrorMsg{Type: 200, Code: 1}).Name(); got != "error_type_200_code_1" {
		t.Errorf("unknown error name = %q", got)
	}
}
