package openflowbench

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/seine-cni/seine/test/ci"
)

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
