package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// sctpSocket opens a one-to-one style SCTP socket, mapping "no SCTP in this kernel" to
// ErrSCTPUnsupported.
func sctpSocket(family int) (int, error) {
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
	if err != nil {
		if errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.ESOCKTNOSUPPORT) || errors.Is(err, unix.EAFNOSUPPORT) {
			return -1, fmt.Errorf("%w: %w", ErrSCTPUnsupported, err)
		}
		return -1, fmt.Errorf("sctp socket: %w", err)
	}
	return fd, nil
}

// listenSCTP listens on 0.0.0.0:port. The socket is handed to the net package as a
// stream listener, so Accept, Close and deadlines work through the runtime poller.
func listenSCTP(port int32) (net.Listener, error) {
	fd, err := sctpSocket(unix.AF_INET)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("sctp:%d", port))
	defer f.Close() // net.FileListener holds its own duplicate
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return nil, fmt.Errorf("sctp setsockopt: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(port)}); err != nil {
		return nil, fmt.Errorf("sctp bind: %w", err)
	}
	if err := unix.Listen(fd, 128); err != nil {
		return nil, fmt.Errorf("sctp listen: %w", err)
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("sctp listener: %w", err)
	}
	return ln, nil
}

// probeSCTP connects, waits for the reply and reads it, all with poll(2) on the calling
// (namespace-locked) thread.
func probeSCTP(ctx context.Context, addr string) (string, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return "", err
	}
	family, sa := unix.AF_INET, unix.Sockaddr(nil)
	if ip := ap.Addr().Unmap(); ip.Is4() {
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ip.As4()}
	} else {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ip.As16()}
	}
	fd, err := sctpSocket(family)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)

	if err := unix.Connect(fd, sa); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		return "", err
	}
	if err := pollFD(ctx, fd, unix.POLLOUT); err != nil {
		return "", err
	}
	if soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil {
		return "", err
	} else if soErr != 0 {
		return "", unix.Errno(soErr)
	}
	var reply []byte
	buf := make([]byte, 4096)
	for {
		if err := pollFD(ctx, fd, unix.POLLIN); err != nil {
			return "", err
		}
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return "", err
		}
		if n == 0 {
			return strings.TrimSuffix(string(reply), "\n"), nil
		}
		reply = append(reply, buf[:n]...)
		if strings.HasSuffix(string(reply), "\n") {
			return strings.TrimSuffix(string(reply), "\n"), nil
		}
	}
}

// pollFD waits until fd has events or ctx's deadline passes.
func pollFD(ctx context.Context, fd int, events int16) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		wait := 100 * time.Millisecond // wake up now and then to notice cancellation
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			wait = time.Until(dl)
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: events}}
		n, err := unix.Poll(fds, int(wait.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
	}
}
