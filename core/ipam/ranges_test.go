package ipam

import (
	"math"
	"net/netip"
	"strings"
	"testing"
)

func TestNewRange(t *testing.T) {
	tests := []struct {
		cidr              string
		gateway           string
		first, last       string
		capacity          uint64
		wantErrSubstrings string
	}{
		{cidr: "10.244.1.0/24", gateway: "10.244.1.1", first: "10.244.1.2", last: "10.244.1.254", capacity: 253},
		{cidr: "10.0.0.0/29", gateway: "10.0.0.1", first: "10.0.0.2", last: "10.0.0.6", capacity: 5},
		{cidr: "10.0.0.4/30", gateway: "10.0.0.5", first: "10.0.0.6", last: "10.0.0.6", capacity: 1},
		{cidr: "10.0.0.0/16", gateway: "10.0.0.1", first: "10.0.0.2", last: "10.0.255.254", capacity: 65533},
		{cidr: "10.0.0.0/31", wantErrSubstrings: "too small"},
		{cidr: "10.0.0.1/32", wantErrSubstrings: "too small"},
		{cidr: "10.0.0.1/24", wantErrSubstrings: "host bits"},
		{cidr: "fd00:10:244:1::/64", gateway: "fd00:10:244:1::1", first: "fd00:10:244:1::2", last: "fd00:10:244:1:ffff:ffff:ffff:ffff", capacity: math.MaxUint64},
		{cidr: "fd00::/126", gateway: "fd00::1", first: "fd00::2", last: "fd00::3", capacity: 2},
		{cidr: "fd00::/120", gateway: "fd00::1", first: "fd00::2", last: "fd00::ff", capacity: 254},
		{cidr: "fd00::/127", wantErrSubstrings: "too small"},
		{cidr: "fd00::/128", wantErrSubstrings: "too small"},
		{cidr: "::ffff:10.0.0.0/120", wantErrSubstrings: "IPv4-mapped"},
	}
	for _, tt := range tests {
		t.Run(tt.cidr, func(t *testing.T) {
			r, err := newRange(netip.MustParsePrefix(tt.cidr))
			if tt.wantErrSubstrings != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErrSubstrings) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErrSubstrings)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.gateway.String() != tt.gateway || r.first.String() != tt.first || r.last.String() != tt.last || r.capacity != tt.capacity {
				t.Errorf("got gateway %s first %s last %s capacity %d", r.gateway, r.first, r.last, r.capacity)
			}
			if r.usable(r.gateway) || r.usable(r.prefix.Addr()) || !r.usable(r.first) || !r.usable(r.last) {
				t.Error("usable() disagrees with the reserved addresses")
			}
			if r.after(r.last) != r.first || r.after(netip.Addr{}) != r.first || r.after(r.gateway) != r.first {
				t.Error("after() does not wrap to the first usable address")
			}
		})
	}
}

func TestFindFreeWalksPastTaken(t *testing.T) {
	r, err := newRange(netip.MustParsePrefix("10.0.0.0/29"))
	if err != nil {
		t.Fatal(err)
	}
	taken := map[netip.Addr]bool{}
	for _, s := range []string{"10.0.0.5", "10.0.0.6", "10.0.0.2"} {
		taken[netip.MustParseAddr(s)] = true
	}
	got, ok := r.findFree(netip.MustParseAddr("10.0.0.4"), uint64(len(taken)), func(a netip.Addr) bool { return taken[a] })
	if !ok || got != netip.MustParseAddr("10.0.0.3") {
		t.Errorf("findFree = %s %v, want 10.0.0.3 (after .4, past .5 .6, wrapping past .2)", got, ok)
	}
	taken[got], taken[netip.MustParseAddr("10.0.0.4")] = true, true
	if _, ok := r.findFree(got, 5, func(a netip.Addr) bool { return taken[a] }); ok {
		t.Error("findFree found an address in a full range")
	}
}
