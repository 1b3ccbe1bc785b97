package fqdn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/seine-cni/seine/core/internal/inet"
)

// ErrNotDNSResponse is returned for a frame that is not a whole UDP
// datagram from port 53.
var ErrNotDNSResponse = errors.New("not an unfragmented UDP datagram from port 53")

// ResponseFrame reads a DNS response out of an Ethernet frame (with or
// without one 802.1Q tag) as the switch sends it to the agent: an IPv4 or
// IPv6 UDP datagram from port 53 to a pod. It returns the pod's address
// and the DNS message. A fragmented datagram (a large answer over UDP) is
// ErrNotDNSResponse: its fragments are not reassembled here.
func ResponseFrame(b []byte) (pod netip.Addr, msg []byte, err error) {
	eth, ip, err := inet.EtherPayload(b)
	if err != nil {
		return pod, nil, err
	}
	var udp []byte
	switch eth {
	case 0x0800:
		if len(ip) < 20 || ip[0]>>4 != 4 {
			return pod, nil, errors.New("bad IPv4 header")
		}
		ihl, total := int(ip[0]&0x0f)*4, int(binary.BigEndian.Uint16(ip[2:]))
		if ihl < 20 || total < ihl || len(ip) < total {
			return pod, nil, fmt.Errorf("bad IPv4 lengths (header %d, total %d, have %d)", ihl, total, len(ip))
		}
		if ip[9] != 17 || binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 { // not UDP, or MF set, or a later fragment
			return pod, nil, ErrNotDNSResponse
		}
		pod, udp = netip.AddrFrom4([4]byte(ip[16:20])), ip[ihl:total]
	case 0x86dd:
		if len(ip) < 40 || ip[0]>>4 != 6 {
			return pod, nil, errors.New("bad IPv6 header")
		}
		payload := int(binary.BigEndian.Uint16(ip[4:]))
		if len(ip) < 40+payload {
			return pod, nil, fmt.Errorf("bad IPv6 payload length %d (have %d)", payload, len(ip)-40)
		}
		if ip[6] != 17 { // extension headers (a fragment header among them) are not followed
			return pod, nil, ErrNotDNSResponse
		}
		pod, udp = netip.AddrFrom16([16]byte(ip[24:40])), ip[40:40+payload]
	default:
		return pod, nil, fmt.Errorf("ethertype %#04x is not IP", eth)
	}
	if len(udp) < 8 || binary.BigEndian.Uint16(udp[0:]) != 53 {
		return netip.Addr{}, nil, ErrNotDNSResponse
	}
	n := int(binary.BigEndian.Uint16(udp[4:]))
	if n < 8 || n > len(udp) {
		return netip.Addr{}, nil, fmt.Errorf("bad UDP length %d (have %d)", n, len(udp))
	}
	return pod, udp[8:n], nil
}
