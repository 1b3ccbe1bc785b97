package ovsdaemon

import (
	"context"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/seine-cni/seine/test/ci"
)

// Programs are the external binaries an instance needs.
var Programs = []string{"ovsdb-server", "ovs-vswitchd", "ovsdb-tool", "ovs-vsctl", "ovs-ofctl", "ovs-appctl", "nsenter"}

// SkipUnlessCanRun skips t with the precise reason when instances cannot run
// here: not Linux (a skip even under CI: a Windows test binary), not root,
// or an OVS binary missing from PATH (failures under CI, see test/ci).
func SkipUnlessCanRun(t testing.TB) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skipf("ovsdaemon: private OVS instances run on Linux only (GOOS=%s)", runtime.GOOS)
	}
	ci.RequireRoot(t, "ovsdaemon: running OVS in a network namespace")
	ci.RequireCommands(t, Programs...)
}

// StartForTest starts a private OVS in its own netns and temp dir, stopped and
// removed in t.Cleanup (with the daemons' log tails logged if t failed).
func StartForTest(t testing.TB) *Daemon {
	t.Helper()
	return StartForTestWith(t, Options{})
}

// StartForTestWith is StartForTest with options; an empty Dir or NetNS is filled
// with a fresh one. Detach is honoured (the daemons are still stopped in Cleanup).
func StartForTestWith(t testing.TB, o Options) *Daemon {
	t.Helper()
	SkipUnlessCanRun(t)
	if o.NetNS == "" {
		o.NetNS = NewNetNS(t)
	}
	if o.Dir == "" {
		// Not t.TempDir(): its paths embed the test name and can push socket
		// paths past the 107-byte limit of sockaddr_un.
		dir, err := os.MkdirTemp("", "ovs")
		if err != nil {
			t.Fatalf("ovsdaemon: %v", err)
		}
		t.Cleanup(func() {
			if err := os.RemoveAll(dir); err != nil {
				t.Errorf("ovsdaemon: %v", err)
			}
		})
		o.Dir = dir
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := Start(ctx, o)
	if err != nil {
		t.Fatalf("ovsdaemon: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("OVS logs of %s:\n%s", d.Dir(), d.LogTail(30))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := d.Stop(ctx); err != nil {
			t.Errorf("ovsdaemon: stop: %v", err)
		}
	})
	return d
}
