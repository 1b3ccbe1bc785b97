package linux

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/seine-cni/seine/platform"
)

// ChainNodePorts holds the DNAT of the host's own connections to its node
// ports (nat OUTPUT), ChainNodePortsMasq their masquerade (nat
// POSTROUTING).
const (
	ChainNodePorts     = "SEINE-NODEPORTS"
	ChainNodePortsMasq = "SEINE-NODEPORTS-MASQ"
	// ChainHostPorts holds the DNAT of pods' host ports (nat OUTPUT and
	// PREROUTING).
	ChainHostPorts = "SEINE-HOSTPORTS"
)

var (
	nodePortsJump = jump{table: "nat", chain: "OUTPUT", target: ChainNodePorts,
		comment: "seine: host connections to node ports go to the service proxy"}
	nodePortsMasqJump = jump{table: "nat", chain: "POSTROUTING", target: ChainNodePortsMasq,
		comment: "seine: host connections to node ports leave from the gateway address"}
	hostPortsOutputJump = jump{table: "nat", chain: "OUTPUT", target: ChainHostPorts,
		comment: "seine: host connections to pod host ports", insert: true}
	hostPortsPreroutingJump = jump{table: "nat", chain: "PREROUTING", target: ChainHostPorts,
		comment: "seine: pod host ports", insert: true}
)

var _ platform.NodePortRedirector = (*Backend)(nil)

// SyncNodePorts DNATs the host's connections to any of its addresses
// (loopback excepted: the kernel would not route the result) on a node
// port to s.Target on that port, and masquerades them: the source the
// host chose for its own address is its node IP, to which an endpoint on
// another node would answer straight through the fabric, past the bridge's
// conntrack; the gateway's address brings the answer back through the
// bridge. It also masquerades what the host forwards from s.Forwarded
// (service connections to another node's hostNetwork endpoint, which the
// bridge hands the host). One iptables-restore transaction rebuilds both
// chains and ensures their jumps (nat OUTPUT, nat POSTROUTING) once.
func (b *Backend) SyncNodePorts(ctx context.Context, s platform.NodePortState) error {
	if err := s.Validate(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	saved, err := b.host.run(ctx, nil, familyV4.save, "-t", "nat")
	if err != nil {
		return err
	}
	input := nodePortsInput(s, string(saved))
	if _, err := b.host.run(ctx, []byte(input), familyV4.restore, "--noflush", "-w", "5"); err != nil {
		return fmt.Errorf("node ports: %w\ninput:\n%s", err, input)
	}
	if err := b.flushNewUDPHostPorts(s.HostPorts); err != nil {
		// The mapping is in place; stale entries only delay it for a
		// client that keeps its port, until they time out.
		b.log.Warn("stale conntrack entries of UDP host ports not deleted; retried at the next sync", "err", err)
	}
	return nil
}

// flushNewUDPHostPorts deletes the host's conntrack entries of each UDP
// host port that was not there at the last sync: a client that sent to the
// address and port before (answered with port unreachable) and keeps its
// source port would stay on that entry, which the nat table never sees,
// until it times out (kube's portmap plugin does the same). TCP needs
// nothing: a new connection is a new entry. b.mu held.
func (b *Backend) flushNewUDPHostPorts(hps []platform.HostPort) error {
	now := map[platform.HostPort]bool{}
	var errs []error
	for _, h := range hps {
		if h.Protocol != 17 {
			continue
		}
		now[h] = true
		if b.udpHostPorts[h] {
			continue
		}
		f := &netlink.ConntrackFilter{}
		err := f.AddProtocol(17)
		if err == nil {
			err = f.AddPort(netlink.ConntrackOrigDstPort, h.Port)
		}
		if err == nil && h.HostIP.IsValid() {
			err = f.AddIP(netlink.ConntrackOrigDstIP, h.HostIP.AsSlice())
		}
		if err == nil {
			_, err = b.host.nl.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, f)
		}
		if err != nil {
			delete(now, h) // tried again at the next sync
			errs = append(errs, fmt.Errorf("host port %s: flush conntrack: %w", h, err))
		}
	}
	b.udpHostPorts = now
	return errors.Join(errs...)
}

// nodePortsInput is the iptables-restore --noflush input for s.
func nodePortsInput(s platform.NodePortState, saved string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*nat\n:%s - [0:0]\n", ChainNodePorts)
	for _, p := range s.Ports {
		proto := map[uint8]string{6: "tcp", 17: "udp", 132: "sctp"}[p.Protocol]
		fmt.Fprintf(&b, "-A %s -p %s ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -m %s --dport %d -m comment --comment \"seine: node port %s\" -j DNAT --to-destination %s:%d\n",
			ChainNodePorts, proto, proto, p.Port, p, s.Target, p.Port)
	}
	fmt.Fprintf(&b, ":%s - [0:0]\n", ChainNodePortsMasq)
	if len(s.Ports) > 0 {
		fmt.Fprintf(&b, "-A %s -d %s/32 -m comment --comment \"seine: node ports\" -j MASQUERADE\n", ChainNodePortsMasq, s.Target)
	}
	if s.Forwarded.IsValid() {
		fmt.Fprintf(&b, "-A %s -s %s/32 -m comment --comment \"seine: service connections to hostNetwork endpoints on other nodes\" -j MASQUERADE\n", ChainNodePortsMasq, s.Forwarded)
	}
	hostPortsInput(&b, s.HostPorts)
	for _, j := range []jump{nodePortsJump, nodePortsMasqJump, hostPortsOutputJump, hostPortsPreroutingJump} {
		for _, r := range jumpFix(saved, j) {
			b.WriteString(r + "\n")
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// hostPortsInput writes the host ports' chain: each DNATs its address (a
// hostIP, or any local one) and port to the pod, whether the host
// originates the connection (OUTPUT) or receives it (PREROUTING: a routed
// host's uplink; a bridged uplink's reach the bridge first). What the host
// originates is also masqueraded on its way to the pod (the MASQ chain):
// a connection from 127.0.0.1 could not leave the host otherwise (the
// gateway has route_localnet for the route lookup of such a packet), and
// the gateway's address is the node's own source, which NetworkPolicy lets
// through.
func hostPortsInput(b *strings.Builder, hps []platform.HostPort) {
	fmt.Fprintf(b, ":%s - [0:0]\n", ChainHostPorts)
	for _, h := range hps {
		proto := map[uint8]string{6: "tcp", 17: "udp", 132: "sctp"}[h.Protocol]
		dst := "-m addrtype --dst-type LOCAL"
		if h.HostIP.IsValid() {
			dst = "-d " + h.HostIP.String() + "/32"
		}
		fmt.Fprintf(b, "-A %s -p %s %s -m %s --dport %d -m comment --comment \"seine: host port %s\" -j DNAT --to-destination %s\n",
			ChainHostPorts, proto, dst, proto, h.Port, h, netip.AddrPortFrom(h.PodIP, h.PodPort))
		fmt.Fprintf(b, "-A %s -p %s -d %s/32 -m %s --dport %d -m addrtype --src-type LOCAL -m conntrack --ctstate DNAT --ctorigdstport %d -m comment --comment \"seine: host port %s\" -j MASQUERADE\n",
			ChainNodePortsMasq, proto, h.PodIP, proto, h.PodPort, h.Port, h)
	}
}
