package plugin_test

// These tests build the real seine-cni binary and drive it through libcni
// exactly as a container runtime does, against a cni/server with a
// recording handler on a temporary socket.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types040 "github.com/containernetworking/cni/pkg/types/040"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/seine-cni/seine/cni"
	"github.com/seine-cni/seine/cni/server"
)

// binDir holds the plugin binary, named after its type as runtimes expect.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "seine-cni-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	goBin, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "build seine-cni: the go command is not in PATH:", err)
		return 1
	}
	exe := ""
	if runtime.GOOS == "windows" {
		exe = ".exe"
	}
	out, err := exec.Command(goBin, "build", "-o", filepath.Join(dir, cni.PluginType+exe), "github.com/seine-cni/seine/services/seine-cni").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build seine-cni: %v\n%s", err, out)
		return 1
	}
	binDir = dir
	return m.Run()
}

// call is one request the handler saw.
type call struct {
	cmd   cni.Command
	req   *cni.Request
	valid []cni.Attachment
}

// recorder is a Handler that records its calls and answers from errs.
type recorder struct {
	mu    sync.Mutex
	calls []call
	errs  map[cni.Command]error
	block func(ctx context.Context, r *cni.Request) error
}

func (h *recorder) record(cmd cni.Command, ctx context.Context, r *cni.Request, valid []cni.Attachment) error {
	h.mu.Lock()
	h.calls = append(h.calls, call{cmd: cmd, req: r, valid: valid})
	err, block := h.errs[cmd], h.block
	h.mu.Unlock()
	if block != nil {
		return block(ctx, r)
	}
	return err
}

func (h *recorder) Add(ctx context.Context, r *cni.Request) (*current.Result, error) {
	if err := h.record(cni.CmdAdd, ctx, r, nil); err != nil {
		return nil, err
	}
	return podResult(r), nil
}

func (h *recorder) Del(ctx context.Context, r *cni.Request) error {
	return h.record(cni.CmdDel, ctx, r, nil)
}

func (h *recorder) Check(ctx context.Context, r *cni.Request) error {
	return h.record(cni.CmdCheck, ctx, r, nil)
}

func (h *recorder) Status(ctx context.Context, r *cni.Request) error {
	return h.record(cni.CmdStatus, ctx, r, nil)
}

func (h *recorder) GC(ctx context.Context, r *cni.Request, valid []cni.Attachment) error {
	return h.record(cni.CmdGC, ctx, r, valid)
}

func (h *recorder) seen() []call {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.calls)
}

func (h *recorder) commands() []string {
	var out []string
	for _, c := range h.seen() {
		out = append(out, string(c.cmd)+" "+c.req.ContainerID)
	}
	return out
}

func mustCIDR(s string) net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return *n
}

// podResult is a dual-stack result such as the agent returns.
func podResult(r *cni.Request) *current.Result {
	return &current.Result{
		CNIVersion: cni.ResultVersion,
		Interfaces: []*current.Interface{
			{Name: "web-0-1a2b3c", Mac: "02:00:00:00:00:01"},
			{Name: r.IfName, Mac: "02:00:00:00:00:02", Sandbox: r.Netns, Mtu: 1450},
		},
		IPs: []*current.IPConfig{
			{Interface: current.Int(1), Address: mustCIDR("10.244.1.5/24"), Gateway: net.ParseIP("10.244.1.1")},
			{Interface: current.Int(1), Address: mustCIDR("fd00:10:244:1::5/64"), Gateway: net.ParseIP("fd00:10:244:1::1")},
		},
		Routes: []*types.Route{{Dst: mustCIDR("0.0.0.0/0"), GW: net.ParseIP("10.244.1.1")}},
		DNS:    types.DNS{Nameservers: []string{"10.96.0.10"}, Search: []string{"default.svc.cluster.local"}},
	}
}

// rig is one runtime + agent pair in a temporary directory.
type rig struct {
	t      *testing.T
	dir    string
	socket string
	h      *recorder
	cni    *libcni.CNIConfig
	srv    *server.Server
}

