// Package controller benchmarks seine-controller's NetworkPolicy computation
// from a cold start. Each workload runs in a fresh process (the benchmark
// re-executes its own test binary) so the peak RSS reported is that
// workload's alone.
package controller

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"

	"github.com/seine-cni/seine/core/controller"
)

const (
	envWorkload = "SEINE_BENCH_CONTROLLER_WORKLOAD"
	envMode     = "SEINE_BENCH_CONTROLLER_MODE" // "controller", "floor" or "lists"
	// envHeap names a file for a heap profile taken when the computation
	// is done, before anything is released (for pprof).
	envHeap = "SEINE_BENCH_CONTROLLER_HEAPPROFILE"
)

// BenchmarkColdStart runs every workload in a child process, in three
// modes: "controller" computes everything; "floor" only syncs plain
// informers over the same fake clientset, what any informer-based
// controller pays before computing anything; "lists" only lists pods,
// namespaces and policies once through the fake clientset's typed clients,
// at the same time, with no informer: what the harness itself costs.
func BenchmarkColdStart(b *testing.B) {
	for i, w := range workloads {
		for _, mode := range []string{"controller", "floor", "lists"} {
			b.Run(w.name+"/"+mode, func(b *testing.B) {
				for range b.N {
					r := runChild(b, i, mode)
					b.ReportMetric(r.elapsed.Seconds(), "s/coldstart")
					b.ReportMetric(float64(r.hwmKiB)/(1<<20), "GiB-peak-RSS")
					b.ReportMetric(float64(r.loadHWMKiB)/(1<<20), "GiB-RSS-after-load")
					if mode == "controller" {
						b.Logf("%s: %.2f s (target <= %.2f s), peak RSS %.2f GiB (target <= %.2f GiB); fake clientset loaded in %.2f s at %.2f GiB",
							w.name, r.elapsed.Seconds(), w.targetSec, float64(r.hwmKiB)/(1<<20), w.targetGiB,
							r.load.Seconds(), float64(r.loadHWMKiB)/(1<<20))
					} else {
						b.Logf("%s %s: %.2f s, peak RSS %.2f GiB", w.name, mode, r.elapsed.Seconds(), float64(r.hwmKiB)/(1<<20))
					}
				}
			})
		}
	}
}

type result struct {
	elapsed, load      time.Duration
	hwmKiB, loadHWMKiB int64
}

func runChild(b *testing.B, workload int, mode string) result {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestColdStartChild$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", envWorkload, workload), envMode+"="+mode)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		b.Fatalf("child: %v\n%s", err, out.String())
	}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "RESULT ") {
			continue
		}
		var r result
		var el, ld int64
		if _, err := fmt.Sscanf(line, "RESULT elapsed_ns=%d load_ns=%d hwm_kib=%d load_hwm_kib=%d", &el, &ld, &r.hwmKiB, &r.loadHWMKiB); err != nil {
			b.Fatalf("parse %q: %v", line, err)
		}
		r.elapsed, r.load = time.Duration(el), time.Duration(ld)
		return r
	}
	b.Fatalf("child printed no result:\n%s", out.String())
	return result{}
}

