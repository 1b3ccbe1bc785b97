package agent

import "github.com/seine-cni/seine/ovs/openflow"

// ofDialer: OVS for Windows serves <rundir>\<bridge>.mgmt as a named pipe.
var ofDialer openflow.Dialer = openflow.PipeDialer
