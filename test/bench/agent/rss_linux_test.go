package agentbench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seine-cni/seine/test/lab"
	"github.com/seine-cni/seine/test/lab/labtest"
)

// BenchmarkAgentRSS brings up a one-node lab, reads the node's seine-agent
// VmRSS with no pods, creates 100 pods bound to the node (5 under -short),
// waits until all are Ready, then samples VmRSS every 200 ms for 3 s. It
// reports the RSS before, the last and largest sample with the pods, and
// VmHWM (the peak so far). These are absolute numbers, compared with the
// issue's target (< 60 MB), not with a baseline: no other agent runs in the
// lab to measure beside it. The idle RSS of the same run is its context.
func BenchmarkAgentRSS(b *testing.B) {
	pods := 100
	if testing.Short() {
		pods = 5
	}
	c, cs := upLab(b, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	pid := agentPID(b, c, "node-1")
	idle := status(b, pid, "VmRSS")

	for b.Loop() {
		start := time.Now()
		for i := range pods {
			if _, err := cs.CoreV1().Pods("default").Create(ctx, labtest.PinnedPod(fmt.Sprintf("rss-%d", i), "node-1"), metav1.CreateOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		for i := range pods {
			if _, err := labtest.WaitPodReady(ctx, cs, fmt.Sprintf("rss-%d", i), 8*time.Minute); err != nil {
				b.Fatal(err)
			}
		}
		b.Logf("%d pods Ready in %s", pods, time.Since(start).Round(time.Millisecond))
		if p := agentPID(b, c, "node-1"); p != pid {
			b.Fatalf("seine-agent restarted during the run (pid %d, then %d)", pid, p)
		}
		var last, peak float64
		for range 15 {
			last = status(b, pid, "VmRSS")
			peak = max(peak, last)
			time.Sleep(200 * time.Millisecond) // sampling interval of a measurement
		}
		hwm := status(b, pid, "VmHWM")
		b.ReportMetric(idle, "idle-RSS-MB")
		b.ReportMetric(last, "RSS-MB")
		b.ReportMetric(peak, "max-sampled-RSS-MB")
		b.ReportMetric(hwm, "HWM-MB")
		fmt.Printf("%s: seine-agent RSS (absolute, MB = 10^6 bytes): %.1f MB with no pods; with %d pods %.1f MB, largest of 15 samples %.1f MB, VmHWM %.1f MB (target < 60 MB with 100 pods)\n",
			b.Name(), idle, pods, last, peak, hwm)
	}
}

// agentPID is the pid in the lab's pidfile of the node's agent.
func agentPID(b *testing.B, c *lab.Config, node string) int {
	b.Helper()
	raw, err := os.ReadFile(filepath.Join(c.PIDDir(), "agent-"+node+".pid"))
	if err != nil {
		b.Fatal(err)
	}
	var pid int
	if _, err := fmt.Sscan(string(raw), &pid); err != nil {
		b.Fatalf("pidfile %q: %v", raw, err)
	}
	return pid
}

// status reads a "kB" field of /proc/<pid>/status in MB (10^6 bytes).
func status(b *testing.B, pid int, field string) float64 {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			var kb float64
			if _, err := fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(v), " kB"), &kb); err != nil {
				b.Fatalf("%s: %q: %v", field, line, err)
			}
			return kb * 1024 / 1e6
		}
	}
	b.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
