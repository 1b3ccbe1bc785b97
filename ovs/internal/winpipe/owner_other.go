//go:build !windows

package winpipe

import (
	"errors"
	"fmt"
	"net"
)

// OwnProcess refuses every connection: telling who made one needs Windows'
// TCP table here (the relay serves OVS for Windows' pipes). The error wraps
// errors.ErrUnsupported.
func OwnProcess(c net.Conn) error {
	_, err := PeerPID(c)
	return err
}

// PeerPID fails: the owner of a connection is read from Windows' TCP table.
func PeerPID(c net.Conn) (uint32, error) {
	return 0, fmt.Errorf("peer of %s: %w", c.RemoteAddr(), errors.ErrUnsupported)
}
