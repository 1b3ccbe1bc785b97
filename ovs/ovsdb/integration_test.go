package ovsdb

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seine-cni/seine/test/ovsdaemon"
)

// env is a private OVS and a client connected to it.
type env struct {
	t   *testing.T
	ctx context.Context
	d   *ovsdaemon.Daemon
	c   *Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	d := ovsdaemon.StartForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	e := &env{t: t, ctx: ctx, d: d}
	e.c = e.connect(d.DBEndpoint())
	return e
}

func (e *env) connect(endpoint string) *Client {
	e.t.Helper()
	c, err := Connect(e.ctx, Config{Endpoint: endpoint, Logger: testLogger(e.t)})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(c.Close)
	return c
}

// vsctl runs ovs-vsctl and returns its trimmed output, failing the test on error.
func (e *env) vsctl(args ...string) string {
	e.t.Helper()
	out, err := e.d.Vsctl(e.ctx, args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// listInterface returns the columns of `ovs-vsctl list interface name`.
func (e *env) listInterface(name string) map[string]string {
	e.t.Helper()
	cols := map[string]string{}
	for _, line := range strings.Split(e.vsctl("list", "interface", name), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok {
			cols[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return cols
}

func (e *env) ensureBridge(cfg BridgeConfig) {
	e.t.Helper()
	if err := e.c.EnsureBridge(e.ctx, cfg); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) ensurePort(bridge string, p PortConfig) {
	e.t.Helper()
	if err := e.c.EnsurePort(e.ctx, bridge, p); err != nil {
		e.t.Fatal(err)
	}
}

// testLogger logs through t until the test's cleanup, then drops lines, so a
// libovsdb goroutine that logs late cannot panic the test binary.
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func TestEnsureBridge(t *testing.T) {
	e := newEnv(t)
	cfg := BridgeConfig{
		Name:         "br-int",
		DatapathType: DatapathNetdev,
		OtherConfig:  map[string]string{"hwaddr": "0a:00:00:00:00:01"},
		ExternalIDs:  map[string]string{"seine-bridge": "int"},
	}
	e.ensureBridge(cfg)
	for col, want := range map[string]string{
		"datapath_type":       "netdev",
		"fail_mode":           "secure",
		"protocols":           `[OpenFlow15]`,
		"other_config:hwaddr": `"0a:00:00:00:00:01"`,
		"external_ids":        `{seine-bridge=int}`,
	} {
		if got := e.vsctl("get", "bridge", "br-int", col); got != want {
			t.Errorf("bridge %s = %s, want %s", col, got, want)
		}
	}
	// Like add-br: the bridge has its local internal port.
	if got := e.vsctl("list-ports", "br-int"); got != "" {
		t.Errorf("list-ports shows %q (the local port is not listed)", got)
	}
	if got := e.vsctl("get", "interface", "br-int", "type"); got != "internal" {
		t.Errorf("local interface type %q", got)
	}
	// ovs-vswitchd built it: secure fail mode means no flows, OpenFlow 1.5 only.
	flows, err := e.d.Ofctl(e.ctx, "-O", "OpenFlow15", "dump-flows", "br-int")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(flows, "actions=NORMAL") {
		t.Errorf("secure bridge has the NORMAL flow:\n%s", flows)
	}
	if _, err := e.d.Ofctl(e.ctx, "-O", "OpenFlow10", "dump-flows", "br-int"); err == nil {
		t.Error("bridge accepts OpenFlow10")
	}

	// Idempotent: the same desired state sends no transaction.
	n := e.c.txns.Load()
	e.ensureBridge(cfg)
	if got := e.c.txns.Load(); got != n {
		t.Errorf("second EnsureBridge sent %d transactions", got-n)
	}

	// Changes are applied; keys not mentioned stay.
	e.vsctl("set", "bridge", "br-int", "external_ids:by-hand=1")
	cfg.FailMode = "standalone"
	cfg.ExternalIDs = map[string]string{"seine-bridge": "int2", "round": "3"}
	e.ensureBridge(cfg)
	if got := e.vsctl("get", "bridge", "br-int", "fail_mode"); got != "standalone" {
		t.Errorf("fail_mode after update = %s", got)
	}
	if got := e.vsctl("get", "bridge", "br-int", "external_ids"); got != `{by-hand="1", round="3", seine-bridge=int2}` {
		t.Errorf("external_ids after update = %s", got)
	}
	br, err := e.c.Bridge(e.ctx, "br-int")
	if err != nil || br.ExternalIDs["round"] != "3" || *br.FailMode != "standalone" {
		t.Errorf("cached bridge after update = %+v, %v", br, err)
	}
}

func TestDeleteBridge(t *testing.T) {
	e := newEnv(t)
	e.ensureBridge(BridgeConfig{Name: "br0", DatapathType: DatapathNetdev})
	e.ensurePort("br0", PortConfig{Name: "p0", Type: TypeInternal})
	if err := e.c.DeleteBridge(e.ctx, "br0"); err != nil {
		t.Fatal(err)
	}
	if out, err := e.d.Vsctl(e.ctx, "br-exists", "br0"); err == nil {
		t.Errorf("br0 still exists: %q", out)
	}
	if got := e.vsctl("--columns=name", "list", "port"); got != "" {
		t.Errorf("ports left after DeleteBridge: %q", got)
	}
	if _, err := e.c.Bridge(e.ctx, "br0"); !errors.Is(err, ErrBridgeNotFound) {
		t.Errorf("Bridge after delete = %v, want ErrBridgeNotFound", err)
	}
	if err := e.c.DeleteBridge(e.ctx, "br0"); err != nil {
		t.Errorf("deleting an absent bridge: %v", err)
	}
}

func TestPorts(t *testing.T) {
	e := newEnv(t)
	e.ensureBridge(BridgeConfig{Name: "br-int", DatapathType: DatapathNetdev})
	// A veth inside the node's netns stands for a pod's host-side interface.
	if out, err := e.d.Command(e.ctx, "ip", "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b").CombinedOutput(); err != nil {
		t.Fatalf("ip link add: %v: %s", err, out)
	}
	ports := []struct {
		cfg      PortConfig
		wantType string
		wantOpts string
	}{
		{PortConfig{Name: "gw0", Type: TypeInternal, OFPortRequest: 2,
			ExternalIDs: map[string]string{"seine-type": "gateway"}}, "internal", "{}"},
		{PortConfig{Name: "veth-a", Type: TypeSystem,
			ExternalIDs: map[string]string{"seine-type": "pod", "pod": "web-1", "namespace": "a"}}, `""`, "{}"},
		{PortConfig{Name: "gnv0", Type: TypeGeneve, OFPortRequest: 1,
			Tunnel: &TunnelConfig{RemoteIP: "flow", Key: "flow", Csum: true, DstPort: 6082}},
			"geneve", `{csum="true", dst_port="6082", key=flow, remote_ip=flow}`},
		{PortConfig{Name: "vx0", Type: TypeVXLAN, Tunnel: &TunnelConfig{RemoteIP: "127.0.0.2", Key: "100", LocalIP: "127.0.0.1"}},
			"vxlan", `{key="100", local_ip="127.0.0.1", remote_ip="127.0.0.2"}`},
		{PortConfig{Name: "gre0", Type: TypeGRE, Tunnel: &TunnelConfig{Key: "flow"}},
			"gre", `{key=flow, remote_ip=flow}`},
		{PortConfig{Name: "stt0", Type: TypeSTT, Tunnel: &TunnelConfig{Key: "flow", DstPort: 7471}},
			"stt", `{dst_port="7471", key=flow, remote_ip=flow}`},
	}
	for _, p := range ports {
		e.ensurePort("br-int", p.cfg)
	}
	for _, p := range ports {
		cols := e.listInterface(p.cfg.Name)
		if cols["type"] != p.wantType || cols["options"] != p.wantOpts {
			t.Errorf("%s: list interface type=%s options=%s, want type=%s options=%s",
				p.cfg.Name, cols["type"], cols["options"], p.wantType, p.wantOpts)
		}
		if got := e.vsctl("port-to-br", p.cfg.Name); got != "br-int" {
			t.Errorf("%s: port-to-br = %s", p.cfg.Name, got)
		}
	}

	// ofports: requested ones are honoured; others are assigned by OVS.
	for name, want := range map[string]int{"gw0": 2, "gnv0": 1} {
		got, err := e.c.PortOfport(e.ctx, name)
		if err != nil || got != want {
			t.Errorf("PortOfport(%s) = %d, %v; want %d", name, got, err, want)
		}
	}
	for _, name := range []string{"veth-a", "vx0", "gre0", "stt0"} {
		got, err := e.c.PortOfport(e.ctx, name)
		if err != nil || got < 3 {
			t.Errorf("PortOfport(%s) = %d, %v; want an assigned port", name, got, err)
		}
		if s := e.vsctl("get", "interface", name, "ofport"); s != strconv.Itoa(got) {
			t.Errorf("%s: ovs-vsctl ofport %s, PortOfport %d", name, s, got)
		}
	}
	// stt0 too: Debian's userspace datapath lists stt among its iface_types.
	if got, err := e.c.PortOfport(e.ctx, "stt0"); err != nil || got < 3 {
		t.Errorf("PortOfport(stt0) = %d, %v", got, err)
	}

	info, err := e.c.GetPort(e.ctx, "veth-a")
	if err != nil || info.Bridge != "br-int" || info.Type != TypeSystem || info.ExternalIDs["pod"] != "web-1" || info.OFPort < 1 {
		t.Errorf("GetPort(veth-a) = %+v, %v", info, err)
	}

	// Idempotent.
	n := e.c.txns.Load()
	for _, p := range ports {
		e.ensurePort("br-int", p.cfg)
	}
	if got := e.c.txns.Load(); got != n {
		t.Errorf("repeating EnsurePort sent %d transactions", got-n)
	}

	// Updates: new tunnel options, new ofport_request, more external_ids.
	e.ensurePort("br-int", PortConfig{Name: "gnv0", Type: TypeGeneve, OFPortRequest: 9,
		Tunnel: &TunnelConfig{RemoteIP: "flow", Key: "flow"}, ExternalIDs: map[string]string{"seine-type": "tunnel"}})
	if cols := e.listInterface("gnv0"); cols["options"] != `{key=flow, remote_ip=flow}` || cols["ofport_request"] != "9" {
		t.Errorf("gnv0 after update: options=%s ofport_request=%s", cols["options"], cols["ofport_request"])
	}
	if got := e.vsctl("get", "port", "gnv0", "external_ids:seine-type"); got != "tunnel" {
		t.Errorf("gnv0 external_ids:seine-type = %s", got)
	}
	waitOfport(t, e, "gnv0", 9)

	// A port of the same name on another bridge is refused.
	e.ensureBridge(BridgeConfig{Name: "br-ext", DatapathType: DatapathNetdev})
	if err := e.c.EnsurePort(e.ctx, "br-ext", PortConfig{Name: "gw0", Type: TypeInternal}); err == nil ||
		!strings.Contains(err.Error(), "on bridge br-int") {
		t.Errorf("EnsurePort of gw0 on br-ext = %v, want an error naming br-int", err)
	}
	if err := e.c.EnsurePort(e.ctx, "br-none", PortConfig{Name: "x", Type: TypeInternal}); !errors.Is(err, ErrBridgeNotFound) {
		t.Errorf("EnsurePort on a missing bridge = %v, want ErrBridgeNotFound", err)
	}

	// Delete, and delete again.
	if err := e.c.DeletePort(e.ctx, "veth-a"); err != nil {
		t.Fatal(err)
	}
	if out, err := e.d.Vsctl(e.ctx, "port-to-br", "veth-a"); err == nil {
		t.Errorf("veth-a still on %q", out)
	}
	if got := e.vsctl("--columns=name", "find", "interface", "name=veth-a"); got != "" {
		t.Errorf("interface row left: %q", got)
	}
	if err := e.c.DeletePort(e.ctx, "veth-a"); err != nil {
		t.Errorf("deleting an absent port: %v", err)
	}
	if _, err := e.c.PortOfport(e.ctx, "veth-a"); !errors.Is(err, ErrPortNotFound) {
		t.Errorf("PortOfport of a deleted port = %v, want ErrPortNotFound", err)
	}
}

func waitOfport(t *testing.T, e *env, name string, want int) {
	t.Helper()
	err := e.c.waitFor(e.ctx, "ofport", func() (bool, error) {
		info, err := e.c.GetPort(e.ctx, name)
		return err == nil && info.OFPort == want, nil
	})
	if err != nil {
		t.Errorf("%s never got ofport %d: %v", name, want, err)
	}
}

func TestPortOfportMissingDevice(t *testing.T) {
	e := newEnv(t)
	e.ensureBridge(BridgeConfig{Name: "br0", DatapathType: DatapathNetdev})
	e.ensurePort("br0", PortConfig{Name: "nosuchdev", Type: TypeSystem})
	_, err := e.c.PortOfport(e.ctx, "nosuchdev")
	var ie *InterfaceError
	if !errors.As(err, &ie) || !strings.Contains(ie.Text, "nosuchdev") {
		t.Fatalf("PortOfport = %v, want an *InterfaceError naming the device", err)
	}
	t.Logf("OVS said: %v", err)
}

func TestListPortsAfterRestart(t *testing.T) {
	e := newEnv(t)
	e.ensureBridge(BridgeConfig{Name: "br-int", DatapathType: DatapathNetdev})
	for _, p := range []struct{ name, ns string }{{"p1", "a"}, {"p2", "a"}, {"p3", "b"}} {
		e.ensurePort("br-int", PortConfig{Name: p.name, Type: TypeInternal,
			ExternalIDs: map[string]string{"seine-owner": "agent", "namespace": p.ns}})
	}
	e.ensurePort("br-int", PortConfig{Name: "other", Type: TypeInternal})

	// A restarted agent: a new client recovers its ports from external_ids.
	e.c.Close()
	c := e.connect(e.d.DBEndpoint())
	got, err := c.ListPorts(e.ctx, map[string]string{"seine-owner": "agent", "namespace": "a"})
	if err != nil {
		t.Fatal(err)
	}
	if names := portNames(got); names != "p1,p2" {
		t.Errorf("ListPorts(namespace=a) = %s", names)
	}
	for _, p := range got {
		if p.Bridge != "br-int" || p.Type != TypeInternal || p.OFPort == 0 && p.Error != "" {
			t.Errorf("port %+v", p)
		}
	}
	all, err := c.ListPorts(e.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if names := portNames(all); names != "br-int,other,p1,p2,p3" {
		t.Errorf("ListPorts(nil) = %s", names)
	}
}

func portNames(ps []PortInfo) string {
	var names []string
	for _, p := range ps {
		names = append(names, p.Name)
	}
	slices.Sort(names)
	return strings.Join(names, ",")
}

func TestMapColumns(t *testing.T) {
	e := newEnv(t)
	e.ensureBridge(BridgeConfig{Name: "br0", DatapathType: DatapathNetdev})
	e.ensurePort("br0", PortConfig{Name: "p0", Type: TypeInternal, ExternalIDs: map[string]string{"keep": "1"}})

	if err := e.c.SetBridgeMap(e.ctx, "br0", OtherConfig, map[string]string{"hwaddr": "0a:00:00:00:00:02", "x": "y"}); err != nil {
		t.Fatal(err)
	}
	if err := e.c.RemoveBridgeMapKeys(e.ctx, "br0", OtherConfig, "x", "absent"); err != nil {
		t.Fatal(err)
	}
	if got := e.vsctl("get", "bridge", "br0", "other_config"); got != `{hwaddr="0a:00:00:00:00:02"}` {
		t.Errorf("bridge other_config = %s", got)
	}
	if m, err := e.c.BridgeMap(e.ctx, "br0", OtherConfig); err != nil || m["hwaddr"] != "0a:00:00:00:00:02" || len(m) != 1 {
		t.Errorf("BridgeMap = %v, %v", m, err)
	}
	if err := e.c.SetBridgeMap(e.ctx, "br0", ExternalIDs, map[string]string{"a": "b"}); err != nil {
		t.Fatal(err)
	}
	if got := e.vsctl("get", "bridge", "br0", "external_ids:a"); got != "b" {
		t.Errorf("bridge external_ids:a = %s", got)
	}

	if err := e.c.SetPortMap(e.ctx, "p0", ExternalIDs, map[string]string{"keep": "2", "ip": "10.0.0.5"}); err != nil {
		t.Fatal(err)
	}
	if err := e.c.SetPortMap(e.ctx, "p0", OtherConfig, map[string]string{"priority-tags": "true"}); err != nil {
		t.Fatal(err)
	}
	if got := e.vsctl("get", "port", "p0", "external_ids"); got != `{ip="10.0.0.5", keep="2"}` {
		t.Errorf("port external_ids = %s", got)
	}
	if err := e.c.RemovePortMapKeys(e.ctx, "p0", ExternalIDs, "ip"); err != nil {
		t.Fatal(err)
	}
	if m, err := e.c.PortMap(e.ctx, "p0", ExternalIDs); err != nil || len(m) != 1 || m["keep"] != "2" {
		t.Errorf("PortMap = %v, %v", m, err)
	}
	if got := e.vsctl("get", "port", "p0", "other_config"); got != `{priority-tags="true"}` {
		t.Errorf("port other_config = %s", got)
	}
	n := e.c.txns.Load()
	if err := e.c.SetPortMap(e.ctx, "p0", ExternalIDs, map[string]string{"keep": "2"}); err != nil {
		t.Fatal(err)
	}
	if err := e.c.RemovePortMapKeys(e.ctx, "p0", ExternalIDs, "ip"); err != nil {
		t.Fatal(err)
	}
	if e.c.txns.Load() != n {
		t.Error("no-op map changes sent transactions")
	}
	if err := e.c.SetPortMap(e.ctx, "nope", ExternalIDs, map[string]string{"a": "b"}); !errors.Is(err, ErrPortNotFound) {
		t.Errorf("SetPortMap on a missing port = %v", err)
	}
	if err := e.c.SetBridgeMap(e.ctx, "br0", "status", map[string]string{"a": "b"}); err == nil {
		t.Error("SetBridgeMap accepted an unknown column")
	}
}

func TestVersion(t *testing.T) {
	e := newEnv(t)
	got, err := e.c.Version(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ovs-vswitchd", "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	want := regexp.MustCompile(`\d+\.\d+\.\d+`).FindString(string(out))
	if got != want {
		t.Errorf("Version = %q, ovs-vswitchd --version says %q", got, want)
	}
}

func TestReconnectAfterDBServerRestart(t *testing.T) {
	e := newEnv(t)
	e.ensureBridge(BridgeConfig{Name: "br0", DatapathType: DatapathNetdev})
	if err := e.d.RestartDBServer(e.ctx); err != nil {
		t.Fatal(err)
	}
	// Operations issued while the client reconnects wait for it.
	e.ensurePort("br0", PortConfig{Name: "p-after", Type: TypeInternal})
	if got := e.vsctl("port-to-br", "p-after"); got != "br0" {
		t.Errorf("port-to-br p-after = %s", got)
	}
	if !e.c.Connected() {
		t.Error("client not connected after the restart")
	}
	// The cache was refilled: state from before the restart is visible.
	if _, err := e.c.Bridge(e.ctx, "br0"); err != nil {
		t.Errorf("bridge from before the restart: %v", err)
	}
	// And changes made by others after the restart arrive.
	e.vsctl("add-br", "br-other", "--", "set", "bridge", "br-other", "datapath_type=netdev")
	err := e.c.waitFor(e.ctx, "br-other", func() (bool, error) { return e.c.hasBridge(e.ctx, "br-other"), nil })
	if err != nil {
		t.Error(err)
	}
}

func TestConcurrentEnsureBridge(t *testing.T) {
	e := newEnv(t)
	clients := []*Client{e.c, e.connect(e.d.DBEndpoint()), e.connect(e.d.DBEndpoint())}
	var wg sync.WaitGroup
	errs := make([]error, len(clients))
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.EnsureBridge(e.ctx, BridgeConfig{Name: "br-int", DatapathType: DatapathNetdev})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("client %d: %v", i, err)
		}
	}
	if got := e.vsctl("list-br"); got != "br-int" {
		t.Errorf("list-br = %q", got)
	}
}

// TestTCPEndpoint connects over tcp: a loopback listener relays to db.sock
// (the daemon's own sockets live in its netns).
func TestTCPEndpoint(t *testing.T) {
	e := newEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go relay(ln, e.d.DBSocketPath())
	c := e.connect("tcp:" + ln.Addr().String())
	if err := c.EnsureBridge(e.ctx, BridgeConfig{Name: "br-tcp", DatapathType: DatapathNetdev}); err != nil {
		t.Fatal(err)
	}
	if got := e.vsctl("list-br"); got != "br-tcp" {
		t.Errorf("list-br = %q", got)
	}
}

func relay(ln net.Listener, unixPath string) {
	for {
		in, err := ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("unix", unixPath)
		if err != nil {
			in.Close()
			continue
		}
		go func() { io.Copy(out, in); out.Close() }()
		go func() { io.Copy(in, out); in.Close() }()
	}
}

// TestOpenvSwitchOtherConfig: the agent turns on hw-offload this way (on a
// kernel-datapath node with a switchdev PF); other keys stay.
func TestOpenvSwitchOtherConfig(t *testing.T) {
	e := newEnv(t)
	e.vsctl("set", "Open_vSwitch", ".", "other_config:max-idle=20000")
	if err := e.c.SetOpenvSwitchOtherConfig(e.ctx, map[string]string{"hw-offload": "true"}); err != nil {
		t.Fatal(err)
	}
	if got := e.vsctl("get", "Open_vSwitch", ".", "other_config"); got != `{hw-offload="true", max-idle="20000"}` {
		t.Errorf("other_config = %s", got)
	}
	got, err := e.c.OpenvSwitchOtherConfig(e.ctx)
	if err != nil || got["hw-offload"] != "true" || got["max-idle"] != "20000" {
		t.Errorf("OpenvSwitchOtherConfig = %v, %v", got, err)
	}
	if err := e.c.SetOpenvSwitchOtherConfig(e.ctx, map[string]string{"hw-offload": "true"}); err != nil {
		t.Errorf("setting it again: %v", err)
	}
}
