package traceflowbench

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	crd "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/test/bench/benchutil"
	"github.com/seine-cni/seine/test/lab/labtest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

func TestMain(m *testing.M) {
	code := m.Run()
	labtest.RemoveBinaries()
	os.Exit(code)
}

// Traces per side: the p50/p95 over 50; make test's -short run
// proves the code with 5.
const (
	traces      = 50
	shortTraces = 5
)

// BenchmarkTraceflow creates Traceflows from a pod on node-1 to a pod on
// node-1 (same node) and to a pod on node-2 (across the Geneve tunnel) of
// a 2-node lab and times each from the create request to the client
// seeing Succeeded through a watch. The baseline, in the same rounds, is
// one kube-apiserver write seen through a watch (a ConfigMap created and
// its ADDED event received): a trace is at least four such hops in a row
// (the controller tags it, the agents acknowledge their flows, the
// source node reports, the controller declares the verdict), so the ratio
// says how close it comes to that floor. Antrea's floor is 2 s across
// nodes (a fixed sleep before it injects), printed beside it.
func BenchmarkTraceflow(b *testing.B) {
	n := traces
	if testing.Short() {
		n = shortTraces
	}
	c, cs := labtest.Up(b, labtest.Options{Name: "bench-tf", Nodes: 2, APIPort: 14443, EtcdPort: 14379}) // below the ephemeral range (32768+); slots add 100-900
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	pp := labtest.StartPodPair(ctx, b, c, cs, "tf-far", "node-2", "tf-src", "node-1")
	if _, err := cs.CoreV1().Pods("default").Create(ctx, labtest.PinnedPod("tf-near", "node-1"), metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	if _, err := labtest.WaitPodReady(ctx, cs, "tf-near", 2*time.Minute); err != nil {
		b.Fatal(err)
	}
	rc, err := c.RESTConfig("admin")
	if err != nil {
		b.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		b.Fatal(err)
	}
	// The first trace also waits for the agents' informers: untimed.
	if _, _, err := trace(ctx, dyn, "bench-warmup", pp.Client.Name, pp.Server.Name); err != nil {
		b.Fatal(err)
	}
	steps := map[string][]timeline{}
	side := func(name, dst string) benchutil.Side {
		return benchutil.Side{Name: name, Run: func(round int) (benchutil.Sample, error) {
			ms, tl, err := trace(ctx, dyn, fmt.Sprintf("bench-%s-%d", name, round), pp.Client.Name, dst)
			if err == nil {
				steps[name] = append(steps[name], tl)
			}
			return benchutil.Sample{"ms": ms}, err
		}}
	}
	api := benchutil.Side{Name: "api-write-watch", Run: func(round int) (benchutil.Sample, error) {
		ms, err := writeWatch(ctx, cs, fmt.Sprintf("bench-api-%d", round))
		return benchutil.Sample{"ms": ms}, err
	}}
	for b.Loop() {
		r, err := benchutil.Comparison{
			Name:    fmt.Sprintf("Traceflow create -> Succeeded, %d traces per side", n),
			Metrics: []string{"ms"},
			Sides:   []benchutil.Side{side("same-node", "tf-near"), side("other-node", pp.Server.Name), api},
			Ratios:  []benchutil.Ratio{{Num: "same-node", Den: "api-write-watch"}, {Num: "other-node", Den: "api-write-watch"}},
			Rounds:  n, ShortRounds: n, FixedRounds: true,
		}.Run()
		if err != nil {
			b.Fatal(err)
		}
		r.Report(b)
		lines, err := agentLines(c)
		if err != nil {
			b.Fatal(err)
		}
		for _, name := range []string{"same-node", "other-node"} {
			b.Logf("%s, where the time goes (from the watch's events):\n%s%s", name, breakdown(steps[name]), agentBreakdown(lines, "bench-"+name+"-"))
		}
		s, o, a := r.Stats("same-node", "ms"), r.Stats("other-node", "ms"), r.Stats("api-write-watch", "ms")
		b.Logf("same node p50 %.0f ms p95 %.0f ms; other node p50 %.0f ms p95 %.0f ms; one API write seen by a watch p50 %.1f ms p95 %.1f ms; other node p95 / Antrea's 2 s floor %.2f",
			s.Percentile(50), s.Percentile(95), o.Percentile(50), o.Percentile(95), a.Percentile(50), a.Percentile(95), o.Percentile(95)/2000)
		b.ReportMetric(s.Percentile(95), "same-node-p95-ms")
		b.ReportMetric(o.Percentile(95), "other-node-p95-ms")
		b.ReportMetric(o.Percentile(50)/a.Percentile(50), "other/api-p50-ratio")
	}
}

// trace creates a Traceflow from src to dst (pods of default, TCP 8080),
// returns the time from the create request to its Succeeded seen through
// a watch and when each step's write was seen, and deletes it.
func trace(ctx context.Context, dyn dynamic.Interface, name, src, dst string) (float64, timeline, error) {
	ctx, cancel := context.WithTimeout(ctx, 40*time.Second)
	defer cancel()
	res := dyn.Resource(crd.TraceflowsResource)
	var tl timeline
	w, err := res.Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + name})
	if err != nil {
		return 0, tl, err
	}
	defer w.Stop()
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&crd.Traceflow{
		TypeMeta:   metav1.TypeMeta{APIVersion: crd.SchemeGroupVersion.String(), Kind: "Traceflow"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: crd.TraceflowSpec{Source: crd.Source{Namespace: "default", Pod: src}, Destination: crd.Destination{Namespace: "default", Pod: dst},
			Packet: crd.Packet{Protocol: "TCP", DstPort: 8080}}})
	if err != nil {
		return 0, tl, err
	}
	delete(obj, "status")
	start := time.Now()
	if _, err := res.Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
		return 0, tl, err
	}
	defer func() { _ = res.Delete(context.Background(), name, metav1.DeleteOptions{}) }()
	for ev := range w.ResultChan() {
		u, ok := ev.Object.(*unstructured.Unstructured)
		if !ok || ev.Type == watch.Deleted {
			continue
		}
		at := float64(time.Since(start).Microseconds()) / 1000
		var tf crd.Traceflow
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &tf); err != nil {
			return 0, tl, err
		}
		tl.see(at, &tf)
		switch tf.Status.Phase {
		case crd.Succeeded:
			return at, tl, nil
		case crd.Failed:
			return 0, tl, fmt.Errorf("traceflow %s failed: %s", name, tf.Status.Reason)
		}
	}
	return 0, tl, fmt.Errorf("traceflow %s: no verdict: %w", name, ctx.Err())
}

