package inet

import (
	"encoding/binary"
	"fmt"
)

// EtherPayload returns an Ethernet frame's ethertype and what follows its
// header, past one 802.1Q tag if it has one: what the packet-in handlers
// (the policy audit log, DNS answers) read their IP packet from.
func EtherPayload(b []byte) (ethertype uint16, payload []byte, err error) {
	if len(b) < 14 {
		return 0, nil, fmt.Errorf("short frame (%d bytes)", len(b))
	}
	eth, off := binary.BigEndian.Uint16(b[12:]), 14
	if eth == 0x8100 && len(b) >= 18 {
		eth, off = binary.BigEndian.Uint16(b[16:]), 18
	}
	return eth, b[off:], nil
}
