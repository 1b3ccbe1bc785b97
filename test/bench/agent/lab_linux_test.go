package agentbench

import (
	"os"
	"testing"

	"k8s.io/client-go/kubernetes"

	"github.com/seine-cni/seine/test/lab"
	"github.com/seine-cni/seine/test/lab/labtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	labtest.RemoveBinaries()
	os.Exit(code)
}

// upLab brings up an n-node lab with seine-agent (encap, geneve) and takes it
// down in b's cleanup. It skips with the precise reason when it cannot run.
func upLab(b *testing.B, nodes int) (*lab.Config, kubernetes.Interface) {
	b.Helper()
	return labtest.Up(b, labtest.Options{Name: "bench-agent", Nodes: nodes, APIPort: 30443, EtcdPort: 30379})
}