// timeline is when the client's watch saw each step of one trace, in ms
// from the create request: each is a status write (and its watch event).
type timeline struct {
	tagged   float64 // the controller's Running, with the tag
	firstAck float64 // the first node's flowsInstalled
	acked    float64 // every node of status.nodes installed its copies
	observed float64 // the first observations (after the injection)
	verdict  float64 // Succeeded
	events   int     // watch events until the verdict: status writes
}

func (tl *timeline) see(at float64, tf *crd.Traceflow) {
	tl.events++
	st := tf.Status
	if tl.tagged == 0 && st.Phase == crd.Running && st.DataplaneTag > 0 {
		tl.tagged = at
	}
	acked, some, obs := len(st.Nodes) > 0, false, false
	for _, n := range st.Nodes {
		installed := false
		for _, r := range st.Results {
			if r.Node == n && r.FlowsInstalled {
				installed = true
			}
		}
		acked = acked && installed
		some = some || installed
	}
	for _, r := range st.Results {
		obs = obs || len(r.Observations) > 0
	}
	if tl.firstAck == 0 && some {
		tl.firstAck = at
	}
	if tl.acked == 0 && acked {
		tl.acked = at
	}
	if tl.observed == 0 && obs {
		tl.observed = at
	}
	if st.Phase == crd.Succeeded {
		tl.verdict = at
	}
}

// breakdown is the median and p95 of each step of the traces, as the time
// from the step before.
func breakdown(tls []timeline) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "  %-48s %8s %8s\n", "step (from the one before)", "p50 ms", "p95 ms")
	for _, st := range []struct {
		name string
		d    func(timeline) float64
	}{
		{"create -> Running with tag (controller)", func(t timeline) float64 { return t.tagged }},
		{"-> first node's flowsInstalled (agent)", func(t timeline) float64 { return t.firstAck - t.tagged }},
		{"-> every node's flowsInstalled", func(t timeline) float64 { return t.acked - t.firstAck }},
		{"-> first observations (inject, packet-in, write)", func(t timeline) float64 { return t.observed - t.acked }},
		{"-> Succeeded (controller's verdict)", func(t timeline) float64 { return t.verdict - t.observed }},
		{"total", func(t timeline) float64 { return t.verdict }},
		{"watch events (status writes) per trace", func(t timeline) float64 { return float64(t.events) }},
	} {
		var v []float64
		for _, t := range tls {
			v = append(v, st.d(t))
		}
		s := benchutil.Summarize(v)
		fmt.Fprintf(&sb, "  %-48s %8.1f %8.1f\n", st.name, s.Percentile(50), s.Percentile(95))
	}
	return sb.String()
}

// writeWatch creates a ConfigMap and returns the time until a watch
// delivers it, then deletes it.
func writeWatch(ctx context.Context, cs kubernetes.Interface, name string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 40*time.Second)
	defer cancel()
	cms := cs.CoreV1().ConfigMaps("default")
	w, err := cms.Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + name})
	if err != nil {
		return 0, err
	}
	defer w.Stop()
	start := time.Now()
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"k": "v"}}, metav1.CreateOptions{}); err != nil {
		return 0, err
	}
	defer func() { _ = cms.Delete(context.Background(), name, metav1.DeleteOptions{}) }()
	for ev := range w.ResultChan() {
		if ev.Type == watch.Added {
			return float64(time.Since(start).Microseconds()) / 1000, nil
		}
	}
	return 0, fmt.Errorf("configmap %s: no watch event: %w", name, ctx.Err())
}
