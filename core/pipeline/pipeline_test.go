package pipeline

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/seine-cni/seine/ovs/openflow"
)

func TestCookieLayout(t *testing.T) {
	c := NewCookie(0xbeef, CategoryPeer, 0xff_1234_5678_9a) // id wider than 40 bits
	if c.Round() != 0xbeef || c.Category() != CategoryPeer || c.ID() != 0x34_5678_9a|0x12<<32 {
		t.Errorf("cookie %#x decodes as %s", uint64(c), c)
	}
	if uint64(c)>>48 != 0xbeef {
		t.Errorf("round is not in the top 16 bits: %#x", uint64(c))
	}
	// Selectors select what they say and nothing else.
	sel := func(cookie, mask uint64, c Cookie) bool { return uint64(c)&mask == cookie&mask }
	pod := NewCookie(7, CategoryPod, PodID("default", "web-0"))
	other := NewCookie(7, CategoryPod, PodID("default", "web-1"))
	for _, tc := range []struct {
		name         string
		cookie, mask uint64
		in, out      []Cookie
	}{
		{"round", first(RoundSelector(7)), second(RoundSelector(7)), []Cookie{pod, other, NewCookie(7, CategoryNode, 0)}, []Cookie{NewCookie(8, CategoryPod, PodID("default", "web-0"))}},
		{"category", first(CategorySelector(7, CategoryPod)), second(CategorySelector(7, CategoryPod)), []Cookie{pod, other}, []Cookie{NewCookie(7, CategoryPeer, 1), NewCookie(6, CategoryPod, 1)}},
		{"object", first(ObjectSelector(7, CategoryPod, PodID("default", "web-0"))), second(ObjectSelector(7, CategoryPod, PodID("default", "web-0"))), []Cookie{pod}, []Cookie{other, NewCookie(8, CategoryPod, PodID("default", "web-0"))}},
	} {
		for _, c := range tc.in {
			if !sel(tc.cookie, tc.mask, c) {
				t.Errorf("%s selector misses %s", tc.name, c)
			}
		}
		for _, c := range tc.out {
			if sel(tc.cookie, tc.mask, c) {
				t.Errorf("%s selector takes %s", tc.name, c)
			}
		}
	}
	if PodID("a", "bc") == PodID("ab", "c") {
		t.Error("pod IDs do not separate namespace from name")
	}
	if Round(0xffff).Next() != 1 || Round(0).Next() != 1 || Round(7).Next() != 8 {
		t.Error("rounds do not wrap past 0 (the learned flows' round)")
	}
}

func first(a, _ uint64) uint64  { return a }
func second(_, b uint64) uint64 { return b }

// Every flow carries the round and the category of what it was built from.
func TestFlowCookies(t *testing.T) {
	st := scenarioByName(t, "routed-encap-geneve")
	flows := buildOrFail(t, st, 42)
	counts := map[Category]int{}
	for _, f := range flows {
		c := Cookie(f.CookieValue())
		if c.Round() != 42 {
			t.Errorf("flow %s: round %d", f, c.Round())
		}
		counts[c.Category()]++
	}
	for _, cat := range []Category{CategoryPipeline, CategoryNode, CategoryPod, CategoryPeer} {
		if counts[cat] == 0 {
			t.Errorf("no %s flows", cat)
		}
	}
	pf, err := PodFlows(st.Node, st.Pods[0], 42)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range pf {
		if c := Cookie(f.CookieValue()); c.Category() != CategoryPod || c.ID() != PodID("default", "web-0") {
			t.Errorf("pod flow %s has cookie %s", f, c)
		}
	}
}

// Properties of every golden node: each table has a miss flow (so no
// packet falls to OVS's implicit miss), goto_table only goes forward to a
// pipeline table, and the builders are deterministic.
func TestPipelineProperties(t *testing.T) {
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			flows := buildOrFail(t, sc.state, 1)
			miss := map[Table]bool{}
			for _, f := range flows {
				tbl := Table(f.TableID())
				if !slices.Contains(Tables, tbl) {
					t.Errorf("flow in unknown table: %s", f)
				}
				if f.Priority() == 0 {
					if len(f.MatchBytes()) != 0 {
						t.Errorf("priority 0 flow with a match: %s", f)
					}
					miss[tbl] = true
				}
				acts, err := openflow.DecodeInstructions(f.InstructionBytes())
				if err != nil {
					t.Fatal(err)
				}
				for _, a := range acts {
					if g, ok := a.(openflow.GotoTable); ok && (Table(g) <= tbl || !slices.Contains(Tables, Table(g))) {
						t.Errorf("bad goto in %s", f)
					}
				}
			}
			for _, tbl := range Tables {
				if !miss[tbl] {
					t.Errorf("table %s has no miss flow", tbl)
				}
			}
			// Pods and peers in another order give the same flows.
			shuffled := sc.state
			shuffled.Pods = slices.Clone(sc.state.Pods)
			shuffled.Peers = slices.Clone(sc.state.Peers)
			slices.Reverse(shuffled.Pods)
			slices.Reverse(shuffled.Peers)
			if Text(buildOrFail(t, shuffled, 1)) != Text(flows) {
				t.Error("flow order depends on input order")
			}
		})
	}
}

