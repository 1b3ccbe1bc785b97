package cni

import (
	"path/filepath"
	"runtime"
)

// DefaultSocketPath is where seine-agent serves CNI requests on this OS.
// AF_UNIX works on Linux and on Windows 10 1809 / Server 2019 and later, so
// both use one code path and differ only in the directory.
func DefaultSocketPath() string {
	if runtime.GOOS == "windows" {
		return `C:\ProgramData\seine\cni.sock`
	}
	return "/var/run/seine/cni.sock"
}

// PendingDelDir is where the plugin spools DEL requests while the agent
// behind socketPath is unreachable; the agent replays them when it starts.
// It sits beside the socket, in the root-only directory.
func PendingDelDir(socketPath string) string {
	return filepath.Join(filepath.Dir(socketPath), "pending-del")
}
