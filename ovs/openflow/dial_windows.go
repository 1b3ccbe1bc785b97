package openflow

import (
	"context"
	"fmt"
	"net"

	"github.com/seine-cni/seine/ovs/internal/winpipe"
)

// PipeDialer is the Dialer for OVS for Windows, which serves a bridge's
// management socket as a named pipe. It understands "winpipe:<name>" (or
// "npipe:<name>"), a pipe such as `\\.\pipe\C:openvswitchvarrunopenvswitchbr-int.mgmt`;
// "unix:<path>", the socket path as OVS's tools take it
// (`unix:C:\openvswitch\var\run\openvswitch\br-int.mgmt`, or a path relative
// to the default rundir), dialled as the pipe OVS derives from it; and
// "tcp:<host>:<port>", as DefaultDialer.
func PipeDialer(ctx context.Context, addr string) (net.Conn, error) {
	name, ok, err := winpipe.Resolve(addr)
	if err != nil {
		return nil, fmt.Errorf("openflow: %w", err)
	}
	if !ok {
		return DefaultDialer(ctx, addr)
	}
	return winpipe.Dial(ctx, name)
}
