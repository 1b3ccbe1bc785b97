package windows

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

// Tests of the real seams. On a Windows host without HNS (and under Wine,
// where `make windows-test` runs them) the HNS calls must fail with an
// error wrapping platform.ErrNotSupported that names HNS, not hang or
// panic; the IP Helper calls that only read work under Wine too.

func TestRealHNSMissing(t *testing.T) {
	if hnsAvailable(modComputeNetwork) == nil {
		t.Skip("this host has HNS (computenetwork.dll loads); the test is for hosts without it")
	}
	ctx := context.Background()
	var a hcnAPI
	_, err := a.NetworkByName(ctx, NetworkName)
	checkNoHNS(t, "NetworkByName", err)
	_, err = a.Endpoints(ctx, "net")
	checkNoHNS(t, "Endpoints", err)
	checkNoHNS(t, "DeleteEndpoint", a.DeleteEndpoint(ctx, "ep"))

	// Setup through New on such a host stops at the HNS network, clearly.
	b, err := New(platform.Config{OVSDB: newHost().ovs})
	if err != nil {
		t.Fatal(err)
	}
	b.stack = freshNode().stack // the host's own adapters are not the test's to move
	_, err = b.Setup(ctx, nodeCfg)
	checkNoHNS(t, "Setup", err)
	_, err = b.Attach(ctx, podNet("c1", nsA))
	checkNoHNS(t, "Attach", err)
}

func TestRealVSwitchMissing(t *testing.T) {
	if hnsAvailable(modVMCompute) == nil {
		t.Skip("this host has HNS's v1 API (vmcompute.dll loads)")
	}
	var v hnsV1VSwitch
	_, err := v.ExtensionEnabled(context.Background(), "net", OVSExtensionID)
	checkNoHNS(t, "ExtensionEnabled", err)
	checkNoHNS(t, "EnableExtension", v.EnableExtension(context.Background(), "net", OVSExtensionID))
}

func checkNoHNS(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, platform.ErrNotSupported) || !strings.Contains(strings.ToLower(err.Error()), "host networking service") {
		t.Errorf("%s without HNS: %v, want an error wrapping ErrNotSupported naming the host networking service", what, err)
	}
}

func TestRealIPHelperReads(t *testing.T) {
	ctx := context.Background()
	var s iphlpapi
	ifs, err := s.Interfaces(ctx)
	if err != nil {
		t.Fatalf("Interfaces: %v", err)
	}
	for _, i := range ifs {
		if i.Name == "" || i.Index == 0 {
			t.Errorf("interface without name or index: %+v", i)
		}
		t.Logf("interface %d %q mtu %d %s %v", i.Index, i.Name, i.MTU, i.MAC, i.IPs)
	}
	routes, err := s.Routes(ctx)
	if err != nil {
		t.Fatalf("Routes: %v", err)
	}
	for _, r := range routes {
		if !r.Dst.IsValid() {
			t.Errorf("route without a destination: %+v", r)
		}
		t.Logf("route %s", r)
	}
	// Wine may lack the neighbour table; then the error must say which call.
	ns, err := s.Neighbors(ctx)
	if err != nil && !strings.Contains(err.Error(), "GetIpNetTable2") {
		t.Errorf("Neighbors: %v, want success or an error naming GetIpNetTable2", err)
	}
	t.Logf("permanent neighbours: %v (err %v)", ns, err)
}

func TestRealIPHelperRefusesUnknownInterface(t *testing.T) {
	// An interface index no host has: the calls must fail, and change
	// nothing anywhere.
	const bogus = 0x7ffffff0
	ctx := context.Background()
	var s iphlpapi
	r := ipRoute{Dst: netip.MustParsePrefix("198.51.100.0/24"), NextHop: netip.MustParseAddr("198.51.100.1"), IfIndex: bogus, Metric: RouteMetric}
	err := s.AddRoute(ctx, r)
	if err == nil {
		t.Error("AddRoute on a missing interface succeeded")
	}
	t.Logf("AddRoute: %v", err)
	if err := s.AddAddress(ctx, bogus, netip.MustParsePrefix("198.51.100.7/24")); err == nil {
		t.Error("AddAddress on a missing interface succeeded")
	}
	if err := s.EnableForwarding(ctx, bogus, false); err == nil {
		t.Error("EnableForwarding on a missing interface succeeded")
	}
	if err := s.SetMAC(ctx, bogus, vmac); !errors.Is(err, platform.ErrNotSupported) {
		t.Errorf("SetMAC: %v, want ErrNotSupported", err)
	}
}

func TestSockaddr(t *testing.T) {
	for _, s := range []string{"10.1.2.3", "0.0.0.0", "fd00::1", "::"} {
		a := netip.MustParseAddr(s)
		raw := sockaddr(a)
		got, ok := addrOf(&raw)
		if !ok || got != a {
			t.Errorf("addrOf(sockaddr(%s)) = %s, %v", a, got, ok)
		}
	}
}

func TestNewRefuses(t *testing.T) {
	if _, err := New(platform.Config{HostNetNS: "/var/run/netns/x"}); !errors.Is(err, platform.ErrNotSupported) {
		t.Errorf("New with a network namespace: %v, want ErrNotSupported", err)
	}
	if _, err := New(platform.Config{Datapath: ovsdb.DatapathNetdev}); !errors.Is(err, platform.ErrNotSupported) {
		t.Errorf("New with the netdev datapath: %v, want ErrNotSupported", err)
	}
	b, err := New(platform.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if b.rundir != DefaultOVSRunDir {
		t.Errorf("rundir %q, want %q", b.rundir, DefaultOVSRunDir)
	}
	if _, err := b.Setup(context.Background(), nodeCfg); err == nil || !strings.Contains(err.Error(), "no OVSDB client") {
		t.Errorf("Setup without OVSDB: %v", err)
	}
}

// TestRealCollect runs Diagnostics on the real seams. Under Wine (no HNS,
// no neighbour table, no PowerShell, no ovs-vswitchd) every such section
// reports its error inline and the rest is still written.
func TestRealCollect(t *testing.T) {
	b, err := New(platform.Config{OVSRunDir: `C:\seine-test\no-ovs`})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	err = b.Collect(ctx, &out)
	t.Logf("Collect: %v\n%s", err, out.String())
	if ctx.Err() != nil {
		t.Fatal("Collect did not return before the deadline")
	}
	text := out.String()
	for _, want := range []string{"== HNS networks ==\n", "== interfaces ==\n", "== routes (metric 83 is Seine's) ==\n", "== WinNAT instances ==\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("support bundle lacks %q", want)
		}
	}
	if hnsAvailable(modComputeNetwork) != nil && !errors.Is(err, platform.ErrNotSupported) {
		t.Errorf("Collect without HNS: %v, want an error wrapping ErrNotSupported", err)
	}
	if !strings.Contains(text, "== ovs-vswitchd ==\nerror: connect in C:\\seine-test\\no-ovs: ") {
		t.Errorf("no ovs-vswitchd error in the bundle")
	}
}
