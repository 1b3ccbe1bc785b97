package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/seine-cni/seine/platform"
	"github.com/seine-cni/seine/platform/platformtest"
)

// resolvingBackend is the fake backend with the platform.NextHopResolver
// capability: a neighbour table the test fills.
type resolvingBackend struct {
	*platformtest.FakeBackend
	mu    sync.Mutex
	macs  map[netip.Addr]string
	fresh bool
	asked map[netip.Addr]int
}

var _ platform.NextHopResolver = (*resolvingBackend)(nil)

func (r *resolvingBackend) NextHopMAC(_ context.Context, ip netip.Addr) (net.HardwareAddr, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.asked[ip]++
	s, ok := r.macs[ip]
	if !ok {
		return nil, false, fmt.Errorf("next hop %s: %w", ip, platform.ErrNoNeighbour)
	}
	mac, err := net.ParseMAC(s)
	return mac, r.fresh, err
}

func (r *resolvingBackend) set(ip, mac string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if mac == "" {
		delete(r.macs, netip.MustParseAddr(ip))
		return
	}
	r.macs[netip.MustParseAddr(ip)] = mac
}

// TestNoEncapNextHop: in noEncap on a bridged uplink, a peer's pods are
// reached through the host until the backend resolves the peer's next hop,
// then straight out of the uplink to that MAC, without waiting for a Node
// event; the address is kept while a later look-up fails, and follows the
// host when it changes. Peer node IPs are on loopback: the warm-up
// datagrams the agent sends stay on this machine.
func TestNoEncapNextHop(t *testing.T) {
	w := newWorld(t, node("node-1", "127.0.0.11", "10.244.1.0/24"), node("node-2", "127.0.0.12", "10.244.2.0/24"))
	w.cfg.TrafficMode = "noEncap"
	w.cfg.TunnelType = ""
	rb := &resolvingBackend{FakeBackend: w.backend, macs: map[netip.Addr]string{}, fresh: true, asked: map[netip.Addr]int{}}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	a, err := New(Options{Config: w.cfg, Logger: log, Kube: w.kube, OVSDB: w.db, Backend: rb, NewSwitch: w.sw.factory})
	if err != nil {
		t.Fatal(err)
	}
	run(t, a)

	peerFlow := func() string {
		for _, l := range strings.Split(w.sw.text(), "\n") {
			if strings.Contains(l, "table=60, priority=180,") && strings.Contains(l, "nw_dst=10.244.2.0/24") {
				return l
			}
		}
		return ""
	}
	viaHost := func() (bool, string) {
		l := peerFlow()
		return l != "" && !strings.Contains(l, "0x40/0xf0->reg0"), l
	}
	direct := func(mac string) func() (bool, string) {
		return func() (bool, string) {
			l := peerFlow()
			return strings.Contains(l, "set_field:"+mac+"->eth_dst") && strings.Contains(l, "0x40/0xf0->reg0"), l
		}
	}
	poll(t, "node-2 via the host while unresolved", viaHost)
	rb.set("127.0.0.12", "52:54:00:00:10:0c")
	poll(t, "node-2 straight out of the uplink once resolved (retry, no Node event)", direct("52:54:00:00:10:0c"))
	rb.set("127.0.0.12", "")
	a.poke()
	// A failed look-up keeps the last address: give the agent a few rounds.
	rb.mu.Lock()
	before := rb.asked[netip.MustParseAddr("127.0.0.12")]
	rb.mu.Unlock()
	a.poke()
	poll(t, "another look-up", func() (bool, string) {
		rb.mu.Lock()
		defer rb.mu.Unlock()
		return rb.asked[netip.MustParseAddr("127.0.0.12")] > before, ""
	})
	if ok, l := direct("52:54:00:00:10:0c")(); !ok {
		t.Errorf("a failed look-up dropped the known next hop: %s", l)
	}
	rb.set("127.0.0.12", "52:54:00:00:10:0d")
	a.poke()
	poll(t, "node-2 follows the changed next hop", direct("52:54:00:00:10:0d"))
	if !strings.Contains(w.backend.FakeHostRules.Dump(), "10.244.2.0/24 via 127.0.0.12") {
		t.Errorf("host rules lack the host's own route to node-2's pods:\n%s", w.backend.FakeHostRules.Dump())
	}
}
