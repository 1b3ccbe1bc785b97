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
		{"3.1.0", ovsdb.DatapathNetdev, 1},           // Debian bookworm: measured
		{"3.1.0-2+deb12u1", ovsdb.DatapathNetdev, 1}, // a package version
		{"3.1.2", ovsdb.DatapathNetdev, 1},
		{"3.1.3", ovsdb.DatapathNetdev, 0},
		{"3.1.0", ovsdb.DatapathSystem, 0}, // the kernel's conntrack
		{"2.17.7", ovsdb.DatapathNetdev, 1},
		{"2.17.8", ovsdb.DatapathNetdev, 0},
		{"2.16.0", ovsdb.DatapathNetdev, 1}, // before the first fixed branch
		{"3.0.4", ovsdb.DatapathNetdev, 1},
		{"3.0.5", ovsdb.DatapathNetdev, 0},
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