// TestColdStartChild is the child side of BenchmarkColdStart.
func TestColdStartChild(t *testing.T) {
	ws := os.Getenv(envWorkload)
	if ws == "" {
		t.Skip("runs only as a child process of BenchmarkColdStart (" + envWorkload + " unset)")
	}
	i, err := strconv.Atoi(ws)
	if err != nil || i < 0 || i >= len(workloads) {
		t.Fatalf("bad %s=%q", envWorkload, ws)
	}
	w := workloads[i]

	start := time.Now()
	client := fake.NewSimpleClientset()
	tracker := client.Tracker()
	w.generate(func(o kruntime.Object) {
		if err := tracker.Add(o); err != nil {
			t.Fatalf("load: %v", err)
		}
	})
	load := time.Since(start)
	runtime.GC()
	loadHWM := vmHWM(t)

	ctx, cancel := context.WithCancel(context.Background())
	factory := informers.NewSharedInformerFactory(client, 0)
	defer func() {
		cancel()
		factory.Shutdown()
	}()
	start = time.Now()
	switch os.Getenv(envMode) {
	case "lists":
		listAll(ctx, t, client)
		report(t, time.Since(start), load, loadHWM)
		return
	case "floor":
		synced := []cache.InformerSynced{
			factory.Core().V1().Pods().Informer().HasSynced,
			factory.Core().V1().Namespaces().Informer().HasSynced,
			factory.Networking().V1().NetworkPolicies().Informer().HasSynced,
		}
		factory.Start(ctx.Done())
		if !cache.WaitForCacheSync(ctx.Done(), synced...) {
			t.Fatal("informers did not sync")
		}
		report(t, time.Since(start), load, loadHWM)
		writeHeapProfile(t)
		return
	}

	c, err := controller.New(factory, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	factory.Start(ctx.Done())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !(c.NetworkPolicies.Len() == w.wantNPs && c.AppliedToGroups.Len() == w.wantATGs &&
		c.AddressGroups.Len() == w.wantAGs && c.Idle()) {
		select {
		case err := <-done:
			t.Fatalf("controller stopped: %v", err)
		case <-tick.C:
		}
	}
	elapsed := time.Since(start)
	report(t, elapsed, load, loadHWM)
	writeHeapProfile(t)

	// Check what was computed (after the measurement).
	members, empty := 0, 0
	for _, it := range c.AppliedToGroups.List("") {
		members += len(it.Object.Members)
		if it.Span.Len() == 0 {
			empty++
		}
	}
	for _, it := range c.AddressGroups.List("") {
		members += len(it.Object.Members)
		if it.Span.Len() == 0 {
			empty++
		}
	}
	for _, it := range c.NetworkPolicies.List("") {
		if it.Span.Len() == 0 {
			empty++
		}
	}
	if empty > 0 {
		t.Errorf("%d objects have an empty span", empty)
	}
	if members != w.wantMembers {
		t.Errorf("%d group members, want %d", members, w.wantMembers)
	}
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
}

// listAll lists pods, namespaces and policies once each, concurrently, as
// three informers starting together would, and keeps nothing.
func listAll(ctx context.Context, t *testing.T, client *fake.Clientset) {
	lists := []func() (int, error){
		func() (int, error) {
			l, err := client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
			if err != nil {
				return 0, err
			}
			return len(l.Items), nil
		},
		func() (int, error) {
			l, err := client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
			if err != nil {
				return 0, err
			}
			return len(l.Items), nil
		},
		func() (int, error) {
			l, err := client.NetworkingV1().NetworkPolicies("").List(ctx, metav1.ListOptions{})
			if err != nil {
				return 0, err
			}
			return len(l.Items), nil
		},
	}
	errs := make(chan error, len(lists))
	for _, list := range lists {
		go func() {
			n, err := list()
			if err == nil && n == 0 {
				err = fmt.Errorf("listed nothing")
			}
			errs <- err
		}()
	}
	for range lists {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func report(t *testing.T, elapsed, load time.Duration, loadHWM int64) {
	fmt.Printf("RESULT elapsed_ns=%d load_ns=%d hwm_kib=%d load_hwm_kib=%d\n", elapsed.Nanoseconds(), load.Nanoseconds(), vmHWM(t), loadHWM)
}

// vmHWM is the process's peak resident set size in KiB.
func vmHWM(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatalf("peak RSS needs /proc/self/status: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("parse VmHWM %q: %v", v, err)
			}
			return kib
		}
	}
	t.Fatal("no VmHWM in /proc/self/status")
	return 0
}

func writeHeapProfile(t *testing.T) {
	path := os.Getenv(envHeap)
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	runtime.GC() // the profile shows the heap as of the last collection
	if err := pprof.WriteHeapProfile(f); err != nil {
		t.Fatal(err)
	}
}
