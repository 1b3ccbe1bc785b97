package ovsdaemon

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestStartStop(t *testing.T) {
	ctx := testCtx(t)
	d := StartForTest(t)

	if _, err := os.Stat(filepath.Join(d.Dir(), "conf.db")); err != nil {
		t.Errorf("conf.db: %v", err)
	}
	if want := "unix:" + filepath.Join(d.Dir(), "run", "db.sock"); d.DBEndpoint() != want {
		t.Errorf("DBEndpoint = %q, want %q", d.DBEndpoint(), want)
	}
	dbPid, ok := d.Pid("ovsdb-server")
	if !ok {
		t.Fatal("ovsdb-server not running after Start")
	}
	vsPid, ok := d.Pid("ovs-vswitchd")
	if !ok {
		t.Fatal("ovs-vswitchd not running after Start")
	}
	ctl := d.VswitchdCtlPath()
	if want := filepath.Join(d.RunDir(), "ovs-vswitchd."+strconv.Itoa(vsPid)+".ctl"); ctl != want {
		t.Errorf("VswitchdCtlPath = %q, want %q", ctl, want)
	}
	if !dialUnix(ctl) || !dialUnix(d.DBSocketPath()) {
		t.Errorf("sockets do not answer: %s, %s", ctl, d.DBSocketPath())
	}
	// Both daemons run inside the netns.
	pids, err := NetNSPids(d.NetNS())
	if err != nil {
		t.Fatal(err)
	}
	if !containsAll(pids, dbPid, vsPid) {
		t.Errorf("netns pids %v do not include ovsdb-server %d and ovs-vswitchd %d", pids, dbPid, vsPid)
	}
	// Like ovs-ctl, Start records the versions in the database.
	if v, err := d.Vsctl(ctx, "get", "Open_vSwitch", ".", "ovs_version", "db_version"); err != nil ||
		!regexp.MustCompile(`^"\d+\.\d+\.\d+"\n"\d+\.\d+\.\d+"\n$`).MatchString(v) {
		t.Errorf("ovs_version, db_version = %q, %v", v, err)
	}
	out, err := d.Appctl(ctx, "ovs-vswitchd", "version")
	if err != nil || !strings.Contains(out, "ovs-vswitchd (Open vSwitch)") {
		t.Errorf("appctl version = %q, %v", out, err)
	}

	if err := d.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if processAlive(dbPid) || processAlive(vsPid) {
		t.Errorf("daemons still alive after Stop: ovsdb-server %v, ovs-vswitchd %v", processAlive(dbPid), processAlive(vsPid))
	}
	if d.VswitchdCtlPath() != "" {
		t.Errorf("VswitchdCtlPath after Stop = %q, want empty", d.VswitchdCtlPath())
	}
	if err := d.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if _, err := d.Vsctl(ctx, "show"); err == nil {
		t.Error("ovs-vsctl show succeeded after Stop")
	}
}

func TestNetdevBridge(t *testing.T) {
	ctx := testCtx(t)
	d := StartForTest(t)
	if _, err := d.Vsctl(ctx, "add-br", "br-test", "--", "set", "bridge", "br-test", "datapath_type=netdev"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d.MgmtSocketPath("br-test")); err != nil {
		t.Errorf("mgmt socket: %v", err)
	}
	if _, err := d.Ofctl(ctx, "add-flow", "br-test", "table=0,priority=10,ip,actions=drop"); err != nil {
		t.Fatal(err)
	}
	flows, err := d.Ofctl(ctx, "dump-flows", "br-test")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"priority=10,ip actions=drop", "priority=0 actions=NORMAL"} {
		if !strings.Contains(flows, want) {
			t.Errorf("dump-flows lacks %q:\n%s", want, flows)
		}
	}
	// The netdev bridge's internal port is a tap inside the netns, not in ours.
	if out, err := d.Command(ctx, "ip", "-o", "link", "show", "br-test").CombinedOutput(); err != nil {
		t.Errorf("br-test not in the netns: %v: %s", err, out)
	}
	dp, err := d.Appctl(ctx, "ovs-vswitchd", "dpif/show")
	if err != nil || !strings.Contains(dp, "netdev@ovs-netdev") {
		t.Errorf("dpif/show = %q, %v", dp, err)
	}
}

