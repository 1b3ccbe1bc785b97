package testrun

import (
	"os"
	"strings"
	"testing"
)

const module = "github.com/seine-cni/seine"

func TestAllowlist(t *testing.T) {
	allow, err := ParseAllowlist(strings.NewReader(`
# Wine cannot start Linux daemons.
wine  ovs/ovsdb  Test.*  private OVS instances run on Linux only

# This kernel has no SCTP;
# the SCTP flows are traced instead.
*  test/e2e/netpol  TestNetworkPolicy/.*sctp.*  the kernel has no SCTP \(
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(allow) != 2 || allow[1].Why != "This kernel has no SCTP; the SCTP flows are traced instead." || allow[1].Line != 7 {
		t.Fatalf("parsed %+v", allow)
	}
	skips := []Skip{
		{"wine", module + "/ovs/ovsdb", "TestIntegration", "ovsdaemon: private OVS instances run on Linux only (GOOS=windows)"},
		{"go", module + "/ovs/ovsdb", "TestIntegration", "ovsdaemon: private OVS instances run on Linux only (GOOS=windows)"}, // wrong step
		{"wine", module + "/ovs/ovsdbx", "TestIntegration", "private OVS instances run on Linux only"},                        // package is anchored
		{"go", module + "/test/e2e/netpol", "TestNetworkPolicy/x-sctp-allow", "lab_linux_test.go:210: the kernel has no SCTP (protocol not supported)"},
		{"go", module + "/test/e2e/netpol", "TestNetworkPolicy/x-sctp-allow", "SEINE_LAB_KUBE_BIN is not set"}, // another reason
		{"go", module + "/test/e2e/netpol", "XTestNetworkPolicy/sctp", "the kernel has no SCTP ("},             // test is anchored
	}
	if unused := Unused(skips, allow, module); len(unused) != 0 {
		t.Errorf("unused %+v, want none", unused)
	}
	if unused := Unused(skips[1:], allow, module); len(unused) != 1 || unused[0].Line != 3 {
		t.Errorf("unused %+v, want the entry of line 3 (no skip left in step wine of ovs/ovsdb)", unused)
	}
	got := Unexpected(skips, allow, module)
	want := []Skip{skips[1], skips[2], skips[4], skips[5]}
	if len(got) != len(want) {
		t.Fatalf("unexpected %v\nwant %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("unexpected[%d] = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestAllowlistErrors(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"go ovs/ovsdb TestX reason", "line 1: no comment above the entry"},
		{"# why\n\ngo ovs/ovsdb TestX reason", "line 3: no comment above the entry"}, // a blank line ends the comment
		{"# why\ngo ovs/ovsdb TestX", "line 2: want <step> <package> <test> <reason>"},
		{"# why\ngo ovs/(ovsdb TestX reason", "line 2: package:"},
		{"# why\ngo ovs/ovsdb Test[ reason", "line 2: test:"},
		{"# why\ngo ovs/ovsdb TestX reason(", "line 2: reason:"},
	} {
		_, err := ParseAllowlist(strings.NewReader(tc.text))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.text, err, tc.want)
		}
	}
}

// TestRepoAllowlist: make test's allowlist parses (every entry says why).
func TestRepoAllowlist(t *testing.T) {
	f, err := os.Open("../../../.ci/allowed-skips")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	allow, err := ParseAllowlist(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(allow) == 0 {
		t.Fatal("no entries")
	}
}
