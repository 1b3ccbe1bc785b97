package plugin

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/seine-cni/seine/cni"
)

// TestDelWhileUninstalled: a DEL with no agent is spooled while the plugin
// is installed, and not kept once it is not (seinectl node-cleanup removes
// the plugin, then the spool: CI's make test of 9348516 found a DEL
// spooled on a real node after the uninstall, a dead sandbox's, torn down
// again by the kubelet). What the write made goes with it; another DEL
// already spooled stays for node-cleanup.
func TestDelWhileUninstalled(t *testing.T) {
	dir, err := os.MkdirTemp("", "seine-cni-") // a unix socket path fits in 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	run := filepath.Join(dir, "run")
	socket := filepath.Join(run, "cni.sock")
	del := func(installed bool, container string) error {
		p := &Plugin{Installed: func() bool { return installed }}
		return p.cmdDel(&skel.CmdArgs{
			ContainerID: container, IfName: "eth0", Args: "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web",
			StdinData: fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"seine-net","type":"seine","socketPath":%q,"requestTimeout":"5s"}`, socket),
		})
	}

	if err := del(false, "c1"); err != nil {
		t.Fatalf("DEL while uninstalled: %v", err)
	}
	if _, err := os.Stat(run); !os.IsNotExist(err) {
		t.Errorf("DEL while uninstalled left %s (%v)", run, err)
	}

	if err := del(true, "c2"); err != nil {
		t.Fatalf("DEL while installed: %v", err)
	}
	pending, err := cni.ReadPendingDels(cni.PendingDelDir(socket))
	if err != nil || len(pending) != 1 || pending[0].Request.ContainerID != "c2" {
		t.Fatalf("spooled DELs while installed: %+v %v, want c2's", pending, err)
	}

	if err := del(false, "c3"); err != nil {
		t.Fatalf("DEL while uninstalled: %v", err)
	}
	pending, err = cni.ReadPendingDels(cni.PendingDelDir(socket))
	if err != nil || len(pending) != 1 || pending[0].Request.ContainerID != "c2" {
		t.Errorf("spooled DELs after one while uninstalled: %+v %v, want c2's only", pending, err)
	}
}
