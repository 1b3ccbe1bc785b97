package openflowbench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/seine-cni/seine/ovs/openflow"
	"github.com/seine-cni/seine/test/ci"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// BenchmarkInstallFlows installs the same N flows into the same freshly
// cleared bridge through the library (one bundle; this is the timed part,
// ns/op) and through "ovs-ofctl -O OpenFlow15 --bundle add-flows" of the
// flows rendered as text, and reports both rates and their ratio.
//
//	go test -run '^$' -bench InstallFlows -benchtime 3x ./test/bench/openflow
func BenchmarkInstallFlows(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(strconv.Itoa(n/1000)+"k", func(b *testing.B) {
			benchInstall(b, n)
		})
	}
}

func benchInstall(b *testing.B, n int) {
	d := ovsdaemon.StartForTest(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if _, err := d.Vsctl(ctx, "add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev",
		"protocols=OpenFlow15", "fail_mode=secure"); err != nil {
		b.Fatal(err)
	}
	c, err := openflow.Dial(ctx, "unix:"+d.MgmtSocketPath("br0"), openflow.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	var groups []openflow.Message
	for _, g := range Groups() {
		groups = append(groups, openflow.AddGroup(g))
	}
	if err := c.Bundle(ctx, groups...); err != nil {
		b.Fatal(err)
	}
	flows := Flows(n)
	file := filepath.Join(b.TempDir(), "flows.txt")
	var sb strings.Builder
	for _, f := range flows {
		sb.WriteString(strings.NewReplacer(", ", ",").Replace(f.String()))
		sb.WriteByte('\n')
	}
	if err := os.WriteFile(file, []byte(sb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	clear := func() {
		if err := c.DeleteFlowsByCookie(ctx, 0, 0); err != nil {
			b.Fatal(err)
		}
	}
	check := func(who string) {
		st, err := c.Aggregate(ctx, openflow.TableAll, 0, 0)
		if err != nil {
			b.Fatal(err)
		}
		if int(st.FlowCount) != n {
			b.Fatalf("%s installed %d flows, want %d", who, st.FlowCount, n)
		}
	}
	var libTotal, ofctlTotal time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		clear()
		b.StartTimer()
		start := time.Now()
		if err := c.BundleFlows(ctx, openflow.FlowAdd, flows); err != nil {
			b.Fatal(err)
		}
		libTotal += time.Since(start)
		b.StopTimer()
		check("library")
		clear()
		cmd := d.Command(ctx, "ovs-ofctl", "-O", "OpenFlow15", "--bundle", "add-flows", "br0", file)
		start = time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("ovs-ofctl: %v\n%s", err, out)
		}
		ofctlTotal += time.Since(start)
		check("ovs-ofctl")
		b.StartTimer()
	}
	b.StopTimer()
	lib := libTotal.Seconds() / float64(b.N)
	ofc := ofctlTotal.Seconds() / float64(b.N)
	b.ReportMetric(float64(n)/lib, "lib-flows/s")
	b.ReportMetric(float64(n)/ofc, "ofctl-flows/s")
	b.ReportMetric(ofc/lib, "speedup")
}

// BenchmarkFlowCacheBytes measures the heap a cached flow costs: 100k
// representative flows held in a slice, as the agent's flow cache holds
// them.
func BenchmarkFlowCacheBytes(b *testing.B) {
	const n = 100_000
	var perFlow float64
	for i := 0; i < b.N; i++ {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		flows := Flows(n)
		runtime.GC()
		runtime.ReadMemStats(&after)
		perFlow = float64(after.HeapAlloc-before.HeapAlloc) / n
		runtime.KeepAlive(flows)
	}
	b.ReportMetric(perFlow, "B/flow")
	if perFlow >= 200 {
		b.Errorf("a cached flow costs %.0f bytes, budget is 200", perFlow)
	}
}

// TestFlowsParseWithOvsOfctl keeps the generator honest: the text the
// benchmark feeds ovs-ofctl parses, and encodes to the same flows.
func TestFlowsParseWithOvsOfctl(t *testing.T) {
	ci.RequireCommands(t, "ovs-ofctl")
	var sb strings.Builder
	for _, f := range Flows(64) {
		sb.WriteString(strings.NewReplacer(", ", ",").Replace(f.String()) + "\n")
	}
	file := filepath.Join(t.TempDir(), "flows.txt")
	if err := os.WriteFile(file, []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ovs-ofctl", "-O", "OpenFlow15", "parse-flows", file).CombinedOutput()
	if err != nil {
		t.Fatalf("ovs-ofctl parse-flows: %v\n%s", err, out)
	}
	if got := strings.Count(string(out), "OFPT_FLOW_MOD"); got != 64 {
		t.Errorf("ovs-ofctl parsed %d flow-mods, want 64:\n%s", got, out)
	}
}
