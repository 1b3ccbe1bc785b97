package windows

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/windows"

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
	// Every adapter with a MAC is found across compartments; an unused
	// MAC is not.
	for _, i := range ifs {
		if len(i.MAC) == 6 {
			if ok, err := s.AdapterWithMAC(ctx, i.MAC); err != nil || !ok {
				t.Errorf("AdapterWithMAC(%s) of %q: %v, %v; want true", i.MAC, i.Name, ok, err)
			}
		}
	}
	if ok, err := s.AdapterWithMAC(ctx, net.HardwareAddr{0x02, 0x5e, 0x1e, 0x0e, 0xee, 0x01}); err != nil || ok {
		t.Errorf("AdapterWithMAC of a MAC no adapter has: %v, %v; want false", ok, err)
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
	if _, err := New(platform.Config{SysfsRoot: "/tmp/sys"}); !errors.Is(err, platform.ErrNotSupported) {
		t.Errorf("New with a sysfs root: %v, want ErrNotSupported", err)
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

// TestRealNextHop calls GetIpNetEntry2 through the real seam and
// NextHopMAC on a backend from New. Under Wine the neighbour look-up may
// be missing or answer "not found"; whatever the host says, the answer must
// come promptly and be either a usable address, ErrNoNeighbour, or an
// error naming what failed.
func TestRealNextHop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var s iphlpapi
	// An interface index no host has: an error, or no entry; never an entry.
	n, err := within(ctx, t, func() (*neighborEntry, error) {
		return s.Neighbor(ctx, 0x7ffffff0, netip.MustParseAddr("198.51.100.1"))
	})
	t.Logf("Neighbor on a missing interface: %+v, %v", n, err)
	if n != nil {
		t.Errorf("Neighbor on a missing interface: %+v, want none", n)
	}
	if err != nil && !strings.Contains(err.Error(), "GetIpNetEntry2") {
		t.Errorf("Neighbor: %v, want an error naming GetIpNetEntry2", err)
	}
	if missing := (*windows.DLLError)(nil); errors.As(err, &missing) && !errors.Is(err, platform.ErrNotSupported) {
		t.Errorf("Neighbor without GetIpNetEntry2: %v, want an error wrapping ErrNotSupported", err)
	}

	b, err := New(platform.Config{})
	if err != nil {
		t.Fatal(err)
	}
	routes, err := s.Routes(ctx)
	if err != nil {
		t.Fatalf("Routes: %v", err)
	}
	// The host's own default gateway if it has one (an address it has most
	// likely resolved), else an address no route may hold.
	target := netip.MustParseAddr("192.0.2.1")
	for _, r := range routes {
		if r.Dst.Bits() == 0 && r.Dst.Addr().Is4() && !r.onLink() {
			target = r.NextHop
			break
		}
	}
	type answer struct {
		mac   net.HardwareAddr
		fresh bool
	}
	a, err := within(ctx, t, func() (answer, error) {
		mac, fresh, err := b.NextHopMAC(ctx, target)
		return answer{mac, fresh}, err
	})
	t.Logf("NextHopMAC(%s) = %v, fresh=%v, %v", target, a.mac, a.fresh, err)
	switch {
	case err == nil:
		if len(a.mac) != 6 {
			t.Errorf("NextHopMAC(%s): MAC %v, want 6 bytes", target, a.mac)
		}
	case errors.Is(err, platform.ErrNoNeighbour),
		strings.Contains(err.Error(), "GetIpNetEntry2"),
		strings.Contains(err.Error(), "route to "+target.String()+": none"):
	default:
		t.Errorf("NextHopMAC(%s): %v; want a MAC, ErrNoNeighbour, no route, or an error naming GetIpNetEntry2", target, err)
	}
	if _, _, err := b.NextHopMAC(ctx, netip.MustParseAddr("fd00::1")); err == nil || !strings.Contains(err.Error(), "IPv4 only") {
		t.Errorf("NextHopMAC of an IPv6 address: %v, want an IPv4-only error", err)
	}
}

// within runs f and fails the test if it has not returned by ctx's
// deadline (a call into the OS that hangs).
func within[T any](ctx context.Context, t *testing.T, f func() (T, error)) (T, error) {
	t.Helper()
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := f()
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		t.Fatal("the call did not return before the deadline")
		panic("unreachable")
	}
}

// TestRealWatchRoutes: NotifyRouteChange2 on the real stack either
// registers (and then WatchHostRules runs until its context ends, returning
// nil) or, where the stack lacks it, fails at once with an error naming it
// that wraps ErrNotSupported; the agent then relies on its periodic resync.
func TestRealWatchRoutes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	b, err := New(platform.Config{OVSDB: newHost().ovs})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = b.WatchHostRules(ctx, func() {})
	switch {
	case err == nil:
		if time.Since(start) < 250*time.Millisecond {
			t.Errorf("WatchHostRules returned nil after %v, before its context ended", time.Since(start))
		}
		t.Logf("route change notifications registered and cancelled")
	case !strings.Contains(err.Error(), "NotifyRouteChange2"):
		t.Errorf("error %q does not name NotifyRouteChange2", err)
	default:
		t.Logf("no route change notifications here: %v (ErrNotSupported: %v)", err, errors.Is(err, platform.ErrNotSupported))
	}
}
