package agent

import (
	"testing"

	"github.com/seine-cni/seine/ovs/ovsdb"
)

func TestKnownOVSDefects(t *testing.T) {
	for _, tc := range []struct {
		version string
		dp      ovsdb.DatapathType
		want    int
	}{
		{"3.1.0", ovsdb.DatapathNetdev, 2},           // Debian bookworm: both measured
		{"3.1.0-2+deb12u1", ovsdb.DatapathNetdev, 2}, // a package version
		{"3.1.2", ovsdb.DatapathNetdev, 2},
		{"3.1.3", ovsdb.DatapathNetdev, 1}, // SCTP ports only from 3.2.0
		{"3.1.0", ovsdb.DatapathSystem, 0}, // the kernel's conntrack
		{"2.17.7", ovsdb.DatapathNetdev, 2},
		{"2.17.8", ovsdb.DatapathNetdev, 1},
		{"2.16.0", ovsdb.DatapathNetdev, 2}, // before the first fixed branch
		{"3.0.4", ovsdb.DatapathNetdev, 2},
		{"3.0.5", ovsdb.DatapathNetdev, 1},
		{"3.2.0", ovsdb.DatapathNetdev, 1},
		{"3.2.2", ovsdb.DatapathNetdev, 1},
		{"3.2.3", ovsdb.DatapathNetdev, 0},
		{"3.3.0", ovsdb.DatapathNetdev, 0}, // after the last listed branch
		{"3.6.1", ovsdb.DatapathNetdev, 0},
		{"", ovsdb.DatapathNetdev, 0},      // unreadable: no claim
		{"3.x.0", ovsdb.DatapathNetdev, 0}, // unreadable: no claim
	} {
		if got := KnownOVSDefects(tc.version, tc.dp); len(got) != tc.want {
			t.Errorf("KnownOVSDefects(%q, %v) = %q, want %d defects", tc.version, tc.dp, got, tc.want)
		}
	}
}

func TestOVSDefectAffects(t *testing.T) {
	for _, tc := range []struct {
		id, version string
		want        bool
	}{
		{OVSDefectNATPortReuse, "3.1.0", true},
		{OVSDefectNATPortReuse, "3.1.3", false},
		{OVSDefectSCTPWithoutPorts, "3.1.3", true},
		{OVSDefectSCTPWithoutPorts, "3.2.0", false},
		{"no-such-defect", "3.1.0", false},
	} {
		if got := OVSDefectAffects(tc.id, tc.version, ovsdb.DatapathNetdev); got != tc.want {
			t.Errorf("OVSDefectAffects(%q, %q) = %v, want %v", tc.id, tc.version, got, tc.want)
		}
	}
}
