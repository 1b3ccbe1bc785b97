package probe

import (
	"errors"
	"fmt"
	"net"
	"os"

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
