package server

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// listen binds the socket at path with mode 0600 and never exposes it with
// wider permissions: it is bound inside a fresh 0700 directory, chmod'ed,
// and only then renamed into place. (Changing the umask instead would race
// with every other goroutine of the agent that creates files.)
func listen(path string) (*net.UnixListener, error) {
	private, err := os.MkdirTemp(filepath.Dir(path), ".cni-sock-*")
	if err != nil {
		return nil, fmt.Errorf("create socket: %w", err)
	}
	defer os.RemoveAll(private)
	tmp := filepath.Join(private, "sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	l.SetUnlinkOnClose(false) // the server removes path itself
	if err := os.Chmod(tmp, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		l.Close()
		return nil, fmt.Errorf("move socket into place at %s: %w", path, err)
	}
	return l, nil
}
