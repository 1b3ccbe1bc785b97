package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"
	"unsafe"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// pinger sends ICMP echo requests from inside a network namespace (the
// machine has no ping binary): a raw socket opened in the namespace stays
// there, so only its creation needs the namespace's thread.
//
// A read whose deadline passed still takes what is queued: on a loaded
// machine this process may not run for a while, and a reply that arrived
// before the deadline is not lost because it was read after it. Messages
// carry the time the kernel received them (SO_TIMESTAMPNS) when it stamped
// them, for the record: the kernel turns stamping on lazily (a deferred
// work item), so the first replies of a process may carry their read time.
type pinger struct {
	conn *net.IPConn
	id   int
	seq  int
	buf  []byte
	oob  []byte
}

// echoTimeout is how long a single echo's reply may take: a lost echo is
// never answered; a busy machine only delays it.
const echoTimeout = 5 * time.Second

// newPinger opens a raw ICMP socket in netns with the don't-fragment bit set
// on everything it sends (IP_PMTUDISC_DO), as `ping -M do` does, receive
// timestamps on, and room for seconds of replies.
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
			serr = errors.Join(
				unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO),
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1),
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20))
		})
		err = errors.Join(err, serr)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("set socket options: %w", err)
	}
	return &pinger{conn: conn, id: os.Getpid() & 0xffff, buf: make([]byte, 65536), oob: make([]byte, 128)}, nil
}

func (p *pinger) Close() error { return p.conn.Close() }

// send sends echo request seq with size bytes of payload and returns when
// it left (after the write: a reply cannot be earlier).
func (p *pinger) send(dst netip.Addr, seq, size int) (time.Time, error) {
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: p.id, Seq: seq, Data: make([]byte, size)}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return time.Time{}, err
	}
	if _, err := p.conn.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return time.Time{}, err
	}
	return time.Now(), nil
}

// received is an ICMP message and when the kernel received it (or, not
// stamped, when it was read).
type received struct {
	m    *icmp.Message
	from netip.Addr
	at   time.Time
}

// echoReply returns the echo reply's body if r is p's reply from dst.
func (p *pinger) echoReply(r received, dst netip.Addr) (*icmp.Echo, bool) {
	body, ok := r.m.Body.(*icmp.Echo)
	if !ok || r.m.Type != ipv4.ICMPTypeEchoReply || body.ID != p.id || r.from != dst {
		return nil, false
	}
	return body, true
}

// next returns the next ICMP message, waiting until deadline and then
// taking what is queued. When there is none, ok is false and empty is a
// moment the socket was empty: anything read later arrived after it.
func (p *pinger) next(deadline time.Time) (r received, ok bool, empty time.Time, err error) {
	if err := p.conn.SetReadDeadline(deadline); err != nil {
		return r, false, empty, err
	}
	n, oobn, _, from, err := p.conn.ReadMsgIP(p.buf, p.oob)
	var src netip.Addr
	if err == nil {
		src, _ = netip.AddrFromSlice(from.IP.To4())
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		empty = time.Now()
		n, oobn, src, err = p.readQueued()
		if errors.Is(err, unix.EAGAIN) {
			return r, false, empty, nil
		}
	}
	if err != nil {
		return r, false, empty, err
	}
	r.from, r.at = src, time.Now()
	if cmsgs, err := unix.ParseSocketControlMessage(p.oob[:oobn]); err == nil {
		for _, c := range cmsgs {
			if c.Header.Level == unix.SOL_SOCKET && c.Header.Type == unix.SCM_TIMESTAMPNS && len(c.Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
				ts := *(*unix.Timespec)(unsafe.Pointer(&c.Data[0]))
				r.at = time.Unix(ts.Unix())
			}
		}
	}
	// A raw IPv4 socket hands its reader the IP header.
	body := p.buf[:n]
	if n > 0 && body[0]>>4 == 4 {
		if hl := int(body[0]&0x0f) * 4; hl <= n {
			body = body[hl:]
		}
	}
	if r.m, err = icmp.ParseMessage(1, body); err != nil {
		return p.next(deadline) // not ICMP we can read: skip it
	}
	return r, true, empty, nil
}

// readQueued reads one queued datagram without waiting (EAGAIN when none),
// past the read deadline that made Go's read give up.
func (p *pinger) readQueued() (n, oobn int, from netip.Addr, err error) {
	if err := p.conn.SetReadDeadline(time.Time{}); err != nil {
		return 0, 0, from, err
	}
	raw, err := p.conn.SyscallConn()
	if err != nil {
		return 0, 0, from, err
	}
	var sa unix.Sockaddr
	var rerr error
	if err := raw.Read(func(fd uintptr) bool {
		n, oobn, _, sa, rerr = unix.Recvmsg(int(fd), p.buf, p.oob, unix.MSG_DONTWAIT)
		return true
	}); err != nil {
		return 0, 0, from, err
	}
	if rerr != nil {
		return 0, 0, from, rerr
	}
	if a, ok := sa.(*unix.SockaddrInet4); ok {
		from = netip.AddrFrom4(a.Addr)
	}
	return n, oobn, from, nil
}

// ping sends one echo request with size bytes of ICMP payload and waits for
// the reply, which must have arrived when timeout has passed since the
// request. A local refusal (EMSGSIZE) is returned as is.
func (p *pinger) ping(ctx context.Context, dst netip.Addr, size int, timeout time.Duration) error {
	p.seq++
	sent, err := p.send(dst, p.seq, size)
	if err != nil {
		return err
	}
	deadline := sent.Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	for {
		r, ok, _, err := p.next(deadline)
		if err != nil {
			return fmt.Errorf("no echo reply from %s: %w", dst, err)
		}
		if !ok {
			return fmt.Errorf("no echo reply from %s within %s", dst, timeout)
		}
		if body, ok := p.echoReply(r, dst); ok && body.Seq == p.seq {
			if len(body.Data) != size {
				return fmt.Errorf("echo reply from %s with %d bytes, sent %d", dst, len(body.Data), size)
			}
			return nil
		}
		if _, ok := r.m.Body.(*icmp.DstUnreach); ok {
			return fmt.Errorf("destination unreachable (code %d) from %s", r.m.Code, r.from)
		}
	}
}

// pingOnce pings dst from netns once, waiting echoTimeout for the reply.
func pingOnce(ctx context.Context, netns string, dst netip.Addr) error {
	return pingWithin(ctx, netns, dst, echoTimeout)
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
// replies: the first within echoTimeout, and those that arrive until wait
// after it was read. One is right, more means a path answered or forwarded
// the packet twice.
func (p *pinger) repliesWithin(dst netip.Addr, wait time.Duration) (int, error) {
	p.seq++
	sent, err := p.send(dst, p.seq, 56)
	if err != nil {
		return 0, err
	}
	var first time.Time
	deadline := sent.Add(echoTimeout)
	n := 0
	for {
		r, ok, _, err := p.next(deadline)
		if err != nil {
			return n, err
		}
		if !ok {
			return n, nil // the deadline ends the count
		}
		body, ok := p.echoReply(r, dst)
		if !ok || body.Seq != p.seq {
			continue
		}
		if first.IsZero() {
			first = time.Now()
			deadline = first.Add(wait)
		}
		n++
	}
}
