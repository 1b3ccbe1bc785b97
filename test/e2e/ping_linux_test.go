package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// pinger sends ICMP echo requests from inside a network namespace (the
// machine has no ping binary): a raw socket opened in the namespace stays
// there, so only its creation needs the namespace's thread.
type pinger struct {
	conn *net.IPConn
	id   int
	seq  int
}

// newPinger opens a raw ICMP socket in netns with the don't-fragment bit set
// on everything it sends (IP_PMTUDISC_DO), as `ping -M do` does.
func newPinger(netns string) (*pinger, error) {
	var conn *net.IPConn
	err := ns.WithNetNSPath(netns, func(ns.NetNS) error {
		pc, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
		if err == nil {
			conn = pc.(*net.IPConn)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("icmp socket in %s: %w", netns, err)
	}
	raw, err := conn.SyscallConn()
	if err == nil {
		var serr error
		err = raw.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
		})
		err = errors.Join(err, serr)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("set don't-fragment: %w", err)
	}
	return &pinger{conn: conn, id: os.Getpid() & 0xffff}, nil
}

func (p *pinger) Close() error { return p.conn.Close() }

// ping sends one echo request with size bytes of ICMP payload and waits for
// the reply. A local refusal (EMSGSIZE) is returned as is.
func (p *pinger) ping(ctx context.Context, dst netip.Addr, size int, timeout time.Duration) error {
	p.seq++
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: p.id, Seq: p.seq, Data: make([]byte, size)}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return err
	}
	if _, err := p.conn.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := p.conn.SetReadDeadline(deadline); err != nil {
		return err
	}
	buf := make([]byte, 65536)
	for {
		n, from, err := p.conn.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("no echo reply from %s: %w", dst, err)
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil {
			continue
		}
		switch body := m.Body.(type) {
		case *icmp.Echo:
			if m.Type == ipv4.ICMPTypeEchoReply && body.ID == p.id && body.Seq == p.seq && from.String() == dst.String() {
				if len(body.Data) != size {
					return fmt.Errorf("echo reply from %s with %d bytes, sent %d", dst, len(body.Data), size)
				}
				return nil
			}
		case *icmp.DstUnreach:
			return fmt.Errorf("destination unreachable (code %d) from %s", m.Code, from)
		}
	}
}

// pingOnce pings dst from netns once (2s timeout).
func pingOnce(ctx context.Context, netns string, dst netip.Addr) error {
	return pingWithin(ctx, netns, dst, 2*time.Second)
}

// pingWithin pings dst from netns once.
func pingWithin(ctx context.Context, netns string, dst netip.Addr, timeout time.Duration) error {
	p, err := newPinger(netns)
	if err != nil {
		return err
	}
	defer p.Close()
	return p.ping(ctx, dst, 56, timeout)
}

// repliesWithin sends one echo request to dst and counts the matching
// replies that arrive within wait: one is right, more means a path answered
// or forwarded the packet twice.
func (p *pinger) repliesWithin(dst netip.Addr, wait time.Duration) (int, error) {
	p.seq++
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: p.id, Seq: p.seq, Data: make([]byte, 56)}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return 0, err
	}
	if _, err := p.conn.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return 0, err
	}
	if err := p.conn.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return 0, err
	}
	buf := make([]byte, 65536)
	n := 0
	for {
		size, from, err := p.conn.ReadFrom(buf)
		if err != nil {
			return n, nil // the deadline ends the count
		}
		m, err := icmp.ParseMessage(1, buf[:size])
		if err != nil {
			continue
		}
		if body, ok := m.Body.(*icmp.Echo); ok && m.Type == ipv4.ICMPTypeEchoReply &&
			body.ID == p.id && body.Seq == p.seq && from.String() == dst.String() {
			n++
		}
	}
}