func newRig(t *testing.T) *rig {
	t.Helper()
	// A short path: a unix socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "seine-cni-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	r := &rig{
		t:      t,
		dir:    dir,
		socket: filepath.Join(dir, "run", "cni.sock"),
		h:      &recorder{errs: map[cni.Command]error{}},
	}
	r.cni = libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(dir, "cache"), nil)
	return r
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Logf("agent: %s", strings.TrimSpace(string(p)))
	return len(p), nil
}

// start runs the agent's CNI server until the test ends.
func (r *rig) start() {
	r.t.Helper()
	srv, err := server.New(server.Options{SocketPath: r.socket, Handler: r.h, Logger: slog.New(slog.NewTextHandler(logWriter{r.t}, nil))})
	if err != nil {
		r.t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.srv = srv
	r.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			r.t.Errorf("shutdown: %v", err)
		}
	})
}

// list is the network config list a runtime would read from /etc/cni/net.d.
func (r *rig) list(version, extra string) *libcni.NetworkConfigList {
	r.t.Helper()
	l, err := libcni.ConfListFromBytes([]byte(r.listJSON(version, extra)))
	if err != nil {
		r.t.Fatal(err)
	}
	return l
}

func (r *rig) listJSON(version, extra string) string {
	return fmt.Sprintf(`{"cniVersion":%q,"name":"seine-net","plugins":[{"type":"seine","socketPath":%q,"requestTimeout":"20s"%s}]}`,
		version, r.socket, extra)
}

func (r *rig) rt(container string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: container,
		NetNS:       filepath.Join(r.dir, "netns-"+container),
		IfName:      "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", "default"},
			{"K8S_POD_NAME", "web-" + container},
			{"K8S_POD_INFRA_CONTAINER_ID", container},
			{"K8S_POD_UID", "uid-" + container},
		},
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// cniCode returns the CNI error code in err, failing if there is none.
func cniCode(t *testing.T, err error) (uint, string) {
	t.Helper()
	var te *types.Error
	if !errors.As(err, &te) {
		t.Fatalf("error %v (%T) carries no CNI error", err, err)
	}
	return te.Code, te.Msg
}

func TestVersion(t *testing.T) {
	r := newRig(t)
	info, err := r.cni.GetVersionInfo(ctx(t), cni.PluginType)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.SupportedVersions(); !slices.Equal(got, []string{"0.4.0", "1.0.0", "1.1.0"}) {
		t.Errorf("supported versions %v", got)
	}
}