func TestRestartVswitchdKeepsDB(t *testing.T) {
	ctx := testCtx(t)
	d := StartForTest(t)
	if _, err := d.Vsctl(ctx, "add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev", "external_ids:owner=test"); err != nil {
		t.Fatal(err)
	}
	before, _ := d.Pid("ovs-vswitchd")
	if err := d.StartVswitchd(ctx); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("StartVswitchd while running: %v, want an 'already running' error", err)
	}
	if err := d.RestartVswitchd(ctx); err != nil {
		t.Fatal(err)
	}
	after, ok := d.Pid("ovs-vswitchd")
	if !ok || after == before {
		t.Fatalf("vswitchd pid before %d, after %d (running %v)", before, after, ok)
	}
	if processAlive(before) {
		t.Errorf("old vswitchd %d still alive", before)
	}
	out, err := d.Vsctl(ctx, "get", "bridge", "br0", "external_ids:owner")
	if err != nil || strings.TrimSpace(out) != `test` {
		t.Errorf("external_ids:owner after restart = %q, %v", out, err)
	}
	// The new vswitchd recreated the bridge from the database.
	if _, err := d.Ofctl(ctx, "dump-flows", "br0"); err != nil {
		t.Errorf("dump-flows after restart: %v", err)
	}

	// With vswitchd stopped the database still answers.
	if err := d.StopVswitchd(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Vsctl(ctx, "--no-wait", "list-br"); err != nil {
		t.Errorf("db while vswitchd is stopped: %v", err)
	}
	if err := d.StartVswitchd(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestRestartDBServerKeepsData(t *testing.T) {
	ctx := testCtx(t)
	d := StartForTest(t)
	if _, err := d.Vsctl(ctx, "add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev"); err != nil {
		t.Fatal(err)
	}
	before, _ := d.Pid("ovsdb-server")
	if err := d.RestartDBServer(ctx); err != nil {
		t.Fatal(err)
	}
	after, ok := d.Pid("ovsdb-server")
	if !ok || after == before {
		t.Fatalf("ovsdb-server pid before %d, after %d (running %v)", before, after, ok)
	}
	out, err := d.Vsctl(ctx, "list-br")
	if err != nil || strings.TrimSpace(out) != "br0" {
		t.Errorf("list-br after restart = %q, %v", out, err)
	}
	// vswitchd reconnected: a waiting transaction completes.
	if _, err := d.Vsctl(ctx, "add-br", "br1", "--", "set", "bridge", "br1", "datapath_type=netdev"); err != nil {
		t.Errorf("add-br after ovsdb-server restart: %v", err)
	}
}

func TestStartTwiceInSameDirFails(t *testing.T) {
	d := StartForTest(t)
	_, err := Start(testCtx(t), Options{Dir: d.Dir(), NetNS: d.NetNS()})
	if err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("second Start in %s: %v, want an 'already running' error", d.Dir(), err)
	}
	if _, ok := d.Pid("ovsdb-server"); !ok {
		t.Error("the failed second Start stopped the first instance")
	}
}

func TestAttachNotRunning(t *testing.T) {
	_, err := Attach(t.TempDir())
	if !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Attach(empty dir) = %v, want ErrNotRunning", err)
	}
}

// detachEnv makes the test binary act as a `lab up`: start a detached instance
// in the given dir and netns, then exit.
const (
	detachEnvDir   = "OVSDAEMON_TEST_DETACH_DIR"
	detachEnvNetNS = "OVSDAEMON_TEST_DETACH_NETNS"
)

func TestDetachHelperProcess(t *testing.T) {
	dir := os.Getenv(detachEnvDir)
	if dir == "" {
		t.Skip("helper process for TestDetachSurvivesStarter, not a test on its own")
	}
	if _, err := Start(testCtx(t), Options{Dir: dir, NetNS: os.Getenv(detachEnvNetNS), Detach: true}); err != nil {
		t.Fatal(err)
	}
}

