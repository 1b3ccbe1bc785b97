package linux

import (
	"context"
	"log/slog"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
	"github.com/seine-cni/seine/test/ci"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ip(s string) netip.Addr    { return netip.MustParseAddr(s) }

// requirePrivileges skips (fails under CI) unless the test can create
// namespaces and run the tools it inspects them with.
func requirePrivileges(t *testing.T, progs ...string) {
	t.Helper()
	ci.RequireRoot(t, "creating network namespaces")
	ci.RequireCommands(t, append([]string{"ip", "nsenter"}, progs...)...)
}

// logWriter sends a slog text handler's output to t.Log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newBackend returns a backend working in the netns at nodeNS, closed at cleanup.
func newBackend(t *testing.T, nodeNS string, db platform.OVSDB, datapath ovsdb.DatapathType, rundir string) *Backend {
	t.Helper()
	b, err := New(platform.Config{Logger: testLogger(t), OVSDB: db, Datapath: datapath, HostNetNS: nodeNS, OVSRunDir: rundir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close backend: %v", err)
		}
	})
	return b
}

// sh runs a command inside the netns at path (through nsenter, so the tool
// sees only that namespace) and returns its output; failure fails the test.
func sh(t testing.TB, netns string, args ...string) string {
	t.Helper()
	out, err := shErr(netns, args...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func shErr(netns string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + netns, "--"}, args...)...).CombinedOutput()
	return string(out), err
}

// doIn runs fn on a thread inside the netns at path.
func doIn(t *testing.T, path string, fn func() error) {
	t.Helper()
	if err := ns.WithNetNSPath(path, func(ns.NetNS) error { return fn() }); err != nil {
		t.Fatal(err)
	}
}

// mustContain fails unless every want is a substring of got.
func mustContain(t *testing.T, what, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("%s: %q not found in:\n%s", what, w, got)
		}
	}
}

func mustNotContain(t *testing.T, what, got string, unwanted ...string) {
	t.Helper()
	for _, w := range unwanted {
		if strings.Contains(got, w) {
			t.Errorf("%s: %q unexpectedly found in:\n%s", what, w, got)
		}
	}
}

// linkNamesIn lists the interface names in a netns, in ifindex order.
func linkNamesIn(t *testing.T, netns string) string {
	t.Helper()
	var names []string
	for line := range strings.Lines(sh(t, netns, "ip", "-o", "link", "show")) {
		f := strings.Fields(line)
		if len(f) > 1 {
			names = append(names, strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0])
		}
	}
	return strings.Join(names, " ")
}

// startOVS starts a private OVS in its own netns (the test's node) and
// returns it with a connected OVSDB client.
func startOVS(t *testing.T) (*ovsdaemon.Daemon, *ovsdb.Client) {
	t.Helper()
	d := ovsdaemon.StartForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := ovsdb.Connect(ctx, ovsdb.Config{Endpoint: d.DBEndpoint(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return d, c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}
