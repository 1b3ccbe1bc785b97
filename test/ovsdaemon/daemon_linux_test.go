package ovsdaemon

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestDaemonsSurviveThreadExits: netns helpers end OS threads (a goroutine
// that exits while locked to its thread takes the thread with it), and a
// child's parent-death signal follows the thread that forked it, not the
// process. Start is called here from such a thread (never the main one,
// which the runtime parks instead of ending); the daemons must outlive it.
func TestDaemonsSurviveThreadExits(t *testing.T) {
	SkipUnlessCanRun(t)
	ns := NewNetNS(t)
	dir, err := os.MkdirTemp("", "ovs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var d *Daemon
	err = <-inNewThread(func() error {
		var err error
		d, err = Start(testCtx(t), Options{Dir: dir, NetNS: ns})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop(context.Background()) })
	// Give a parent-death signal time to arrive and be acted on. A fixed wait
	// is the point here: the assertion is that nothing happens.
	time.Sleep(300 * time.Millisecond)
	for _, p := range []string{"ovsdb-server", "ovs-vswitchd"} {
		if _, ok := d.Pid(p); !ok {
			t.Errorf("%s died with the thread that started it", p)
		}
	}
	if _, err := d.Vsctl(testCtx(t), "show"); err != nil {
		t.Error(err)
	}
}
