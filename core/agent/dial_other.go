//go:build !windows

package agent

import (
	"github.com/seine-cni/seine/ovs/appctl"
	"github.com/seine-cni/seine/ovs/openflow"
)

// ofDialer: elsewhere the bridge's management socket is a unix socket.
var ofDialer openflow.Dialer = openflow.DefaultDialer

// appctlDialTarget: ovs-vswitchd's unixctl server is a unix socket.
var appctlDialTarget = appctl.DialTarget