func TestLifecycle(t *testing.T) {
	for _, version := range cni.SupportedVersions {
		t.Run(version, func(t *testing.T) {
			r := newRig(t)
			r.start()
			list := r.list(version, "")
			rt := r.rt("c1")

			res, err := r.cni.AddNetworkList(ctx(t), list, rt)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			checkResult(t, version, res, rt.NetNS)

			calls := r.h.seen()
			if len(calls) != 1 || calls[0].cmd != cni.CmdAdd {
				t.Fatalf("handler saw %v, want one ADD", r.h.commands())
			}
			req := calls[0].req
			wantK8s := cni.K8sArgs{PodNamespace: "default", PodName: "web-c1", PodUID: "uid-c1", PodInfraContainerID: "c1"}
			if req.ContainerID != "c1" || req.Netns != rt.NetNS || req.IfName != "eth0" || req.K8s != wantK8s ||
				req.Path != binDir || req.CNIVersion != version || !strings.Contains(req.Args, "K8S_POD_NAME=web-c1") {
				t.Errorf("ADD request reached the handler as %+v", req)
			}
			if req.NetConf == nil || req.NetConf.Name != "seine-net" || req.NetConf.Timeout != 20*time.Second || req.NetConf.Socket() != r.socket {
				t.Errorf("ADD config reached the handler as %+v", req.NetConf)
			}
			if req.TimeoutMillis <= 0 || req.TimeoutMillis > 20000 {
				t.Errorf("plugin deadline %dms, want within the configured 20s", req.TimeoutMillis)
			}

			if err := r.cni.CheckNetworkList(ctx(t), list, rt); err != nil {
				t.Fatalf("CHECK: %v", err)
			}
			check := r.h.seen()[1]
			if check.cmd != cni.CmdCheck || check.req.NetConf.PrevResult == nil {
				t.Fatalf("CHECK reached the handler as %+v", check)
			}
			prev, err := current.GetResult(check.req.NetConf.PrevResult)
			if err != nil || len(prev.IPs) != 2 || prev.IPs[0].Address.String() != "10.244.1.5/24" {
				t.Errorf("CHECK prevResult %+v %v", prev, err)
			}

			// STATUS and GC exist from CNI 1.1.0; libcni does not call the
			// plugin for them with an older config.
			if err := r.cni.GetStatusNetworkList(ctx(t), list); err != nil {
				t.Fatalf("STATUS: %v", err)
			}
			valid := []types.GCAttachment{{ContainerID: "c1", IfName: "eth0"}}
			if err := r.cni.GCNetworkList(ctx(t), list, &libcni.GCArgs{ValidAttachments: valid}); err != nil {
				t.Fatalf("GC: %v", err)
			}
			if err := r.cni.DelNetworkList(ctx(t), list, rt); err != nil {
				t.Fatalf("DEL: %v", err)
			}

			want := []string{"ADD c1", "CHECK c1", "DEL c1"}
			if version == "1.1.0" {
				want = []string{"ADD c1", "CHECK c1", "STATUS ", "GC ", "DEL c1"}
			}
			if got := r.h.commands(); !slices.Equal(got, want) {
				t.Fatalf("handler saw %q, want %q", got, want)
			}
			for _, c := range r.h.seen() {
				if c.cmd == cni.CmdGC && !slices.Equal(c.valid, []cni.Attachment{{ContainerID: "c1", IfName: "eth0"}}) {
					t.Errorf("GC valid attachments %+v", c.valid)
				}
				if c.cmd == cni.CmdDel && (c.req.NetConf.PrevResult == nil || c.req.K8s.PodName != "web-c1") {
					t.Errorf("DEL request %+v without prevResult or pod", c.req)
				}
			}
			// DEL is idempotent from the runtime's view too: a second one after
			// the cache is gone still reaches the agent and succeeds.
			if err := r.cni.DelNetworkList(ctx(t), list, rt); err != nil {
				t.Errorf("second DEL: %v", err)
			}
		})
	}
}

// checkResult verifies the 1.1.0 result was converted to the config's version.
func checkResult(t *testing.T, version string, res types.Result, netns string) {
	t.Helper()
	if res.Version() != version {
		t.Errorf("result version %s, want %s", res.Version(), version)
	}
	switch version {
	case "0.4.0":
		r, ok := res.(*types040.Result)
		if !ok {
			t.Fatalf("result %T, want a 0.4.0 result", res)
		}
		if len(r.IPs) != 2 || r.IPs[0].Version != "4" || r.IPs[1].Version != "6" ||
			r.IPs[0].Address.String() != "10.244.1.5/24" || !r.IPs[0].Gateway.Equal(net.ParseIP("10.244.1.1")) ||
			r.IPs[1].Address.String() != "fd00:10:244:1::5/64" || r.IPs[0].Interface == nil || *r.IPs[0].Interface != 1 {
			t.Errorf("0.4.0 IPs %v", r.IPs)
		}
		if len(r.Interfaces) != 2 || r.Interfaces[1].Sandbox != netns || len(r.Routes) != 1 || r.DNS.Nameservers[0] != "10.96.0.10" {
			t.Errorf("0.4.0 result %+v", r)
		}
	default:
		r, ok := res.(*current.Result)
		if !ok {
			t.Fatalf("result %T, want a 1.x result", res)
		}
		if len(r.IPs) != 2 || r.IPs[0].Address.String() != "10.244.1.5/24" || r.IPs[1].Address.String() != "fd00:10:244:1::5/64" ||
			!r.IPs[1].Gateway.Equal(net.ParseIP("fd00:10:244:1::1")) || *r.IPs[0].Interface != 1 {
			t.Errorf("%s IPs %v", version, r.IPs)
		}
		if len(r.Interfaces) != 2 || r.Interfaces[1].Sandbox != netns || r.Interfaces[1].Mtu != 1450 || len(r.Routes) != 1 ||
			r.DNS.Search[0] != "default.svc.cluster.local" {
			t.Errorf("%s result %+v", version, r)
		}
	}
}

