package agent

import (
	"github.com/seine-cni/seine/ovs/appctl"
	"github.com/seine-cni/seine/ovs/openflow"
)

// ofDialer: OVS for Windows serves <rundir>\<bridge>.mgmt as a named pipe.
var ofDialer openflow.Dialer = openflow.PipeDialer

// appctlDialTarget: OVS for Windows serves its unixctl servers as named
// pipes.
var appctlDialTarget = appctl.DialPipeTarget
