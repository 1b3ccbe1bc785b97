package openflow

import (
	"bytes"
	"reflect"
	"testing"
)

// roundTrip marshals m, unmarshals it and marshals the result again; both
// encodings must be identical and the decoded type must match.
func roundTrip(t *testing.T, m Message) Message {
	t.Helper()
	b := marshal(m, 0x1234)
	h, got, err := Unmarshal(b)
	if err != nil {
		t.Fatalf("%T: unmarshal: %v", m, err)
	}
	if h.Xid != 0x1234 || h.Version != Version || int(h.Length) != len(b) || h.Type != m.MsgType() {
		t.Errorf("%T: header %+v for %d bytes", m, h, len(b))
	}
	if reflect.TypeOf(got) != reflect.TypeOf(m) {
		t.Fatalf("%T decoded as %T", m, got)
	}
	if b2 := marshal(got, 0x1234); !bytes.Equal(b, b2) {
		t.Errorf("%T: re-encoding differs\n first %x\nsecond %x", m, b, b2)
	}
	return got
}

func TestFlowModRoundTrip(t *testing.T) {
	for _, cf := range catalog() {
		for _, fm := range []*FlowMod{AddFlow(cf.flow), ModifyFlowStrict(cf.flow), DeleteFlowStrict(cf.flow)} {
			got := roundTrip(t, fm).(*FlowMod)
			if got.Command != fm.Command || got.Flow.String() != cf.want {
				t.Errorf("%s: decoded %s, want %s", cf.name, Describe(got), cf.want)
			}
		}
		// Decoded actions re-encode to the same instructions.
		acts, err := DecodeInstructions(cf.flow.InstructionBytes())
		if err != nil {
			t.Fatalf("%s: %v", cf.name, err)
		}
		if enc := EncodeInstructions(acts); !bytes.Equal(enc, cf.flow.InstructionBytes()) {
			t.Errorf("%s: instructions re-encode differently\n got %x\nwant %x", cf.name, enc, cf.flow.InstructionBytes())
		}
	}
	del := DeleteFlows(4, NewMatch().IP(), 0x10, 0xff)
	del.OutPort, del.OutGroup = 3, 7
	got := roundTrip(t, del).(*FlowMod)
	if got.CookieMask != 0xff || got.OutPort != 3 || got.OutGroup != 7 || got.Flow.CookieValue() != 0x10 {
		t.Errorf("delete decoded as %+v", got)
	}
}

func TestMessagesRoundTrip(t *testing.T) {
	pin := &PacketIn{Packet: udpFrame([]byte("x")), FullLen: 99, BufferID: 5, TableID: 3, Cookie: 0xabc,
		Reason: ReasonAction, Metadata: NewMatch().InPort(2).Reg(1, 7, 0xffffffff).Bytes(), Userdata: []byte{1, 2}, Continuation: []byte{0, 1, 0, 4, 1, 2, 3, 4}}
	msgs := []Message{
		&Hello{Versions: 1 << 6},
		&EchoRequest{Data: []byte("ping")},
		&EchoReply{Data: []byte("pong")},
		&FeaturesRequest{},
		&FeaturesReply{DatapathID: 0x1122334455667788, NBuffers: 0, NTables: 254, Capabilities: 0x4f},
		&SetConfig{MissSendLen: 0xffff},
		&BarrierRequest{},
		&BarrierReply{},
		&ErrorMsg{Type: ErrTypeBadAction, Code: 9, Data: []byte{6, 14, 0, 8, 0, 0, 0, 1}},
		&ErrorMsg{Type: ErrTypeExperimenter, Code: 3, Experimenter: nxVendor, Data: []byte{1, 2}},
		SetPacketInFormat(),
		AddGroup(catalogGroups()[0]),
		DeleteGroup(7),
		AddMeter(catalogMeters()[0]),
		DeleteMeter(2),
		NewPacketOut(PortController, udpFrame(nil), NewActions().Output(PortTable)),
		pin,
		&BundleControl{BundleID: 3, Type: BundleCommitRequest, Flags: BundleAtomic | BundleOrdered},
		&BundleAdd{BundleID: 3, Flags: BundleAtomic, Message: AddFlow(catalog()[1].flow), xid: 0x1234},
		FlowStatsRequest(TableAll, 1, 2, NewMatch().IP()),
		AggregateRequest(1, 0, 0, nil),
		TableStatsRequest(),
		PortStatsRequest(PortAny),
		PortDescRequest(PortAny),
		GroupStatsRequest(GroupAll),
		GroupDescRequest(GroupAll),
		MeterStatsRequest(MeterAll),
		MeterDescRequest(MeterAll),
		&MultipartReply{Type: MultipartTable, Flags: 1, Body: make([]byte, 24)},
		&Raw{Type: TypePortStatus, Body: []byte{1, 2, 3}},
	}
	for _, m := range msgs {
		got := roundTrip(t, m)
		switch m := m.(type) {
		case *PacketIn:
			p := got.(*PacketIn)
			if p.Reg(1) != 7 || p.InPort() != 2 || p.Cookie != m.Cookie || !bytes.Equal(p.Userdata, m.Userdata) {
				t.Errorf("packet-in decoded as %s", p)
			}
		case *GroupMod:
			if g := got.(*GroupMod).Group; g.String() != m.Group.String() {
				t.Errorf("group decoded as %s, want %s", g, m.Group)
			}
		case *MeterMod:
			if g := got.(*MeterMod).Meter; g.String() != m.Meter.String() {
				t.Errorf("meter decoded as %s, want %s", g, m.Meter)
			}
		case *PacketOut:
			if s := got.(*PacketOut).String(); s != "in_port=CONTROLLER actions=TABLE data_len=42" {
				t.Errorf("packet-out decoded as %s", s)
			}
		}
	}
}

func TestUnmarshalRejectsGarbage(t *testing.T) {
	for _, b := range [][]byte{
		nil,
		{6, 0, 0},
		{6, 0, 0, 4, 0, 0, 0, 0},               // length below header
		{6, 0, 0, 20, 0, 0, 0, 0},              // length beyond data
		{6, 14, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0}, // short flow-mod
	} {
		if _, _, err := Unmarshal(b); err == nil {
			t.Errorf("Unmarshal(%x) succeeded", b)
		}
	}
}
