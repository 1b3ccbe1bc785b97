package metrics_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/seine-cni/seine/core/metrics"
)

// TestTraceflowsRunning: the controller's collector reports 0 running
// Traceflows until the Traceflow controller is handed to it, then its
// count on every scrape.
func TestTraceflowsRunning(t *testing.T) {
	reg := prometheus.NewRegistry()
	c, err := metrics.NewControllerCollector(reg, fakeCtrl{}, fakeCtrl{})
	if err != nil {
		t.Fatal(err)
	}
	value := func() float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == metrics.CtrlTraceflows.Name {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatalf("%s not gathered", metrics.CtrlTraceflows.Name)
		return 0
	}
	if v := value(); v != 0 {
		t.Errorf("before the Traceflow controller runs: %v", v)
	}
	running := 5
	c.SetTraceflows(func() int { return running })
	if v := value(); v != 5 {
		t.Errorf("5 running: %v", v)
	}
	running = 2
	if v := value(); v != 2 {
		t.Errorf("2 running: %v", v)
	}
}