func TestDetachSurvivesStarter(t *testing.T) {
	SkipUnlessCanRun(t)
	ctx := testCtx(t)
	ns := NewNetNS(t)
	dir, err := os.MkdirTemp("", "ovs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	t.Cleanup(func() { // in case the test fails before its own Stop
		if d, err := Attach(dir); err == nil {
			_ = d.Stop(context.Background())
		}
	})

	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestDetachHelperProcess$", "-test.v")
	cmd.Env = append(os.Environ(), detachEnvDir+"="+dir, detachEnvNetNS+"="+ns)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("starter process: %v\n%s", err, out)
	}
	// The starter has exited; the daemons must still be running.
	d, err := Attach(dir)
	if err != nil {
		t.Fatal(err)
	}
	if d.NetNS() != ns {
		t.Errorf("attached NetNS = %q, want %q (from the state file)", d.NetNS(), ns)
	}
	dbPid, ok1 := d.Pid("ovsdb-server")
	vsPid, ok2 := d.Pid("ovs-vswitchd")
	if !ok1 || !ok2 {
		t.Fatalf("daemons not running after the starter exited: ovsdb-server %v, ovs-vswitchd %v", ok1, ok2)
	}
	if _, err := d.Vsctl(ctx, "add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev"); err != nil {
		t.Fatal(err)
	}
	// A vswitchd restarted through the attached handle is detached and in the netns.
	if err := d.RestartVswitchd(ctx); err != nil {
		t.Fatal(err)
	}
	newVs, _ := d.Pid("ovs-vswitchd")
	pids, err := NetNSPids(ns)
	if err != nil {
		t.Fatal(err)
	}
	if !containsAll(pids, dbPid, newVs) {
		t.Errorf("netns pids %v do not include ovsdb-server %d and the new ovs-vswitchd %d", pids, dbPid, newVs)
	}
	if err := d.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	for _, pid := range []int{dbPid, vsPid, newVs} {
		if processAlive(pid) {
			t.Errorf("pid %d alive after Stop", pid)
		}
	}
	if _, err := Attach(dir); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Attach after Stop = %v, want ErrNotRunning", err)
	}
}

func TestNothingLeftBehind(t *testing.T) {
	SkipUnlessCanRun(t)
	var dir, ns string
	var pids []int
	t.Run("instance", func(t *testing.T) {
		d := StartForTest(t)
		if _, err := d.Vsctl(testCtx(t), "add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev"); err != nil {
			t.Fatal(err)
		}
		dir, ns = d.Dir(), d.NetNS()
		for _, p := range []string{"ovsdb-server", "ovs-vswitchd"} {
			pid, _ := d.Pid(p)
			pids = append(pids, pid)
		}
		if mounted, err := IsMounted(ns); err != nil || !mounted {
			t.Fatalf("netns %s mounted = %v, %v", ns, mounted, err)
		}
	})
	for _, pid := range pids {
		if processAlive(pid) {
			t.Errorf("pid %d alive after cleanup", pid)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("dir %s after cleanup: %v", dir, err)
	}
	if mounted, err := IsMounted(ns); err != nil || mounted {
		t.Errorf("netns %s still mounted (%v, %v)", ns, mounted, err)
	}
	if _, err := os.Stat(ns); !os.IsNotExist(err) {
		t.Errorf("netns file %s after cleanup: %v", ns, err)
	}
}

func TestNetNSCleanupKillsStragglers(t *testing.T) {
	SkipUnlessCanRun(t)
	var pid int
	t.Run("netns", func(t *testing.T) {
		ns := NewNetNS(t)
		cmd := exec.Command("nsenter", "--net="+ns, "--", "sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go cmd.Wait() // reap it once NewNetNS's cleanup kills it
		pid = cmd.Process.Pid
		pollUntil(t, func() bool { p, _ := NetNSPids(ns); return containsAll(p, pid) })
	})
	if processAlive(pid) {
		t.Errorf("straggler %d alive after the netns cleanup", pid)
	}
}

func TestMountinfoHas(t *testing.T) {
	info := "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw\n" +
		"40 25 0:4 net:[4026532281] /tmp/a\\040b/netns rw shared:1 - nsfs nsfs rw\n"
	for path, want := range map[string]bool{
		"/mnt/parent":    true,
		"/tmp/a b/netns": true,
		"/tmp/a":         false,
		"/mnt1":          false,
	} {
		if got := mountinfoHas(info, path); got != want {
			t.Errorf("mountinfoHas(%q) = %v, want %v", path, got, want)
		}
	}
}

func BenchmarkStartStop(b *testing.B) {
	SkipUnlessCanRun(b)
	ns := NewNetNS(b)
	for b.Loop() {
		dir, err := os.MkdirTemp("", "ovs")
		if err != nil {
			b.Fatal(err)
		}
		d, err := Start(context.Background(), Options{Dir: dir, NetNS: ns})
		if err != nil {
			b.Fatal(err)
		}
		if err := d.Stop(context.Background()); err != nil {
			b.Fatal(err)
		}
		os.RemoveAll(dir)
	}
}

func pollUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(pollInterval)
	}
}

func containsAll(have []int, want ...int) bool {
	set := map[int]bool{}
	for _, p := range have {
		set[p] = true
	}
	for _, p := range want {
		if !set[p] {
			return false
		}
	}
	return true
}
