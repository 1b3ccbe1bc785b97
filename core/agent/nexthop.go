package agent

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/platform"
)

const (
	// nextHopWarmEvery limits the datagrams that make the host confirm an
	// unconfirmed next hop to one per peer per period.
	nextHopWarmEvery = 15 * time.Second
	// nextHopRetryMax caps the back-off between look-ups while a next hop
	// is still unresolved; Node events also trigger look-ups.
	nextHopRetryMax = 5 * time.Second
)

// nextHops remembers the peers' next-hop MACs for the noEncap direct path.
// Its zero value is ready.
type nextHops struct {
	mu     sync.Mutex
	macs   map[netip.Addr]net.HardwareAddr // last address resolved per peer node IP
	warmed map[netip.Addr]time.Time        // last warm-up datagram per peer node IP
	delay  time.Duration                   // next retry back-off while unresolved
	timer  *time.Timer
}

// direct reports whether the pipeline sends traffic to peer p's pods
// straight out of the uplink when it knows the next hop's MAC: bridged
// uplink, and p reached without encapsulation.
func (a *Agent) direct(p *pipeline.Peer) bool {
	return a.topo == platform.BridgedUplink && !a.tunnelled(p)
}

// tunnelled reports whether peer p's pods are reached through the tunnel:
// always in encap, in hybrid when p is on another subnet, never in noEncap.
func (a *Agent) tunnelled(p *pipeline.Peer) bool {
	return a.mode == pipeline.Encap || (a.mode == pipeline.Hybrid && !p.SameSubnet)
}

// fillNextHops sets NodeMAC on every direct peer whose next hop the host
// has resolved, or resolved before. For a next hop without an address, or
// with one the host has not confirmed lately, it sends a datagram from the
// host towards the peer (the host's ARP for it goes out of the uplink
// through the bridge) and, while any address is missing, looks again after
// a back-off. Until its MAC is known a peer's traffic is routed by the host,
// which works, only slower: it crosses the bridge twice.
func (a *Agent) fillNextHops(peers []pipeline.Peer) {
	r, ok := a.backend.(platform.NextHopResolver)
	if !ok {
		return
	}
	h := &a.nextHops
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.macs == nil {
		h.macs = map[netip.Addr]net.HardwareAddr{}
		h.warmed = map[netip.Addr]time.Time{}
	}
	now := time.Now()
	live := map[netip.Addr]bool{}
	var warm []netip.Addr
	missing := false
	for i := range peers {
		p := &peers[i]
		if !a.direct(p) {
			continue
		}
		live[p.NodeIP] = true
		mac, fresh, err := r.NextHopMAC(context.Background(), p.NodeIP)
		switch {
		case err == nil:
			if old := h.macs[p.NodeIP]; old != nil && old.String() != mac.String() {
				a.log.Info("peer next hop changed", "peer", p.Name, "ip", p.NodeIP, "old", old, "mac", mac)
			}
			h.macs[p.NodeIP] = mac
		default:
			a.log.Debug("peer next hop", "peer", p.Name, "ip", p.NodeIP, "err", err)
		}
		p.NodeMAC = h.macs[p.NodeIP]
		if p.NodeMAC == nil {
			missing = true
		}
		every := nextHopWarmEvery
		if err != nil {
			every = time.Second // an ARP request or its reply may have been lost
		}
		if (err != nil || !fresh) && now.Sub(h.warmed[p.NodeIP]) >= every {
			h.warmed[p.NodeIP] = now
			warm = append(warm, p.NodeIP)
		}
	}
	for ip := range h.macs {
		if !live[ip] {
			delete(h.macs, ip)
		}
	}
	for ip := range h.warmed {
		if !live[ip] {
			delete(h.warmed, ip)
		}
	}
	sendWarmDatagrams(a.log, warm)
	if !missing {
		h.delay = 0
		return
	}
	// Look again soon: the host resolves a next hop within milliseconds of
	// the datagram, while the next Node event may be seconds away.
	h.delay = min(max(2*h.delay, 100*time.Millisecond), nextHopRetryMax)
	if h.timer != nil {
		h.timer.Stop()
	}
	h.timer = time.AfterFunc(h.delay, a.poke)
}
