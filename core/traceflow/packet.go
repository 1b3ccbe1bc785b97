package traceflow

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/seine-cni/seine/core/internal/inet"
)

// IP protocols a Traceflow injects.
const (
	ProtoICMP uint8 = 1
	ProtoTCP  uint8 = 6
	ProtoUDP  uint8 = 17
)

// Packet is the frame an agent injects, or what a packet-in carried.
type Packet struct {
	SrcMAC, DstMAC   net.HardwareAddr
	SrcIP, DstIP     netip.Addr
	Proto            uint8
	SrcPort, DstPort uint16 // TCP, UDP
	TCPFlags         uint8
	TTL              uint8
	// Tag is the DSCP (1-63) that marks the trace.
	Tag uint8
	// ID is the IPv4 identification: with the source port it tells the
	// injected packet from real traffic that happens to carry the tag.
	ID uint16
	// Length is the IP total length; the headers alone when smaller.
	Length int
	// ICMPID, ICMPSeq for an echo request.
	ICMPID, ICMPSeq uint16
}

const (
	ethLen  = 14
	ipv4Len = 20
)

func l4Len(proto uint8) int {
	switch proto {
	case ProtoTCP:
		return 20
	case ProtoUDP, ProtoICMP:
		return 8
	}
	return 0
}

// Frame encodes p as an Ethernet frame with correct IPv4 and L4
// checksums (the destination pod's kernel answers it).
func (p Packet) Frame() ([]byte, error) {
	if !p.SrcIP.Is4() || !p.DstIP.Is4() {
		return nil, fmt.Errorf("traceflow packets are IPv4 (%s -> %s)", p.SrcIP, p.DstIP)
	}
	if len(p.SrcMAC) != 6 || len(p.DstMAC) != 6 {
		return nil, errors.New("traceflow packet needs source and destination MACs")
	}
	l4 := l4Len(p.Proto)
	if l4 == 0 {
		return nil, fmt.Errorf("protocol %d: want TCP, UDP or ICMP", p.Proto)
	}
	total := max(p.Length, ipv4Len+l4)
	if total > 1500 {
		return nil, fmt.Errorf("length %d above 1500", total)
	}
	b := make([]byte, ethLen+total)
	copy(b[0:6], p.DstMAC)
	copy(b[6:12], p.SrcMAC)
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[ethLen:]
	ip[0] = 0x45
	ip[1] = p.Tag << 2
	binary.BigEndian.PutUint16(ip[2:], uint16(total))
	binary.BigEndian.PutUint16(ip[4:], p.ID)
	ip[8] = p.TTL
	if ip[8] == 0 {
		ip[8] = 64
	}
	ip[9] = p.Proto
	src, dst := p.SrcIP.As4(), p.DstIP.As4()
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	binary.BigEndian.PutUint16(ip[10:], inet.Checksum(ip[:ipv4Len], 0))
	seg := ip[ipv4Len:total]
	switch p.Proto {
	case ProtoTCP:
		binary.BigEndian.PutUint16(seg[0:], p.SrcPort)
		binary.BigEndian.PutUint16(seg[2:], p.DstPort)
		binary.BigEndian.PutUint32(seg[4:], uint32(p.ID)<<16|1) // sequence
		seg[12] = 5 << 4
		seg[13] = p.TCPFlags
		binary.BigEndian.PutUint16(seg[14:], 64240) // window
		binary.BigEndian.PutUint16(seg[16:], inet.L4Checksum(src[:], dst[:], ProtoTCP, seg))
	case ProtoUDP:
		binary.BigEndian.PutUint16(seg[0:], p.SrcPort)
		binary.BigEndian.PutUint16(seg[2:], p.DstPort)
		binary.BigEndian.PutUint16(seg[4:], uint16(len(seg)))
		binary.BigEndian.PutUint16(seg[6:], inet.L4Checksum(src[:], dst[:], ProtoUDP, seg))
	case ProtoICMP:
		seg[0] = 8 // echo request
		binary.BigEndian.PutUint16(seg[4:], p.ICMPID)
		binary.BigEndian.PutUint16(seg[6:], p.ICMPSeq)
		binary.BigEndian.PutUint16(seg[2:], inet.Checksum(seg, 0))
	}
	return b, nil
}

// ErrNotIPv4 is returned by ParseFrame for a frame that is not IPv4.
var ErrNotIPv4 = errors.New("not an IPv4 frame")

// ParseFrame decodes the headers of an Ethernet frame (as a packet-in
// carries it) into a Packet; only the header fields are set.
func ParseFrame(b []byte) (Packet, error) {
	var p Packet
	if len(b) < ethLen+ipv4Len || binary.BigEndian.Uint16(b[12:]) != 0x0800 {
		return p, ErrNotIPv4
	}
	p.DstMAC, p.SrcMAC = net.HardwareAddr(b[0:6]), net.HardwareAddr(b[6:12])
	ip := b[ethLen:]
	ihl := int(ip[0]&0xf) * 4
	if ip[0]>>4 != 4 || ihl < ipv4Len || len(ip) < ihl {
		return p, fmt.Errorf("bad IPv4 header: %w", ErrNotIPv4)
	}
	p.Tag = ip[1] >> 2
	p.Length = int(binary.BigEndian.Uint16(ip[2:]))
	p.ID = binary.BigEndian.Uint16(ip[4:])
	p.TTL = ip[8]
	p.Proto = ip[9]
	p.SrcIP = netip.AddrFrom4([4]byte(ip[12:16]))
	p.DstIP = netip.AddrFrom4([4]byte(ip[16:20]))
	l4 := ip[ihl:]
	switch p.Proto {
	case ProtoTCP, ProtoUDP:
		if len(l4) >= 4 {
			p.SrcPort, p.DstPort = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
		}
		if p.Proto == ProtoTCP && len(l4) >= 14 {
			p.TCPFlags = l4[13]
		}
	case ProtoICMP:
		if len(l4) >= 8 {
			p.ICMPID, p.ICMPSeq = binary.BigEndian.Uint16(l4[4:]), binary.BigEndian.Uint16(l4[6:])
		}
	}
	return p, nil
}

func (p Packet) String() string {
	return fmt.Sprintf("%s>%s %s>%s proto=%d ports=%d>%d flags=%#x ttl=%d tag=%d id=%#x len=%d icmp=%d/%d",
		p.SrcMAC, p.DstMAC, p.SrcIP, p.DstIP, p.Proto, p.SrcPort, p.DstPort, p.TCPFlags, p.TTL, p.Tag, p.ID, p.Length, p.ICMPID, p.ICMPSeq)
}
