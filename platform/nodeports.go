package platform

import (
	"context"
	"fmt"
	"net/netip"
)

// NodePortRedirector is a capability: the host's own connections to its
// node ports, which the host would deliver to itself, are sent to Target
// (same port) instead, which the host routes into the bridge (a
// ServiceRoute), where the pipeline's service proxy takes them, from the
// gateway's address (not the node IP the host chose, to which a remote
// endpoint would answer past the bridge; the bridge itself SNATs the
// connection to the node IP for an endpoint on a tunnelled peer, whose
// node sends the replies back through the tunnel). Traffic
// from other hosts reaches the node ports through the bridge directly and
// needs nothing here. Linux does it with a DNAT in the host's output path;
// a backend without it leaves the node unable to reach its own node ports
// (find it by type assertion). Sync semantics as HostRules: the whole
// state, idempotent.
type NodePortRedirector interface {
	SyncNodePorts(ctx context.Context, s NodePortState) error
}

// NodePort is one node port.
type NodePort struct {
	Protocol uint8 // 6 TCP, 17 UDP, 132 SCTP
	Port     uint16
}

func (p NodePort) String() string {
	names := map[uint8]string{6: "tcp", 17: "udp", 132: "sctp"}
	return fmt.Sprintf("%s/%d", names[p.Protocol], p.Port)
}

// NodePortState is the whole desired redirection: every node port to
// Target. No ports (or no Target) means none.
type NodePortState struct {
	Target netip.Addr
	Ports  []NodePort
	// Forwarded, when valid, is the address from which the bridge hands the
	// host the connections of outside clients (to node ports, external and
	// load-balancer IPs) whose endpoint is outside the pod network (a
	// hostNetwork pod: this node or another). The host masquerades those it
	// forwards to another node, so that node answers this one; the
	// address's route through the gateway (a ServiceRoute) brings every
	// answer back into the bridge.
	Forwarded netip.Addr
	// HostPorts are the node's pods' host ports. The host DNATs its own
	// connections to them (and those it receives: on a routed host, the
	// uplink's) to the pod, masquerading the ones it originates so the pod
	// answers the gateway (127.0.0.1 cannot leave the host, and the node's
	// address would not pass NetworkPolicy as the node). The bridge DNATs
	// what reaches it from pods and, on a bridged uplink, from the uplink
	// (core/pipeline).
	HostPorts []HostPort
}

// HostPort is one host port of a pod on this node.
type HostPort struct {
	Protocol uint8 // 6 TCP, 17 UDP, 132 SCTP
	// HostIP is the address it is on; the zero Addr is every address of
	// the host, 127.0.0.1 included.
	HostIP  netip.Addr
	Port    uint16
	PodIP   netip.Addr
	PodPort uint16
}

func (h HostPort) String() string {
	ip := "*"
	if h.HostIP.IsValid() {
		ip = h.HostIP.String()
	}
	return fmt.Sprintf("%s %s:%d -> %s", NodePort{Protocol: h.Protocol, Port: h.Port}, ip, h.Port, netip.AddrPortFrom(h.PodIP, h.PodPort))
}

// Validate checks s for mistakes any backend would reject.
func (s NodePortState) Validate() error {
	if s.Forwarded.IsValid() && !s.Forwarded.Is4() {
		return fmt.Errorf("node ports: forwarded source %s: want an IPv4 address", s.Forwarded)
	}
	for _, h := range s.HostPorts {
		if h.Port == 0 || h.PodPort == 0 || (h.Protocol != 6 && h.Protocol != 17 && h.Protocol != 132) {
			return fmt.Errorf("host port %s: bad protocol or port", h)
		}
		if !h.PodIP.Is4() || (h.HostIP.IsValid() && !h.HostIP.Is4()) {
			return fmt.Errorf("host port %s: want IPv4 addresses", h)
		}
	}
	if len(s.Ports) == 0 {
		return nil
	}
	if !s.Target.Is4() {
		return fmt.Errorf("node ports: target %s: want an IPv4 address", s.Target)
	}
	for _, p := range s.Ports {
		if p.Port == 0 || (p.Protocol != 6 && p.Protocol != 17 && p.Protocol != 132) {
			return fmt.Errorf("node port %s: bad protocol or port", p)
		}
	}
	return nil
}
