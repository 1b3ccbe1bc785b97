package traceflow

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/seine-cni/seine/core/internal/inet"
)

func TestFrameRoundTrip(t *testing.T) {
	for _, p := range []Packet{
		{Proto: ProtoTCP, SrcPort: 40000, DstPort: 80, TCPFlags: 2},
		{Proto: ProtoUDP, SrcPort: 40001, DstPort: 53, Length: 100},
		{Proto: ProtoICMP, ICMPID: 7, ICMPSeq: 1, TTL: 3},
	} {
		p.SrcMAC, p.DstMAC = webMAC, dbMAC
		p.SrcIP, p.DstIP = webIP, dbIP
		p.Tag, p.ID = 63, 0xbeef
		b, err := p.Frame()
		if err != nil {
			t.Fatal(err)
		}
		ip := b[ethLen:]
		if inet.Checksum(ip[:ipv4Len], 0) != 0 {
			t.Errorf("proto %d: bad IPv4 header checksum", p.Proto)
		}
		seg := ip[ipv4Len:]
		switch p.Proto {
		case ProtoTCP, ProtoUDP:
			if inet.L4Checksum(ip[12:16], ip[16:20], p.Proto, seg) != 0 {
				t.Errorf("proto %d: bad L4 checksum", p.Proto)
			}
		case ProtoICMP:
			if inet.Checksum(seg, 0) != 0 {
				t.Error("bad ICMP checksum")
			}
		}
		if ip[1] != 63<<2 {
			t.Errorf("DSCP byte %#x, want the tag in the top six bits", ip[1])
		}
		got, err := ParseFrame(b)
		if err != nil {
			t.Fatal(err)
		}
		want := p
		want.Length = max(p.Length, ipv4Len+l4Len(p.Proto))
		if want.TTL == 0 {
			want.TTL = 64
		}
		if got.String() != want.String() {
			t.Errorf("round trip\n got %s\nwant %s", got, want)
		}
		if int(binary.BigEndian.Uint16(ip[2:])) != len(ip) {
			t.Errorf("total length %d, frame carries %d", binary.BigEndian.Uint16(ip[2:]), len(ip))
		}
	}
}

func TestFrameRefuses(t *testing.T) {
	ok := Packet{SrcMAC: webMAC, DstMAC: dbMAC, SrcIP: webIP, DstIP: dbIP, Proto: ProtoTCP}
	for name, p := range map[string]Packet{
		"IPv6":     func() Packet { q := ok; q.DstIP = netip.MustParseAddr("fd00::1"); return q }(),
		"no MAC":   func() Packet { q := ok; q.DstMAC = nil; return q }(),
		"SCTP":     func() Packet { q := ok; q.Proto = 132; return q }(),
		"too long": func() Packet { q := ok; q.Length = 9000; return q }(),
	} {
		if _, err := p.Frame(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := ParseFrame(make([]byte, 60)); !errors.Is(err, ErrNotIPv4) {
		t.Errorf("zero frame: %v", err)
	}
}
