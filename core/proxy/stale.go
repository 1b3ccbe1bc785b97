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
// endpoint keeps its flows). Then, for every UDP port of new that has
// serving endpoints, the frontends that had none before (a new Service, a
// new frontend, a first endpoint): all of their entries, made by packets
// that no service flow took (before the Service was installed) and that
// would otherwise keep a client's flow away from the endpoints until it
// idles out, as kube-proxy flushes a UDP Service that gets its first
// endpoint. The order is stable.
func StaleUDPEntries(old, new *Service) []StaleUDP {
	out := staleOfOld(old, new)
	if new == nil {
		return out
	}
	for i := range new.Ports {
		np := &new.Ports[i]
		if np.Protocol != ProtoUDP || len(np.Serving) == 0 {
			continue
		}
		var oldAddrs []netip.AddrPort
		var oldNP uint16
		if op := old.port(np.Key()); op != nil && len(op.Serving) > 0 {
			oldAddrs, oldNP = frontends(op)
		}
		newAddrs, newNP := frontends(np)
		for _, f := range newAddrs {
			if !slices.Contains(oldAddrs, f) {
				out = append(out, StaleUDP{Frontend: f})
			}
		}
		if newNP != 0 && newNP != oldNP {
			out = append(out, StaleUDP{NodePort: newNP})
		}
	}
	return out
}

// port is s's port of key k, nil if s (which may be nil) has none.
func (s *Service) port(k string) *Port {
	if s == nil {
		return nil
	}
	for i := range s.Ports {
		if s.Ports[i].Key() == k {
			return &s.Ports[i]
		}
	}
	return nil
}

// staleOfOld is what StaleUDPEntries finds on old's ports.
func staleOfOld(old, new *Service) []StaleUDP {
	if old == nil {
		return nil
	}
	var out []StaleUDP
	for i := range old.Ports {
		op := &old.Ports[i]
		if op.Protocol != ProtoUDP {
			continue
		}
		np := new.port(op.Key())
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
