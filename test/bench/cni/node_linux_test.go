package cnibench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

// reference is the baseline: the reference plugins ptp and host-local,
// configured as the lab's --cni ptp mode configures them, with the MTU
// Seine gave its pods (the node's uplink MTU less Geneve's overhead).
type reference struct {
	cni  *libcni.CNIConfig
	list *libcni.NetworkConfigList
}

// startReference finds ptp and host-local in SEINE_LAB_CNI_BIN (make test
// and make bench build them there) or builds them from the lab's plugin
// module (test/lab/cniplugins) into a temporary directory.
func startReference(b *testing.B, mtu int) *reference {
	b.Helper()
	dir := os.Getenv("SEINE_LAB_CNI_BIN")
	if dir == "" {
		dir = buildPlugins(b)
	}
	for _, p := range []string{"ptp", "host-local"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			b.Fatalf("reference CNI plugin %s: %v", p, err)
		}
	}
	conf := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "bench-ptp",
  "plugins": [{
    "type": "ptp", "ipMasq": false, "mtu": %d,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.250.1.0/24"}]],
             "routes": [{"dst": "0.0.0.0/0"}], "dataDir": %q}
  }]
}`, mtu, b.TempDir())
	list, err := libcni.ConfListFromBytes([]byte(conf))
	if err != nil {
		b.Fatal(err)
	}
	return &reference{cni: libcni.NewCNIConfig([]string{dir}, nil), list: list}
}

func buildPlugins(b *testing.B) string {
	b.Helper()
	mod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		b.Fatalf("go env GOMOD: %v", err)
	}
	dir := b.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+"/",
		"github.com/containernetworking/plugins/plugins/main/ptp",
		"github.com/containernetworking/plugins/plugins/ipam/host-local")
	cmd.Dir = filepath.Join(filepath.Dir(strings.TrimSpace(string(mod))), "test", "lab", "cniplugins")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build ptp and host-local: %v\n%s", err, out)
	}
	return dir
}
