package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// dial runs one probe on the calling thread, which is already in the right network
// namespace. Every socket is non-blocking and waited on with poll(2) on this thread, so
// the clock starts when the first packet leaves and a late answer the kernel already
// holds is still read.
func dial(ctx context.Context, proto, addr string, timeout time.Duration) (string, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return "", fmt.Errorf("address %q: %w", addr, err)
	}
	dst := ap.Addr().Unmap()
	family, sa := unix.AF_INET, unix.Sockaddr(nil)
	if dst.Is4() {
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: dst.As4()}
	} else {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: dst.As16()}
	}
	var fd int
	switch strings.ToLower(proto) {
	case "tcp":
		fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	case "udp":
		fd, err = unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	case "sctp":
		fd, err = sctpSocket(family)
	default:
		return "", fmt.Errorf("unknown protocol %q", proto)
	}
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	if strings.EqualFold(proto, "udp") {
		return probeDatagram(ctx, fd, sa, dst, timeout)
	}
	return probeStream(ctx, fd, sa, dst, timeout)
}

// probeStream connects (TCP or SCTP) and reads the reply up to a newline or EOF.
func probeStream(ctx context.Context, fd int, sa unix.Sockaddr, dst netip.Addr, timeout time.Duration) (string, error) {
	err := unix.Connect(fd, sa)
	if err != nil && !errors.Is(err, unix.EINPROGRESS) {
		return "", err
	}
	if err != nil {
		ready, err := waitFD(ctx, fd, unix.POLLOUT, time.Now().Add(timeout))
		if err != nil {
			return "", err
		}
		if !ready {
			return "", silence(dst, 1, fmt.Sprintf("no answer to the connection request within %s", timeout))
		}
		if soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil {
			return "", err
		} else if soErr != 0 {
			return "", unix.Errno(soErr)
		}
	}
	deadline := time.Now().Add(timeout)
	var reply []byte
	buf := make([]byte, 4096)
	for {
		ready, err := waitFD(ctx, fd, unix.POLLIN, deadline)
		if err != nil {
			return "", err
		}
		if !ready {
			return "", fmt.Errorf("%w: connected, then %d bytes and no end of reply within %s", ErrNoReply, len(reply), timeout)
		}
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return "", err
		}
		reply = append(reply, buf[:n]...)
		if n == 0 || strings.HasSuffix(string(reply), "\n") {
			return strings.TrimSuffix(string(reply), "\n"), nil
		}
	}
}

// probeDatagram sends a UDP datagram (again after a third and two thirds of timeout)
// and waits for one answer.
func probeDatagram(ctx context.Context, fd int, sa unix.Sockaddr, dst netip.Addr, timeout time.Duration) (string, error) {
	if err := unix.Connect(fd, sa); err != nil {
		return "", err
	}
	send := func() error {
		_, err := unix.Write(fd, []byte("probe\n"))
		return err
	}
	if err := send(); err != nil {
		return "", err
	}
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 64<<10)
	for sent := 1; ; {
		next := time.Now().Add(timeout / 3)
		if next.After(deadline) {
			next = deadline
		}
		ready, err := waitFD(ctx, fd, unix.POLLIN, next)
		if err != nil {
			return "", err
		}
		if ready {
			n, err := unix.Read(fd, buf)
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return "", err // an ICMP error: classify tells which
			}
			return string(buf[:n]), nil
		}
		if !time.Now().Before(deadline) {
			return "", silence(dst, sent, fmt.Sprintf("no answer to %d datagrams within %s", sent, timeout))
		}
		if err := send(); err != nil {
			return "", err
		}
		sent++
	}
}

// waitFD waits until fd has one of events, ctx ends (its error) or deadline passes
// (false, after one last look: an answer that arrived while this thread was not
// scheduled still counts).
func waitFD(ctx context.Context, fd int, events int16, deadline time.Time) (bool, error) {
	for {
		if err := ctx.Err(); err != nil {
			return false, fmt.Errorf("cut short: %w", err)
		}
		wait := min(time.Until(deadline), 100*time.Millisecond) // wake up now and then to notice ctx
		ms := 0
		if wait > 0 {
			ms = int((wait + time.Millisecond - 1) / time.Millisecond)
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: events}}
		n, err := unix.Poll(fds, ms)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("poll: %w", err)
		}
		if n > 0 {
			return true, nil
		}
		if wait <= 0 {
			return false, nil
		}
	}
}

