package appctl

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"

	"github.com/seine-cni/seine/ovs/internal/winpipe"
)

// DialPipe is the DialFunc for OVS for Windows, which serves each unixctl
// socket as a named pipe. path is the socket path as ovs-appctl names it
// (`C:\openvswitch\var\run\openvswitch\ovs-vswitchd.ctl`, see PipeCtlPath),
// dialled as the pipe OVS derives from it, or a pipe name (`\\.\pipe\...`,
// optionally as "winpipe:" or "npipe:").
func DialPipe(ctx context.Context, path string) (net.Conn, error) {
	name, err := pipeName(path)
	if err != nil {
		return nil, err
	}
	return winpipe.Dial(ctx, name)
}

func pipeName(path string) (string, error) {
	if strings.HasPrefix(path, `\\`) || strings.HasPrefix(path, "//") {
		return winpipe.Name(path)
	}
	if name, ok, err := winpipe.Resolve(path); ok {
		return name, err
	}
	if path == "" {
		return "", fmt.Errorf("empty unixctl path")
	}
	return winpipe.NameForPath("", path), nil
}

// PipeCtlPath resolves an ovs-appctl style target on Windows, where daemons
// name their unixctl socket without a pid: a target containing ':' is a path
// used as is; a program name ("ovs-vswitchd") gives <rundir>\<name>.ctl. An
// empty rundir means OVS's default, C:\openvswitch\var\run\openvswitch.
func PipeCtlPath(rundir, target string) string {
	if strings.Contains(target, ":") {
		return target
	}
	if rundir == "" {
		rundir = winpipe.DefaultRundir
	}
	return filepath.Join(rundir, target+".ctl")
}

// DialPipeTarget connects to target (see PipeCtlPath) in rundir over its pipe.
func DialPipeTarget(ctx context.Context, rundir, target string) (*Client, error) {
	return DialWith(ctx, PipeCtlPath(rundir, target), DialPipe)
}
