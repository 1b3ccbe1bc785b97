package cnibench

import (
	"testing"

	"github.com/containernetworking/cni/libcni"

	"github.com/seine-cni/seine/test/agenttest"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// node is a throwaway node netns with a private OVS (netdev datapath), an
// uplink, and seine-agent (linux backend) run in-process serving CNI; libcni
// drives the real seine-cni binary. Only the API server is a fake clientset.
// This is the setup of services/seine-agent/integration_linux_test.go.
type node struct {
	d      *ovsdaemon.Daemon
	nodeNS string
	cni    *libcni.CNIConfig
	list   *libcni.NetworkConfigList
}

func startNode(b *testing.B) *node {
	b.Helper()
	n := agenttest.Start(b)
	return &node{d: n.OVS, nodeNS: n.NetNS, cni: n.CNI, list: n.Config}
}