// silence is the error for a probe nothing answered: ErrTimeout when the packets can
// have left, that is the next hop towards dst is resolved; ErrUnreachable when it never
// answered ARP (the packets waited in the sender's neighbour queue and never left).
// sent is how many packets the probe sent (Sent reads it back from a timeout).
func silence(dst netip.Addr, sent int, what string) error {
	hop, resolved, state, err := nextHop(dst)
	switch {
	case err != nil:
		return fmt.Errorf("%s, and the next hop could not be checked: %w", what, err)
	case !resolved:
		return fmt.Errorf("%w: %s: next hop %s never answered ARP (neighbour %s)", ErrUnreachable, what, hop, state)
	}
	return &timeoutError{sent: sent, err: fmt.Errorf("%w: %s (next hop %s %s)", ErrTimeout, what, hop, state)}
}

// nextHop looks up, in the calling thread's namespace, the next hop towards dst and
// whether its link-layer address is known.
func nextHop(dst netip.Addr) (hop netip.Addr, resolved bool, state string, err error) {
	routes, err := netlink.RouteGet(net.IP(dst.AsSlice()))
	if err != nil {
		return dst, false, "", fmt.Errorf("route to %s: %w", dst, err)
	}
	if len(routes) == 0 {
		return dst, false, "", fmt.Errorf("no route to %s", dst)
	}
	r := routes[0]
	hop = dst
	if gw, ok := netip.AddrFromSlice(r.Gw); ok && r.Gw != nil {
		hop = gw.Unmap()
	}
	link, err := netlink.LinkByIndex(r.LinkIndex)
	if err != nil {
		return hop, false, "", fmt.Errorf("link %d: %w", r.LinkIndex, err)
	}
	if a := link.Attrs(); a.Flags&net.FlagLoopback != 0 || a.RawFlags&unix.IFF_NOARP != 0 {
		return hop, true, "needs no ARP on " + a.Name, nil
	}
	family := netlink.FAMILY_V4
	if hop.Is6() {
		family = netlink.FAMILY_V6
	}
	neighs, err := netlink.NeighList(r.LinkIndex, family)
	if err != nil {
		return hop, false, "", fmt.Errorf("neighbours of %s: %w", link.Attrs().Name, err)
	}
	for _, n := range neighs {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == hop {
			const known = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY | netlink.NUD_PROBE |
				netlink.NUD_PERMANENT | netlink.NUD_NOARP
			return hop, n.State&known != 0, neighState(n.State) + " on " + link.Attrs().Name, nil
		}
	}
	return hop, false, "absent on " + link.Attrs().Name, nil
}

// classify wraps err with the sentinel it means; a probe's own sentinels pass as
// they are, and anything else (context, namespace, argument errors) stays unwrapped.
func classify(err error) error {
	switch {
	case errors.Is(err, ErrTimeout), errors.Is(err, ErrRefused), errors.Is(err, ErrUnreachable),
		errors.Is(err, ErrNoReply), errors.Is(err, ErrSCTPUnsupported):
		return err
	case errors.Is(err, unix.ECONNREFUSED), errors.Is(err, unix.ECONNRESET):
		return fmt.Errorf("%w: %w", ErrRefused, err)
	case errors.Is(err, unix.EHOSTUNREACH), errors.Is(err, unix.ENETUNREACH):
		return fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	return err
}

// neighState names a neighbour state as `ip neigh` does.
func neighState(s int) string {
	var names []string
	for _, st := range []struct {
		bit  int
		name string
	}{
		{netlink.NUD_INCOMPLETE, "INCOMPLETE"}, {netlink.NUD_REACHABLE, "REACHABLE"}, {netlink.NUD_STALE, "STALE"},
		{netlink.NUD_DELAY, "DELAY"}, {netlink.NUD_PROBE, "PROBE"}, {netlink.NUD_FAILED, "FAILED"},
		{netlink.NUD_NOARP, "NOARP"}, {netlink.NUD_PERMANENT, "PERMANENT"},
	} {
		if s&st.bit != 0 {
			names = append(names, st.name)
		}
	}
	if len(names) == 0 {
		return "NONE"
	}
	return strings.Join(names, "|")
}
