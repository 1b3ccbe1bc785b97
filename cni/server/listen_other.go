//go:build !linux

package server

import (
	"fmt"
	"net"
)

// listen binds the socket at path. Outside Linux the socket file's mode
// means nothing (on Windows an AF_UNIX socket is guarded by the ACL of its
// directory, C:\ProgramData\seine, which the installer restricts to SYSTEM
// and Administrators).
func listen(path string) (*net.UnixListener, error) {
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	l.SetUnlinkOnClose(false) // the server removes path itself
	return l, nil
}