// A Windows node runs the bridged uplink topology, and its flows are by
// design those of a Linux node in that topology: the OS only decides which
// topology a node may use (a Windows node refuses the routed host). Every
// lab node runs the bridged uplink, so the lab's packets go through the
// flows a Windows node installs; what differs on Windows is below the
// bridge (HNS, the Hyper-V extension, IP Helper, WinNAT: windows/).
func TestWindowsNode(t *testing.T) {
	win := baseState(OSWindows, BridgedUplink, Encap, Geneve)
	lin := baseState(OSLinux, BridgedUplink, Encap, Geneve)
	if Text(buildOrFail(t, win, 1)) != Text(buildOrFail(t, lin, 1)) {
		t.Error("windows and linux bridged-uplink flows differ: the lab's Linux nodes no longer stand for the Windows flow set (README)")
	}
	win.Node.Topology = RoutedHost
	win.Node.Ports.Uplink, win.Node.NodeMAC = 0, nil
	if _, err := Build(win, 1); err == nil || !strings.Contains(err.Error(), "windows nodes use the bridgedUplink topology") {
		t.Errorf("windows routed host: %v", err)
	}
}

func TestPodMTU(t *testing.T) {
	for _, tc := range []struct {
		mode TrafficMode
		tun  TunnelType
		mtu  int
		want int
	}{
		{Encap, Geneve, 1500, 1450}, {Encap, VXLAN, 9000, 8950}, {Hybrid, GRE, 1500, 1462},
		{NoEncap, 0, 1500, 1500}, {Encap, Geneve, 0, 1450},
	} {
		n := NodeConfig{Mode: tc.mode, Tunnel: tc.tun, MTU: tc.mtu}
		if got := n.PodMTU(); got != tc.want {
			t.Errorf("%s/%s MTU %d: pod MTU %d, want %d", tc.mode, tc.tun, tc.mtu, got, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	v6 := netip.MustParseAddr("fd00::1")
	cases := []struct {
		name        string
		mutate      func(*State)
		want        string
		unsupported bool
	}{
		{"no name", func(s *State) { s.Node.Name = "" }, "node name is empty", false},
		{"unknown OS", func(s *State) { s.Node.OS = "plan9" }, "unknown OS", false},
		{"encap without tunnel port", func(s *State) { s.Node.Ports.Tunnel = 0 }, "needs the tunnel port", false},
		{"STT", func(s *State) { s.Node.Tunnel = TunnelType(9) }, "tunnel(9)", true},
		{"IPv6 node IP", func(s *State) { s.Node.NodeIPs = []netip.Addr{v6} }, "IPv6", true},
		{"IPv6 pod IP", func(s *State) { s.Pods[0].IPs = []netip.Addr{v6} }, "IPv6", true},
		{"gateway outside pod CIDR", func(s *State) { s.Node.GatewayIP = netip.MustParseAddr("10.244.2.1") }, "outside the pod CIDRs", false},
		{"pod CIDR outside cluster", func(s *State) { s.Node.PodCIDRs = []netip.Prefix{pfx("10.245.1.0/24")} }, "outside the cluster", false},
		{"host bits", func(s *State) { s.Node.PodCIDRs = []netip.Prefix{pfx("10.244.1.1/24")} }, "host bits", false},
		{"multicast gateway MAC", func(s *State) { s.Node.GatewayMAC = mustMAC("01:00:5e:00:00:01") }, "multicast", false},
		{"bridged without uplink", func(s *State) { s.Node.Topology = BridgedUplink; s.Node.NodeMAC = nodeMAC }, "needs the uplink port", false},
		{"routed with uplink", func(s *State) { s.Node.Ports.Uplink = 3 }, "no uplink or host port", false},
		{"port twice", func(s *State) { s.Node.Ports.Tunnel = portGateway }, "used twice", false},
		{"pod on gateway port", func(s *State) { s.Pods[0].Port = portGateway }, "belongs to the node", false},
		{"pod port too big", func(s *State) { s.Pods[0].Port = 0xff00 }, "bad port", false},
		{"pod outside CIDR", func(s *State) { s.Pods[0].IPs = []netip.Addr{netip.MustParseAddr("10.244.2.5")} }, "outside the node's pod CIDRs", false},
		{"pod with gateway IP", func(s *State) { s.Pods[0].IPs = []netip.Addr{gatewayIP} }, "is the gateway IP", false},
		{"pods share IP", func(s *State) { s.Pods[1].IPs = s.Pods[0].IPs }, "share IP", false},
		{"pods share port", func(s *State) { s.Pods[1].Port = s.Pods[0].Port }, "share port", false},
		{"pods share MAC", func(s *State) { s.Pods[1].MAC = s.Pods[0].MAC }, "share MAC", false},
		{"peer is us", func(s *State) { s.Peers[0].Name = "node-a" }, "is this node", false},
		{"peer overlaps us", func(s *State) { s.Peers[0].PodCIDRs = []netip.Prefix{pfx("10.244.0.0/23")} }, "overlaps this node", false},
		{"peers overlap", func(s *State) { s.Peers[1].PodCIDRs = s.Peers[0].PodCIDRs }, "overlaps another peer", false},
		{"peer twice", func(s *State) { s.Peers[1].Name = s.Peers[0].Name }, "listed twice", false},
		{"tiny MTU", func(s *State) { s.Node.MTU = 600 }, "pod MTU", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := baseState(OSLinux, RoutedHost, Encap, Geneve)
			s.Pods = slices.Clone(s.Pods)
			s.Peers = slices.Clone(s.Peers)
			tc.mutate(&s)
			_, err := Build(s, 1)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error with %q, got %v", tc.want, err)
			}
			if errors.Is(err, ErrUnsupported) != tc.unsupported {
				t.Errorf("errors.Is(ErrUnsupported) = %v for %v", !tc.unsupported, err)
			}
		})
	}
	valid := scenarioByName(t, "routed-noencap")
	if err := valid.Validate(); err != nil {
		t.Errorf("valid noEncap state: %v", err)
	}
}
