package lab

import (
	"strings"
	"testing"
)

// TestCheckPorts: a lab port in the kernel's ephemeral range is refused
// with a message naming the port and the range, unless the range is
// reserved; ports below it pass; the kernel's two formats parse.
func TestCheckPorts(t *testing.T) {
	eph, err := ParsePortRanges("32768\t60999\n")
	if err != nil || len(eph) != 1 || eph[0] != (PortRange{32768, 60999}) {
		t.Fatalf("ParsePortRanges(ip_local_port_range) = %v, %v", eph, err)
	}
	reserved, err := ParsePortRanges("51379-51380,55443\n")
	if err != nil || len(reserved) != 2 || reserved[1] != (PortRange{55443, 55443}) {
		t.Fatalf("ParsePortRanges(ip_local_reserved_ports) = %v, %v", reserved, err)
	}
	if r, err := ParsePortRanges("\n"); err != nil || r != nil {
		t.Errorf("no reserved ports: %v, %v", r, err)
	}
	if _, err := ParsePortRanges("9000-8000"); err == nil {
		t.Error("a backwards range parsed")
	}
	for _, tc := range []struct {
		api, etcd int
		reserved  []PortRange
		want      string
	}{
		{16443, 12379, nil, ""},
		{36443, 12379, nil, "api port 36443 is in the kernel's ephemeral port range 32768-60999"},
		{16443, 32767, nil, "etcd peer port 32768 is in"},
		{16443, 51379, nil, "etcd port 51379 is in"},
		{16443, 51379, reserved, ""},
		{55443, 12379, reserved, ""},
		{0, 12379, nil, "api port 0: not a TCP port"},
	} {
		c := &Config{APIPort: tc.api, EtcdPort: tc.etcd}
		err := c.CheckPorts(eph[0], tc.reserved)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("ports %d/%d: %v", tc.api, tc.etcd, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("ports %d/%d: %v, want %q", tc.api, tc.etcd, err, tc.want)
		}
	}
}
