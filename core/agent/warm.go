package agent

import (
	"log/slog"
	"net"
	"net/netip"
	"strconv"
)

// discardPort is the UDP port the warm-up datagram goes to (RFC 863).
const discardPort = 9

// sendWarmDatagrams sends one small UDP datagram from the host to the
// discard port of each ip, so that the host resolves (or confirms) its next
// hop through the bridge. OVS's userspace tunnelling learns the next hop
// too when the host's ARP reply crosses the bridge.
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
