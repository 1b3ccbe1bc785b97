// Package probe runs the lab's stand-in for pod workloads: listeners inside a pod's
// network namespace that answer every TCP connection and UDP datagram with the pod's
// name, and a client that tells an answer, a refusal and silence apart, which is what
// connectivity and NetworkPolicy tests assert.
package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/seine-cni/seine/test/lab/netns"
)

// What a probe that got no answer saw. Only ErrTimeout means "dropped": every other
// failure (and any error that wraps none of these: a bad argument, a namespace that
// cannot be entered, a cancelled context) says the probe could not tell.
var (
	// ErrTimeout means the probe's packets left (its next hop was resolved) and nothing
	// came back within the timeout, counted from the first packet: a drop somewhere
	// after the sender.
	ErrTimeout = errors.New("probe timed out")
	// ErrRefused means the peer refused: a TCP RST or an ICMP port unreachable.
	ErrRefused = errors.New("probe refused")
	// ErrUnreachable means the packets never got anywhere: no route, an ICMP host or
	// network unreachable, or a next hop that never answered ARP.
	ErrUnreachable = errors.New("probe destination unreachable")
	// ErrNoReply means a TCP or SCTP connection was established but the listener sent
	// no reply in time (a hung listener, not a drop).
	ErrNoReply = errors.New("probe connected but got no reply")
	// ErrSCTPUnsupported means the kernel has no SCTP support.
	ErrSCTPUnsupported = errors.New("sctp is not supported by this kernel")
)

// Serve starts one listener per distinct (protocol, port) in ports, inside the network
// namespace at netnsPath ("" = the caller's). Every TCP or SCTP connection gets podName
// and "\n" and is closed; every UDP datagram is answered with podName.
//
// Serve starts every port it can: the error joins the failures of the others (an SCTP
// port on a kernel without SCTP fails with an error wrapping ErrSCTPUnsupported). stop is
// never nil; it closes all listeners, waits for their goroutines and may be called more
// than once. Cancelling ctx stops them too.
func Serve(ctx context.Context, netnsPath, podName string, ports []corev1.ContainerPort) (stop func(), err error) {
	s := &server{reply: []byte(podName), line: []byte(podName + "\n")}
	ctx, cancel := context.WithCancel(ctx)
	var errs []error
	nsErr := netns.Do(netnsPath, func() error {
		seen := map[string]bool{}
		for _, p := range ports {
			proto := p.Protocol
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			key := fmt.Sprintf("%s/%d", proto, p.ContainerPort)
			if seen[key] {
				continue
			}
			seen[key] = true
			if err := s.listen(proto, p.ContainerPort); err != nil {
				errs = append(errs, fmt.Errorf("listen %s: %w", key, err))
			}
		}
		return nil
	})
	if nsErr != nil {
		errs = append(errs, nsErr)
	}
	s.start(ctx)
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			s.close()
			s.wg.Wait()
		})
	}
	return stop, errors.Join(errs...)
}

type server struct {
	reply   []byte // UDP answer
	line    []byte // TCP/SCTP answer: reply and a newline
	streams []net.Listener
	packets []net.PacketConn
	wg      sync.WaitGroup
}

func (s *server) listen(proto corev1.Protocol, port int32) error {
	addr := fmt.Sprintf(":%d", port)
	switch proto {
	case corev1.ProtocolTCP:
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		s.streams = append(s.streams, ln)
	case corev1.ProtocolUDP:
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return err
		}
		s.packets = append(s.packets, pc)
	case corev1.ProtocolSCTP:
		ln, err := listenSCTP(port)
		if err != nil {
			return err
		}
		s.streams = append(s.streams, ln)
	default:
		return fmt.Errorf("unknown protocol %q", proto)
	}
	return nil
}

func (s *server) start(ctx context.Context) {
	for _, ln := range s.streams {
		s.wg.Add(1)
		go s.serveStream(ln)
	}
	for _, pc := range s.packets {
		s.wg.Add(1)
		go s.servePackets(pc)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		<-ctx.Done()
		s.close()
	}()
}

func (s *server) close() {
	for _, ln := range s.streams {
		_ = ln.Close()
	}
	for _, pc := range s.packets {
		_ = pc.Close()
	}
}

func (s *server) serveStream(ln net.Listener) {
	defer s.wg.Done()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // a connection reset before accept; keep serving
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, _ = conn.Write(s.line)
			_ = conn.Close()
		}()
	}
}

func (s *server) servePackets(pc net.PacketConn) {
	defer s.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		_, from, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // e.g. ECONNREFUSED queued by an ICMP error for an earlier reply
		}
		_, _ = pc.WriteTo(s.reply, from)
	}
}

// Sent is how many packets a probe that timed out (ErrTimeout) had sent when it gave
// up: its UDP datagrams (three, fewer when the prober's thread was starved past its
// deadline), or 1 for the connection request of TCP or SCTP (the kernel's own
// retransmissions are not counted). It is 0 for any other error.
func Sent(err error) int {
	var t *timeoutError
	if errors.As(err, &t) {
		return t.sent
	}
	return 0
}

// timeoutError is a timeout with the number of packets that went unanswered.
type timeoutError struct {
	sent int
	err  error
}

func (e *timeoutError) Error() string { return e.err.Error() }
func (e *timeoutError) Unwrap() error { return e.err }

// Probe connects to addr ("ip:port") with proto ("tcp", "udp" or "sctp", any case) from
// inside the network namespace at netnsPath ("" = the caller's) and returns the reply
// without its trailing newline.
//
// timeout counts from the moment the first packet left, not from the call: a probe
// that could not even start before a deadline (a starved CPU) never reads as a drop.
// A UDP probe sends its datagram up to three times within timeout, so one datagram lost
// while a path warms up (ARP, a tunnel's next hop) does not read as a drop.
//
// Errors wrap ErrTimeout only when the packets left through a resolved next hop and
// nothing came back in time; ErrRefused on a reset or an ICMP port unreachable;
// ErrUnreachable on no route, an ICMP host/network unreachable or an unanswered ARP;
// ErrNoReply when a connection was made but nothing was said. Anything else (bad
// arguments, ctx cancelled or past its deadline, no such namespace) wraps none of them.
func Probe(ctx context.Context, netnsPath, proto, addr string, timeout time.Duration) (reply string, err error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("probe %s %s: not started: %w", proto, addr, err)
	}
	err = netns.Do(netnsPath, func() error {
		var err error
		reply, err = dial(ctx, proto, addr, timeout)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("probe %s %s: %w", proto, addr, classify(err))
	}
	return reply, nil
}
