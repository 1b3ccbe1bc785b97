package proxier

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/seine-cni/seine/core/internal/inet"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
)

// HandlePacketIn takes the packet-ins of the OpenFlow connection. Rejected
// connections (a Service port without endpoints) are queued for
// answerRejects: the connection's reader must never wait on the switch.
// It reports whether the packet-in was the proxy's.
func (c *Controller) HandlePacketIn(pi *openflow.PacketIn) bool {
	if len(pi.Userdata) == 0 || pi.Userdata[0] != pipeline.PacketInReject {
		return false
	}
	select {
	case c.rejects <- pi:
	default: // a burst beyond the meter's: let the client retry
	}
	return true
}

// answerRejects answers every queued rejected connection from the
// frontend it was sent to: a TCP RST, or an ICMP port unreachable.
func (c *Controller) answerRejects(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case pi := <-c.rejects:
			reply, err := RejectReply(pi.Packet)
			if err != nil {
				c.log.Debug("not answering a rejected packet", "err", err)
				continue
			}
			out := openflow.NewPacketOut(openflow.PortController, reply, openflow.NewActions().Output(pi.InPort()))
			err = c.node.Install(ctx, func(w Writer, _ *pipeline.NodeConfig, _ pipeline.Round) error {
				return w.Apply(ctx, out)
			})
			if err != nil && ctx.Err() == nil {
				c.log.Warn("answering a rejected connection", "err", err)
			}
			if m := c.cfg.Metrics; m != nil {
				m.Rejected.Inc()
			}
		}
	}
}

// errNoReply: the packet gets no answer (not IPv4, a fragment, a TCP
// segment without SYN, an ICMP error).
var errNoReply = errors.New("packet needs no reject")

// RejectReply builds the answer to the Ethernet frame p, which started a
// connection to a Service port without endpoints, as if the frontend
// refused it: a TCP SYN gets RST+ACK from the frontend's address and port,
// anything else (UDP, SCTP) an ICMP port unreachable from the frontend's
// address quoting the packet, as a host with nothing listening answers.
// The MACs are swapped: the frame goes back out of the port it came in on.
func RejectReply(p []byte) ([]byte, error) {
	if len(p) < 14+20 || binary.BigEndian.Uint16(p[12:]) != 0x0800 {
		return nil, fmt.Errorf("not an IPv4 frame: %w", errNoReply)
	}
	ip := p[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ihl < 20 || len(ip) < ihl {
		return nil, fmt.Errorf("bad IPv4 header: %w", errNoReply)
	}
	if binary.BigEndian.Uint16(ip[6:])&0x1fff != 0 {
		return nil, fmt.Errorf("a fragment: %w", errNoReply)
	}
	total := int(binary.BigEndian.Uint16(ip[2:]))
	if total < ihl || total > len(ip) {
		total = len(ip)
	}
	l4 := ip[ihl:total]
	eth := make([]byte, 14)
	copy(eth[0:6], p[6:12])
	copy(eth[6:12], p[0:6])
	eth[12], eth[13] = 0x08, 0x00
	src, dst := ip[12:16], ip[16:20]
	switch proto := ip[9]; proto {
	case 6:
		if len(l4) < 20 {
			return nil, fmt.Errorf("short TCP header: %w", errNoReply)
		}
		flags := l4[13]
		if flags&0x04 != 0 || flags&0x02 == 0 {
			return nil, fmt.Errorf("TCP without SYN: %w", errNoReply)
		}
		seq := binary.BigEndian.Uint32(l4[4:])
		dataOff := int(l4[12]>>4) * 4
		payload := max(len(l4)-dataOff, 0)
		tcp := make([]byte, 20)
		copy(tcp[0:2], l4[2:4]) // from the frontend's port
		copy(tcp[2:4], l4[0:2])
		binary.BigEndian.PutUint32(tcp[8:], seq+1+uint32(payload))
		tcp[12] = 5 << 4
		tcp[13] = 0x14 // RST, ACK
		out := append(eth, ipv4Header(dst, src, 6, len(tcp))...)
		binary.BigEndian.PutUint16(tcp[16:], inet.L4Checksum(dst, src, 6, tcp))
		return append(out, tcp...), nil
	case 1:
		return nil, fmt.Errorf("ICMP: %w", errNoReply)
	default:
		quote := ip[:min(total, ihl+8)]
		icmp := make([]byte, 8+len(quote))
		icmp[0], icmp[1] = 3, 3 // destination unreachable, port unreachable
		copy(icmp[8:], quote)
		binary.BigEndian.PutUint16(icmp[2:], inet.Checksum(icmp, 0))
		out := append(eth, ipv4Header(dst, src, 1, len(icmp))...)
		return append(out, icmp...), nil
	}
}

// ipv4Header is a 20-byte IPv4 header from src to dst.
func ipv4Header(src, dst []byte, proto uint8, payload int) []byte {
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+payload))
	binary.BigEndian.PutUint16(h[6:], 0x4000) // don't fragment
	h[8] = 64
	h[9] = proto
	copy(h[12:16], src)
	copy(h[16:20], dst)
	binary.BigEndian.PutUint16(h[10:], inet.Checksum(h, 0))
	return h
}