func TestGCDeletesStaleAttachments(t *testing.T) {
	r := newRig(t)
	r.start()
	list := r.list("1.1.0", "")
	for _, c := range []string{"keep", "stale"} {
		if _, err := r.cni.AddNetworkList(ctx(t), list, r.rt(c)); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.cni.GCNetworkList(ctx(t), list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: "keep", IfName: "eth0"}}}); err != nil {
		t.Fatal(err)
	}
	want := []string{"ADD keep", "ADD stale", "DEL stale", "GC "}
	if got := r.h.commands(); !slices.Equal(got, want) {
		t.Fatalf("handler saw %q, want %q", got, want)
	}
	if gc := r.h.seen()[3]; !slices.Equal(gc.valid, []cni.Attachment{{ContainerID: "keep", IfName: "eth0"}}) {
		t.Errorf("GC valid attachments %+v", gc.valid)
	}
}

func TestMalformedConfig(t *testing.T) {
	r := newRig(t)
	r.start()
	sock := fmt.Sprintf("%q", r.socket)
	tests := []struct {
		name string
		conf string
		args string
		code uint
		msg  string
	}{
		{"bad JSON", `{"cniVersion":"1.0.0","name":`, "", types.ErrDecodingFailure, ""},
		{"no name", `{"cniVersion":"1.0.0","type":"seine","socketPath":` + sock + `}`, "", types.ErrInvalidNetworkConfig, "name"},
		{"wrong type", `{"cniVersion":"1.0.0","name":"n","type":"flannel","socketPath":` + sock + `}`, "", types.ErrInvalidNetworkConfig, `"flannel"`},
		{"relative socketPath", `{"cniVersion":"1.0.0","name":"n","type":"seine","socketPath":"run/cni.sock"}`, "", types.ErrInvalidNetworkConfig, "run/cni.sock"},
		{"bad requestTimeout", `{"cniVersion":"1.0.0","name":"n","type":"seine","socketPath":` + sock + `,"requestTimeout":"ten"}`, "", types.ErrInvalidNetworkConfig, "requestTimeout"},
		{"ipam section", `{"cniVersion":"1.0.0","name":"n","type":"seine","socketPath":` + sock + `,"ipam":{"type":"host-local"}}`, "", types.ErrUnsupportedField, "ipam"},
		{"old version", `{"cniVersion":"0.3.1","name":"n","type":"seine","socketPath":` + sock + `}`, "", types.ErrIncompatibleCNIVersion, ""},
		{"future version", `{"cniVersion":"2.0.0","name":"n","type":"seine","socketPath":` + sock + `}`, "", types.ErrIncompatibleCNIVersion, ""},
		{"bad CNI_ARGS", `{"cniVersion":"1.0.0","name":"n","type":"seine","socketPath":` + sock + `}`, "K8S_POD_NAME", types.ErrInvalidEnvironmentVariables, "CNI_ARGS"},
	}
	plugin := filepath.Join(binDir, cni.PluginType)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := &invoke.Args{Command: "ADD", ContainerID: "c1", NetNS: filepath.Join(r.dir, "ns"), IfName: "eth0", Path: binDir, PluginArgsStr: tt.args}
			_, err := invoke.ExecPluginWithResult(ctx(t), plugin, []byte(tt.conf), args, nil)
			code, msg := cniCode(t, err)
			if code != tt.code || !strings.Contains(msg, tt.msg) {
				t.Errorf("got code %d %q, want code %d containing %q", code, msg, tt.code, tt.msg)
			}
		})
	}

	// The same through libcni, as a runtime reading a bad file would.
	_, err := r.cni.AddNetworkList(ctx(t), r.list("1.0.0", `,"requestTimeout":"-5s"`), r.rt("c2"))
	if code, _ := cniCode(t, err); code != types.ErrInvalidNetworkConfig {
		t.Errorf("libcni ADD with a negative timeout: code %d", code)
	}
	if got := r.h.commands(); len(got) != 0 {
		t.Errorf("the handler was called for invalid input: %q", got)
	}
}

