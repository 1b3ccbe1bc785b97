package agent

import (
	"log/slog"
	"net"
	"net/netip"
	"strconv"

	"github.com/seine-cni/seine/core/pipeline"
)

// discardPort is the UDP port the warm-up datagram goes to (RFC 863).
const discardPort = 9

// warmTunnelNeighbours sends one small datagram from the host to every
// tunnelled peer's node IP. The host's ARP for it passes through the bridge,
// where ovs-vswitchd's userspace tunnelling learns the peer's MAC by snooping
// the reply; without it the first tunnelled packet to a new peer is dropped
// while OVS resolves the next hop.
func (a *Agent) warmTunnelNeighbours() {
	a.mu.Lock()
	var ips []netip.Addr
	for _, p := range a.peers {
		if a.mode == pipeline.Encap || (a.mode == pipeline.Hybrid && !p.SameSubnet) {
			ips = append(ips, p.NodeIP)
		}
	}
	a.mu.Unlock()
	sendWarmDatagrams(a.log, ips)
}

// sendWarmDatagrams sends one small UDP datagram from the host to the
// discard port of each ip, so that the host resolves (or confirms) its next
// hop through the bridge.
func sendWarmDatagrams(log *slog.Logger, ips []netip.Addr) {
	for _, ip := range ips {
		c, err := net.Dial("udp", net.JoinHostPort(ip.String(), strconv.Itoa(discardPort)))
		if err != nil {
			log.Debug("neighbour warm-up", "peer_ip", ip, "err", err)
			continue
		}
		_, _ = c.Write([]byte("seine"))
		_ = c.Close()
	}
}
