package fqdn

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// udpFrame wraps payload in Ethernet, IPv4 or IPv6 (by dst) and UDP from
// sport; vlan adds an 802.1Q tag; frag sets IPv4's more-fragments flag.
func udpFrame(dst netip.Addr, sport uint16, payload []byte, vlan, frag bool) []byte {
	var f []byte
	f = append(f, make([]byte, 12)...) // MACs
	if vlan {
		f = binary.BigEndian.AppendUint16(f, 0x8100)
		f = binary.BigEndian.AppendUint16(f, 7)
	}
	udp := binary.BigEndian.AppendUint16(nil, sport)
	udp = binary.BigEndian.AppendUint16(udp, 40000)
	udp = binary.BigEndian.AppendUint16(udp, uint16(8+len(payload)))
	udp = append(udp, 0, 0)
	udp = append(udp, payload...)
	if dst.Is4() {
		f = binary.BigEndian.AppendUint16(f, 0x0800)
		ip := []byte{0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0, 10, 96, 0, 10}
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
		if frag {
			ip[6] = 0x20
		}
		ip = append(ip, dst.AsSlice()...)
		f = append(append(f, ip...), udp...)
	} else {
		f = binary.BigEndian.AppendUint16(f, 0x86dd)
		ip := []byte{0x60, 0, 0, 0, 0, 0, 17, 64}
		binary.BigEndian.PutUint16(ip[4:], uint16(len(udp)))
		ip = append(ip, netip.MustParseAddr("fd00::53").AsSlice()...)
		ip = append(ip, dst.AsSlice()...)
		f = append(append(f, ip...), udp...)
	}
	return append(f, 0, 0, 0, 0) // Ethernet padding the parser must not read
}

// TestResponseFrame: the pod's address and the DNS message out of the
// frame a packet-in carries, IPv4 (tagged or not) and IPv6; anything but
// a whole datagram from port 53 is refused.
func TestResponseFrame(t *testing.T) {
	msg, err := (&dnsmessage.Message{Header: dnsmessage.Header{ID: 9, Response: true}}).Pack()
	if err != nil {
		t.Fatal(err)
	}
	pod4, pod6 := netip.MustParseAddr("10.244.1.5"), netip.MustParseAddr("fd00:244::5")
	for _, tc := range []struct {
		name  string
		frame []byte
		pod   netip.Addr
		err   error
	}{
		{"ipv4", udpFrame(pod4, 53, msg, false, false), pod4, nil},
		{"ipv4 802.1Q", udpFrame(pod4, 53, msg, true, false), pod4, nil},
		{"ipv6", udpFrame(pod6, 53, msg, false, false), pod6, nil},
		{"from port 5353", udpFrame(pod4, 5353, msg, false, false), netip.Addr{}, ErrNotDNSResponse},
		{"first fragment", udpFrame(pod4, 53, msg, false, true), netip.Addr{}, ErrNotDNSResponse},
	} {
		pod, got, err := ResponseFrame(tc.frame)
		if !errors.Is(err, tc.err) || pod != tc.pod {
			t.Errorf("%s: pod %v err %v, want %v %v", tc.name, pod, err, tc.pod, tc.err)
			continue
		}
		if tc.err == nil && !bytes.Equal(got, msg) {
			t.Errorf("%s: message %x, want %x", tc.name, got, msg)
		}
	}
	whole := udpFrame(pod4, 53, msg, false, false)
	for _, n := range []int{0, 13, 20, 40, len(whole) - 8} {
		if _, _, err := ResponseFrame(whole[:n]); err == nil {
			t.Errorf("a frame cut at %d bytes parsed", n)
		}
	}
}
