package proxy

import (
	"fmt"
	"net/netip"
	"slices"
)

// StaleUDP is a set of UDP conntrack entries a change left pointing where
// they no longer should: connections to Frontend (an IP and port) or, when
// Frontend is invalid, to NodePort on any node IP, that were DNATed to
// Endpoint; an invalid Endpoint means every endpoint. UDP has no end of
// connection, so without removing them a client that keeps sending (DNS,
// statsd) keeps reaching a removed endpoint, or a frontend that is gone.
type StaleUDP struct {
	Frontend netip.AddrPort
	NodePort uint16
	Endpoint netip.AddrPort
}

func (s StaleUDP) String() string {
	f := s.Frontend.String()
	if !s.Frontend.IsValid() {
		f = fmt.Sprintf("*:%d", s.NodePort)
	}
	e := "*"
	if s.Endpoint.IsValid() {
		e = s.Endpoint.String()
	}
	return "udp " + f + " -> " + e
}

// frontends of a port: the cluster IP, external and load-balancer IPs
// with the service port, and the node port.
func frontends(p *Port) (addrs []netip.AddrPort, nodePort uint16) {
	addrs = append(addrs, netip.AddrPortFrom(p.ClusterIP, p.Port))
	for _, ip := range p.ExternalIPs {
		addrs = append(addrs, netip.AddrPortFrom(ip, p.Port))
	}
	for _, ip := range p.LoadBalancerIPs {
		addrs = append(addrs, netip.AddrPortFrom(ip, p.Port))
	}
	return addrs, p.NodePort
}

// StaleUDPEntries lists what a change of one Service from old to new (either
// may be nil) leaves stale in conntrack: for every UDP port of old, the
// frontends new no longer has (all of their entries), and on the frontends
// it keeps, the endpoints that no longer serve (as kube-proxy does,
// traffic policies and topology are not taken into account: a serving
// endpoint keeps its flows). The order is stable.
func StaleUDPEntries(old, new *Service) []StaleUDP {
	if old == nil {
		return nil
	}
	var out []StaleUDP
	for i := range old.Ports {
		op := &old.Ports[i]
		if op.Protocol != ProtoUDP {
			continue
		}
		var np *Port
		if new != nil {
			for j := range new.Ports {
				if new.Ports[j].Key() == op.Key() {
					np = &new.Ports[j]
				}
			}
		}
		oldAddrs, oldNP := frontends(op)
		var newAddrs []netip.AddrPort
		var newNP uint16
		if np != nil {
			newAddrs, newNP = frontends(np)
		}
		var gone []netip.AddrPort
		if np != nil {
			for _, e := range op.Serving {
				if !slices.Contains(np.Serving, e) {
					gone = append(gone, e)
				}
			}
		}
		for _, f := range oldAddrs {
			if !slices.Contains(newAddrs, f) {
				out = append(out, StaleUDP{Frontend: f})
				continue
			}
			for _, e := range gone {
				out = append(out, StaleUDP{Frontend: f, Endpoint: e})
			}
		}
		if oldNP != 0 {
			if oldNP != newNP {
				out = append(out, StaleUDP{NodePort: oldNP})
			} else {
				for _, e := range gone {
					out = append(out, StaleUDP{NodePort: oldNP, Endpoint: e})
				}
			}
		}
	}
	return out
}
