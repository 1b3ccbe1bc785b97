package dataplanebench

import (
	"os"
	"testing"

	"k8s.io/client-go/kubernetes"

	"github.com/seine-cni/seine/test/ci"
	"github.com/seine-cni/seine/test/lab"
	"github.com/seine-cni/seine/test/lab/labtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	labtest.RemoveBinaries()
	os.Exit(code)
}

// upLab brings up an n-node lab with seine-agent and takes it down in b's
// cleanup. It skips with the precise reason when it cannot run. The traffic
// mode is encap with geneve unless SEINE_BENCH_TRAFFIC_MODE (encap, noEncap)
// and SEINE_BENCH_TUNNEL_TYPE (geneve, vxlan, gre) say otherwise, to tell the
// tunnel's cost from the pipeline's.
func upLab(b *testing.B, nodes int) (*lab.Config, kubernetes.Interface) {
	b.Helper()
	ci.RequireCommands(b, "iperf3", "ethtool")
	return labtest.Up(b, labtest.Options{Name: "bench-dataplane", Nodes: nodes, APIPort: 31443, EtcdPort: 31379,
		TrafficMode: os.Getenv("SEINE_BENCH_TRAFFIC_MODE"), TunnelType: os.Getenv("SEINE_BENCH_TUNNEL_TYPE")})
}
