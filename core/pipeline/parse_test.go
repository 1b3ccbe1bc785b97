package pipeline

import "testing"

func TestParseRoundTrips(t *testing.T) {
	for _, m := range []TrafficMode{Encap, NoEncap, Hybrid} {
		if got, err := ParseTrafficMode(m.String()); err != nil || got != m {
			t.Errorf("ParseTrafficMode(%q) = %v, %v", m, got, err)
		}
	}
	for _, tt := range []TunnelType{Geneve, VXLAN, GRE} {
		if got, err := ParseTunnelType(tt.String()); err != nil || got != tt {
			t.Errorf("ParseTunnelType(%q) = %v, %v", tt, got, err)
		}
	}
	if got, err := ParseTunnelType("VXLAN"); err != nil || got != VXLAN {
		t.Errorf("ParseTunnelType is case-insensitive: got %v, %v", got, err)
	}
	for _, bad := range []string{"", "overlay", "Encap"} {
		if _, err := ParseTrafficMode(bad); err == nil {
			t.Errorf("ParseTrafficMode(%q) accepted", bad)
		}
	}
	if _, err := ParseTunnelType("stt"); err == nil {
		t.Error(`ParseTunnelType("stt") accepted`)
	}
}
