package inet

import "testing"

// TestChecksum checks RFC 1071's example and that a header carrying its
// own checksum sums to zero.
func TestChecksum(t *testing.T) {
	// RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
	if got := Checksum([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, 0); got != ^uint16(0xddf2) {
		t.Errorf("Checksum = %#04x, want %#04x", got, ^uint16(0xddf2))
	}
	// An odd length pads with a zero byte.
	if Checksum([]byte{0x01}, 0) != Checksum([]byte{0x01, 0x00}, 0) {
		t.Error("odd length is not padded with zero")
	}
	h := []byte{0x45, 0, 0, 20, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2}
	c := Checksum(h, 0)
	h[10], h[11] = byte(c>>8), byte(c)
	if Checksum(h, 0) != 0 {
		t.Error("a header with its checksum filled in does not sum to zero")
	}
	seg := []byte{0x30, 0x39, 0x00, 0x50, 0, 9, 0, 0, 'x'}
	l := L4Checksum(h[12:16], h[16:20], 17, seg)
	seg[6], seg[7] = byte(l>>8), byte(l)
	if L4Checksum(h[12:16], h[16:20], 17, seg) != 0 {
		t.Error("a UDP segment with its checksum filled in does not sum to zero")
	}
}

// TestEtherPayload: the payload after the header, after one 802.1Q tag
// when there is one, and an error for a frame shorter than a header.
func TestEtherPayload(t *testing.T) {
	untagged := append(make([]byte, 12), 0x08, 0x00, 0x45)
	tagged := append(make([]byte, 12), 0x81, 0x00, 0x00, 0x07, 0x86, 0xdd, 0x60)
	for _, tc := range []struct {
		frame []byte
		eth   uint16
		first byte
	}{{untagged, 0x0800, 0x45}, {tagged, 0x86dd, 0x60}} {
		eth, p, err := EtherPayload(tc.frame)
		if err != nil || eth != tc.eth || len(p) != 1 || p[0] != tc.first {
			t.Errorf("EtherPayload(% x) = %#04x, % x, %v", tc.frame, eth, p, err)
		}
	}
	if _, _, err := EtherPayload(make([]byte, 13)); err == nil {
		t.Error("a 13-byte frame has no error")
	}
}
