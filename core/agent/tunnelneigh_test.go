package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
)

// fakeVswitchd answers the unixctl commands the tunnel neighbour check
// uses, printing them the way ovs-vswitchd 3.1 does, and records every
// call (a trace's dpctl/del-flows among them).
type fakeVswitchd struct {
	mu      sync.Mutex
	neigh   map[string]string // ip -> "mac bridge[ STALE]"
	gateway map[string]string // destination -> gateway; "::" (on-link) when absent
	calls   []string
	dials   int
	down    bool // dialling fails
}

func newFakeVswitchd() *fakeVswitchd {
	return &fakeVswitchd{neigh: map[string]string{}, gateway: map[string]string{}}
}

func (f *fakeVswitchd) dial(context.Context) (vswitchdControl, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dials++
	if f.down {
		return nil, errors.New("connection refused")
	}
	return f, nil
}

func (f *fakeVswitchd) Close() error { return nil }

func (f *fakeVswitchd) Call(_ context.Context, method string, args ...string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, strings.Join(append([]string{method}, args...), " "))
	switch method {
	case "tnl/neigh/show":
		var b strings.Builder
		b.WriteString("IP                                            MAC                 Bridge\n")
		b.WriteString("==========================================================================\n")
		ips := make([]string, 0, len(f.neigh))
		for ip := range f.neigh {
			ips = append(ips, ip)
		}
		sort.Strings(ips)
		for _, ip := range ips {
			mac, rest, _ := strings.Cut(f.neigh[ip], " ")
			fmt.Fprintf(&b, "%-46s%s   %s\n", ip, mac, rest)
		}
		return b.String(), nil
	case "ovs/route/lookup":
		gw, ok := f.gateway[args[0]]
		if !ok {
			gw = "::"
		}
		if gw == "unroutable" {
			return "", errors.New("Not found")
		}
		return fmt.Sprintf("src 172.30.0.11\ngateway %s\ndev br-int\n", gw), nil
	case "dpctl/del-flows", "dpctl/flush-conntrack":
		return "", nil
	case "tnl/neigh/set":
		if len(args) != 3 {
			return "", errors.New("usage")
		}
		f.neigh[args[1]] = args[2] + " " + args[0]
		return "OK\n", nil
	}
	return "", fmt.Errorf("%s: unknown command", method)
}

func (f *fakeVswitchd) entry(ip string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.neigh[ip]
}

func (f *fakeVswitchd) set(ip, entry string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if entry == "" {
		delete(f.neigh, ip)
		return
	}
	f.neigh[ip] = entry
}

func (f *fakeVswitchd) takeCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