func TestAgentNotRunning(t *testing.T) {
	r := newRig(t)
	list := r.list("1.1.0", "")
	rt := r.rt("c1")

	_, err := r.cni.AddNetworkList(ctx(t), list, rt)
	code, msg := cniCode(t, err)
	if code != types.ErrTryAgainLater || !strings.Contains(msg, r.socket) || !strings.Contains(msg, "seine-agent is running") {
		t.Errorf("ADD with no agent: code %d %q", code, msg)
	}

	args := &invoke.Args{Command: "CHECK", ContainerID: "c1", NetNS: rt.NetNS, IfName: "eth0", Path: binDir}
	err = invoke.ExecPluginWithoutResult(ctx(t), filepath.Join(binDir, cni.PluginType), []byte(r.listPluginJSON("1.1.0")), args, nil)
	if code, _ := cniCode(t, err); code != types.ErrTryAgainLater {
		t.Errorf("CHECK with no agent: code %d", code)
	}

	err = r.cni.GetStatusNetworkList(ctx(t), list)
	code, msg = cniCode(t, err)
	if code != types.ErrPluginNotAvailable || !strings.Contains(msg, r.socket) {
		t.Errorf("STATUS with no agent: code %d %q", code, msg)
	}

	// A stale socket (agent crashed) refuses connections: same answers.
	if err := os.MkdirAll(filepath.Dir(r.socket), 0o700); err != nil {
		t.Fatal(err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: r.socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	_, err = r.cni.AddNetworkList(ctx(t), list, rt)
	code, msg = cniCode(t, err)
	if code != types.ErrTryAgainLater || !strings.Contains(msg, "connection refused") {
		t.Errorf("ADD with a stale socket: code %d %q", code, msg)
	}

	// DEL succeeds and is deferred until the agent starts.
	if err := r.cni.DelNetworkList(ctx(t), list, rt); err != nil {
		t.Fatalf("DEL with no agent: %v", err)
	}
	pending, err := cni.ReadPendingDels(cni.PendingDelDir(r.socket))
	if err != nil || len(pending) != 1 || pending[0].Request.ContainerID != "c1" {
		t.Fatalf("spooled DELs %+v %v", pending, err)
	}
	r.start()
	calls := r.h.seen()
	if len(calls) != 1 || calls[0].cmd != cni.CmdDel || calls[0].req.ContainerID != "c1" || calls[0].req.K8s.PodName != "web-c1" {
		t.Fatalf("after start the handler saw %q, want the deferred DEL c1", r.h.commands())
	}
	if pending, _ := cni.ReadPendingDels(cni.PendingDelDir(r.socket)); len(pending) != 0 {
		t.Errorf("spool not emptied: %+v", pending)
	}
	// And the runtime's retried ADD now works.
	if _, err := r.cni.AddNetworkList(ctx(t), list, r.rt("c2")); err != nil {
		t.Errorf("ADD after the agent started: %v", err)
	}
}

// listPluginJSON is the single plugin config libcni would send for list().
func (r *rig) listPluginJSON(version string) string {
	return fmt.Sprintf(`{"cniVersion":%q,"name":"seine-net","type":"seine","socketPath":%q}`, version, r.socket)
}

func TestHandlerErrorsKeepTheirCodes(t *testing.T) {
	r := newRig(t)
	r.start()
	list := r.list("1.1.0", "")
	rt := r.rt("c1")

	r.h.errs[cni.CmdAdd] = errors.New("create veth: file exists")
	_, err := r.cni.AddNetworkList(ctx(t), list, rt)
	if code, msg := cniCode(t, err); code != types.ErrInternal || msg != "create veth: file exists" {
		t.Errorf("plain ADD error: code %d %q", code, msg)
	}

	delete(r.h.errs, cni.CmdAdd)
	if _, err := r.cni.AddNetworkList(ctx(t), list, rt); err != nil {
		t.Fatal(err)
	}
	r.h.mu.Lock()
	r.h.errs[cni.CmdCheck] = types.NewError(types.ErrUnknownContainer, "container c1 has no interface eth0", "ovs port missing")
	r.h.errs[cni.CmdStatus] = types.NewError(types.ErrLimitedConnectivity, "no route to the cluster network yet", "")
	r.h.errs[cni.CmdDel] = types.NewError(types.ErrTryAgainLater, "OVS is restarting", "")
	r.h.mu.Unlock()

	err = r.cni.CheckNetworkList(ctx(t), list, rt)
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrUnknownContainer || te.Msg != "container c1 has no interface eth0" || te.Details != "ovs port missing" {
		t.Errorf("CHECK error %+v", err)
	}
	if code, _ := cniCode(t, r.cni.GetStatusNetworkList(ctx(t), list)); code != types.ErrLimitedConnectivity {
		t.Errorf("STATUS code %d", code)
	}
	// A DEL the agent refuses is not deferred: the runtime must retry it.
	if code, _ := cniCode(t, r.cni.DelNetworkList(ctx(t), list, rt)); code != types.ErrTryAgainLater {
		t.Errorf("DEL code %d", code)
	}
	if pending, _ := cni.ReadPendingDels(cni.PendingDelDir(r.socket)); len(pending) != 0 {
		t.Errorf("a DEL the agent answered was spooled: %+v", pending)
	}
}

func TestRequestTimeout(t *testing.T) {
	r := newRig(t)
	r.start()
	r.h.block = func(ctx context.Context, _ *cni.Request) error {
		<-ctx.Done()
		return fmt.Errorf("wait for ovs port: %w", ctx.Err())
	}
	l, err := libcni.ConfListFromBytes([]byte(strings.Replace(r.listJSON("1.0.0", ""), `"20s"`, `"1s"`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.cni.AddNetworkList(ctx(t), l, r.rt("c1"))
	if code, msg := cniCode(t, err); code != types.ErrTryAgainLater || !strings.Contains(msg, "did not finish ADD for container c1") {
		t.Errorf("ADD past its deadline: code %d %q", code, msg)
	}
}

func TestGCRequiresValidAttachments(t *testing.T) {
	r := newRig(t)
	r.start()
	plugin := filepath.Join(binDir, cni.PluginType)
	gc := func(extra string) error {
		conf := strings.TrimSuffix(r.listPluginJSON("1.1.0"), "}") + extra + "}"
		return invoke.ExecPluginWithoutResult(ctx(t), plugin, []byte(conf), &invoke.Args{Command: "GC", Path: binDir}, nil)
	}
	// Without the key, GC would read as "nothing is valid": refused.
	if code, msg := cniCode(t, gc("")); code != types.ErrInvalidNetworkConfig || !strings.Contains(msg, "cni.dev/valid-attachments") {
		t.Errorf("GC without valid attachments: code %d %q", code, msg)
	}
	if got := r.h.commands(); len(got) != 0 {
		t.Fatalf("handler called: %q", got)
	}
	// An explicit null (libcni's encoding of an empty list) means none is valid.
	if err := gc(`,"cni.dev/valid-attachments":null`); err != nil {
		t.Fatal(err)
	}
	calls := r.h.seen()
	if len(calls) != 1 || calls[0].cmd != cni.CmdGC || len(calls[0].valid) != 0 {
		t.Errorf("handler saw %+v, want one GC with no valid attachments", calls)
	}
}
