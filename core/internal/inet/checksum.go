// Package inet holds the Internet checksums the agent needs to build the
// packets it sends itself (the proxy's and tiered policy's rejects,
// Traceflow's injected packet), and the Ethernet header the packets it
// receives start with.
package inet

import "encoding/binary"

// Checksum is the Internet checksum (RFC 1071) of b, starting from sum.
func Checksum(b []byte, sum uint32) uint16 {
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// L4Checksum is the TCP or UDP checksum of seg with the IPv4 pseudo-header
// of src and dst (4 bytes each).
func L4Checksum(src, dst []byte, proto uint8, seg []byte) uint16 {
	var sum uint32
	for _, a := range [][]byte{src, dst} {
		sum += uint32(binary.BigEndian.Uint16(a)) + uint32(binary.BigEndian.Uint16(a[2:]))
	}
	sum += uint32(proto) + uint32(len(seg))
	return Checksum(seg, sum)
}
