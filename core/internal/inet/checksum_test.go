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
