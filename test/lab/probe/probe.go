// Package probe runs the lab's stand-in for pod workloads: listeners inside a pod's
// network namespace that answer every TCP connection and UDP datagram with the pod's
// name, and a client that tells an answer, a refusal and silence apart, which is what
// connectivity and NetworkPolicy tests assert.
package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/seine-cni/seine/test/lab/netns"
)

var (
	// ErrTimeout means no answer came back in time: the traffic was dropped somewhere.
	ErrTimeout = errors.New("probe timed out")
	// ErrRefused means the peer or the path actively refused: a TCP RST or an ICMP
	// port/host/network unreachable.
	ErrRefused = errors.New("probe refused")
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

// Probe connects to addr ("ip:port") with proto ("tcp", "udp" or "sctp", any case) from
// inside the network namespace at netnsPath ("" = the caller's) and returns the reply
// without its trailing newline. Errors wrap ErrTimeout when nothing answered within
// timeout, ErrRefused on a reset or an ICMP unreachable, and are anything else otherwise
// (bad arguments, ctx cancelled, no such namespace).
//
// A UDP probe sends its datagram up to three times within timeout, so one datagram lost
// while a path warms up (ARP, a tunnel's next hop) does not read as a drop.
func Probe(ctx context.Context, netnsPath, proto, addr string, timeout time.Duration) (reply string, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err = netns.Do(netnsPath, func() error {
		var err error
		switch strings.ToLower(proto) {
		case "tcp":
			reply, err = probeTCP(ctx, addr)
		case "udp":
			reply, err = probeUDP(ctx, addr)
		case "sctp":
			reply, err = probeSCTP(ctx, addr)
		default:
			return fmt.Errorf("unknown protocol %q", proto)
		}
		return err
	})
	if err != nil {
		return "", fmt.Errorf("probe %s %s: %w", proto, addr, classify(ctx, err))
	}
	return reply, nil
}

func probeTCP(ctx context.Context, addr string) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetReadDeadline(dl)
	}
	b, err := io.ReadAll(io.LimitReader(conn, 64<<10))
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(string(b), "\n"), nil
}

func probeUDP(ctx context.Context, addr string) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	interval := time.Until(deadline) / 3
	buf := make([]byte, 64<<10)
	for {
		if _, err := conn.Write([]byte("probe\n")); err != nil {
			return "", err
		}
		next := time.Now().Add(interval)
		if next.After(deadline) {
			next = deadline
		}
		_ = conn.SetReadDeadline(next)
		n, err := conn.Read(buf)
		if err == nil {
			return string(buf[:n]), nil
		}
		if !isTimeout(err) || !time.Now().Before(deadline) {
			return "", err // refused, or silent until the end: classify tells which
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// classify wraps err with ErrTimeout or ErrRefused where it means one of them.
func classify(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, ErrTimeout), errors.Is(err, ErrRefused):
		return err
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return fmt.Errorf("%w: %w", ErrRefused, err)
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err), errors.Is(err, syscall.ETIMEDOUT):
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	case errors.Is(err, context.Canceled):
		return err
	}
	if ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	return err
}