func TestParseTunnelNeighbours(t *testing.T) {
	// As ovs-vswitchd 3.1 prints it: IPv4 entries as plain addresses, an
	// expired entry flagged STALE.
	out := "IP                                            MAC                 Bridge\n" +
		"==========================================================================\n" +
		"172.30.0.12                                   ea:c9:4d:66:13:a0   br-int\n" +
		"172.30.0.13                                   ae:4f:ad:9e:71:0d   br-int STALE\n" +
		"fd00::2                                       02:00:00:00:00:02   br-phy\n"
	got, err := parseTunnelNeighbours(out)
	if err != nil {
		t.Fatal(err)
	}
	want := map[netip.Addr]tunnelNeighbour{
		netip.MustParseAddr("172.30.0.12"): {mac: "ea:c9:4d:66:13:a0", bridge: "br-int"},
		netip.MustParseAddr("172.30.0.13"): {mac: "ae:4f:ad:9e:71:0d", bridge: "br-int", expired: true},
		netip.MustParseAddr("fd00::2"):     {mac: "02:00:00:00:00:02", bridge: "br-phy"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for ip, w := range want {
		if got[ip] != w {
			t.Errorf("%s: got %+v, want %+v", ip, got[ip], w)
		}
	}
	empty, err := parseTunnelNeighbours("IP   MAC   Bridge\n=====\n")
	if err != nil || len(empty) != 0 {
		t.Errorf("empty cache: %v, %v", empty, err)
	}
	for _, bad := range []string{"", "Not found\n", "IP MAC Bridge\n====\n172.30.0.12 ea:c9:4d:66:13:a0\n", "IP MAC Bridge\n====\nnot-an-ip aa br-int\n"} {
		if _, err := parseTunnelNeighbours(bad); err == nil {
			t.Errorf("%q parsed without an error", bad)
		}
	}
}

func TestParseRouteLookup(t *testing.T) {
	for _, tc := range []struct {
		in, gw, dev string
		err         bool
	}{
		{in: "src 172.30.0.11\ngateway ::\ndev br-int\n", gw: "::", dev: "br-int"},
		{in: "src 172.30.0.11\ngateway 172.30.0.1\ndev br-phy\n", gw: "172.30.0.1", dev: "br-phy"},
		{in: "src fd00::1\ngateway fd00::ff\ndev br-int\n", gw: "fd00::ff", dev: "br-int"},
		{in: "Not found", err: true},
		{in: "src 172.30.0.11\ngateway x\ndev br-int\n", err: true},
		{in: "src 172.30.0.11\ngateway ::\n", err: true},
	} {
		gw, dev, err := parseRouteLookup(tc.in)
		if tc.err {
			if err == nil {
				t.Errorf("%q: no error", tc.in)
			}
			continue
		}
		if err != nil || gw.String() != tc.gw || dev != tc.dev {
			t.Errorf("%q: got %v %q %v, want %s %s", tc.in, gw, dev, err, tc.gw, tc.dev)
		}
	}
}

// TestSyncTunnelNeighbours: entries OVS has are refreshed as they are; a missing or
// expired next hop is set from the host's neighbour table under the
// next hop's address (the gateway for a routed peer); one the host has not
// confirmed is set and warmed; one the host lacks is warmed and pending.
func TestSyncTunnelNeighbours(t *testing.T) {
	f := newFakeVswitchd()
	f.set("172.30.0.12", "02:00:00:00:00:12 br-int")       // known
	f.set("172.30.0.13", "02:00:00:00:00:13 br-int STALE") // expired
	f.gateway["10.1.0.14"] = "172.30.0.1"                  // routed, gateway unknown to OVS
	f.gateway["10.1.0.15"] = "172.30.0.1"                  // same gateway
	f.gateway["10.1.0.16"] = "172.30.0.254"                // routed, gateway known
	f.set("172.30.0.254", "02:00:00:00:00:fe br-int")
	f.gateway["10.2.0.18"] = "unroutable" // ovs/route/lookup fails
	r := &resolvingBackend{macs: map[netip.Addr]string{
		netip.MustParseAddr("172.30.0.13"): "02:00:00:00:01:13",
		netip.MustParseAddr("10.1.0.14"):   "02:00:00:00:00:01",
		netip.MustParseAddr("10.1.0.15"):   "02:00:00:00:00:01",
	}, fresh: true, asked: map[netip.Addr]int{}}
	peers := addrs("172.30.0.12", "172.30.0.13", "10.1.0.14", "10.1.0.15", "10.1.0.16", "172.30.0.17", "10.2.0.18")

	res, err := syncTunnelNeighbours(context.Background(), f, r, peers)
	if err != nil {
		t.Fatal(err)
	}
	wantSet := []string{
		"172.30.0.13 -> 02:00:00:00:01:13 on br-int",
		"10.1.0.14 -> 02:00:00:00:00:01 on br-int",
	}
	if !slices.Equal(res.set, wantSet) {
		t.Errorf("set %q, want %q", res.set, wantSet)
	}
	if want := addrs("172.30.0.17", "10.2.0.18"); !slices.Equal(res.pending, want) || !slices.Equal(res.warm, want) {
		t.Errorf("pending %v, warm %v; want %v for both", res.pending, res.warm, want)
	}
	for ip, want := range map[string]string{
		"172.30.0.12": "02:00:00:00:00:12 br-int", // untouched
		"172.30.0.13": "02:00:00:00:01:13 br-int", // replaced
		"172.30.0.1":  "02:00:00:00:00:01 br-int", // under the gateway's address, once
		"10.1.0.14":   "",
		"172.30.0.17": "",
	} {
		if got := f.entry(ip); got != want {
			t.Errorf("cache[%s] = %q, want %q", ip, got, want)
		}
	}
	calls := f.takeCalls()
	// The two entries OVS had are set again as they are (their idle timer
	// restarts); the two new ones once each.
	for _, want := range []string{
		"tnl/neigh/set br-int 172.30.0.12 02:00:00:00:00:12",
		"tnl/neigh/set br-int 172.30.0.254 02:00:00:00:00:fe",
		"tnl/neigh/set br-int 172.30.0.13 02:00:00:00:01:13",
		"tnl/neigh/set br-int 172.30.0.1 02:00:00:00:00:01",
	} {
		if !slices.Contains(calls, want) {
			t.Errorf("no %q in %q", want, calls)
		}
	}
	if n := countPrefix(calls, "tnl/neigh/set"); n != 4 || res.refreshed != 2 {
		t.Errorf("%d tnl/neigh/set calls, %d refreshed; want 4 and 2: %q", n, res.refreshed, calls)
	}
	if slices.Contains(calls, "ovs/route/lookup 172.30.0.12") {
		t.Errorf("looked up the route of a peer OVS already knows: %q", calls)
	}
	if r.asked[netip.MustParseAddr("172.30.0.12")] != 0 || r.asked[netip.MustParseAddr("10.1.0.16")] != 0 {
		t.Errorf("asked the host for next hops OVS knows: %v", r.asked)
	}

	// Everything known now but 172.30.0.17; the host's entry for it is
	// not confirmed: it is set, and warmed to get it confirmed.
	peers = peers[:6] // without the unroutable one from here on
	r.fresh = false
	r.macs[netip.MustParseAddr("172.30.0.17")] = "02:00:00:00:00:17"
	res, err = syncTunnelNeighbours(context.Background(), f, r, peers)
	if err != nil {
		t.Fatal(err)
	}
	if want := addrs("172.30.0.17"); len(res.pending) != 0 || !slices.Equal(res.warm, want) || len(res.set) != 1 {
		t.Errorf("got set %q pending %v warm %v; want one set, nothing pending, %v warmed", res.set, res.pending, res.warm, want)
	}
	if got := f.entry("172.30.0.17"); got != "02:00:00:00:00:17 br-int" {
		t.Errorf("cache[172.30.0.17] = %q", got)
	}

	// Without a resolver (a backend without the capability) every missing
	// next hop is warmed and pending.
	f.set("172.30.0.17", "")
	res, err = syncTunnelNeighbours(context.Background(), f, nil, peers)
	if err != nil || !slices.Equal(res.pending, addrs("172.30.0.17")) || len(res.set) != 0 {
		t.Errorf("without a resolver: set %q pending %v, %v", res.set, res.pending, err)
	}

	// A daemon that does not understand a command is an error, not a
	// silently complete check.
	if _, err := syncTunnelNeighbours(context.Background(), unixctlFunc(func(string, ...string) (string, error) {
		return "", errors.New(`"tnl/neigh/show" is not a valid command`)
	}), r, peers); err == nil {
		t.Error("no error from a daemon refusing tnl/neigh/show")
	}
}

type unixctlFunc func(method string, args ...string) (string, error)

func (f unixctlFunc) Call(_ context.Context, method string, args ...string) (string, error) {
	return f(method, args...)
}

func addrs(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, a := range s {
		out[i] = netip.MustParseAddr(a)
	}
	return out
}

func countPrefix(ss []string, prefix string) int {
	n := 0
	for _, s := range ss {
		if strings.HasPrefix(s, prefix) {
			n++
		}
	}
	return n
}

// TestAgentKeepsTunnelNeighbours: in encap on the userspace datapath the
// agent has every peer's next hop in ovs-vswitchd's tunnel neighbour cache
// by the time it is ready; it puts back what a restarted ovs-vswitchd lost
// on the new OpenFlow connection; and a next hop the host resolves only
// later is set without any event. Peer node IPs are on loopback: the
// warm-up datagrams stay on this machine.
func TestAgentKeepsTunnelNeighbours(t *testing.T) {
	w := newWorld(t, node("node-1", "127.0.0.11", "10.244.1.0/24"), node("node-2", "127.0.0.12", "10.244.2.0/24"), node("node-3", "127.0.0.13", "10.244.3.0/24"))
	rb := &resolvingBackend{FakeBackend: w.backend, macs: map[netip.Addr]string{
		netip.MustParseAddr("127.0.0.12"): "02:00:00:00:00:12",
	}, fresh: true, asked: map[netip.Addr]int{}}
	f := newFakeVswitchd()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	a, err := New(Options{Config: w.cfg, Logger: log, Kube: w.kube, OVSDB: w.db, Backend: rb, NewSwitch: w.sw.factory})
	if err != nil {
		t.Fatal(err)
	}
	a.vswitchd = f.dial
	run(t, a)
	if got := f.entry("127.0.0.12"); got != "02:00:00:00:00:12 br-int" {
		t.Errorf("at ready, cache[node-2] = %q, want node-2's next hop", got)
	}

	// node-3's next hop: unknown to the host at first; resolved later.
	rb.set("127.0.0.13", "02:00:00:00:00:13")
	poll(t, "node-3's next hop set after a retry", func() (bool, string) {
		e := f.entry("127.0.0.13")
		return e == "02:00:00:00:00:13 br-int", e
	})

	// ovs-vswitchd restarts: its cache is empty; the new OpenFlow
	// connection brings the entries back.
	f.set("127.0.0.12", "")
	f.set("127.0.0.13", "")
	if err := w.sw.restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	poll(t, "entries back after the reconnection", func() (bool, string) {
		return f.entry("127.0.0.12") != "" && f.entry("127.0.0.13") != "", fmt.Sprint(f.entry("127.0.0.12"), "|", f.entry("127.0.0.13"))
	})
}
