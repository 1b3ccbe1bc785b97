// Package controller benchmarks seine-controller's NetworkPolicy computation
// from a cold start. Each workload runs in a fresh process (the benchmark
// re-executes its own test binary) so the peak RSS reported is that
// workload's alone.
package controller

import (
	"bufio"
	"bytes"
	"context"
	"errors"
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
	"github.com/seine-cni/seine/test/bench/benchutil"
)

const (
	envWorkload = "SEINE_BENCH_CONTROLLER_WORKLOAD"
	envScale    = "SEINE_BENCH_CONTROLLER_SCALE"
	envMode     = "SEINE_BENCH_CONTROLLER_MODE" // "controller", "floor" or "lists"
	// envHeap names a file for a heap profile taken when the computation
	// is done, before anything is released (for pprof).
	envHeap = "SEINE_BENCH_CONTROLLER_HEAPPROFILE"
)

// BenchmarkColdStart runs every workload in a child process, in three
// modes, in rounds whose order rotates: "controller" computes everything;
// "floor" only syncs plain informers over the same fake clientset, what
// any informer-based controller pays before computing anything; "lists"
// only lists pods, namespaces and policies once through the fake
// clientset's typed clients, at the same time, with no informer: what the
// harness itself costs. It reports min and median of each mode and the
// ratios controller/floor and controller/lists, of the time and of the
// peak RSS. Under -short the workloads are 100 times smaller.
func BenchmarkColdStart(b *testing.B) {
	scale := 1
	if testing.Short() {
		scale = shortScale
	}
	for i, w := range workloadsAt(scale) {
		b.Run(w.name, func(b *testing.B) {
			side := func(mode string) benchutil.Side {
				return benchutil.Side{Name: mode, Run: func(int) (benchutil.Sample, error) {
					r, err := runChild(i, scale, mode)
					if err != nil {
						return nil, err
					}
					return benchutil.Sample{"s": r.elapsed.Seconds(), "GiB-peak-RSS": float64(r.hwmKiB) / (1 << 20)}, nil
				}}
			}
			for b.Loop() {
				r, err := benchutil.Comparison{
					Name:    fmt.Sprintf("cold start, workload %s (objects / %d)", w.name, scale),
					Metrics: []string{"s", "GiB-peak-RSS"},
					Sides:   []benchutil.Side{side("controller"), side("floor"), side("lists")},
					Rounds:  3,
				}.Run()
				if err != nil {
					b.Fatal(err)
				}
				r.Report(b)
				if scale == 1 {
					b.Logf("%s: controller median %.2f s (target <= %.2f s), peak RSS %.2f GiB (target <= %.2f GiB)",
						w.name, r.Stats("controller", "s").Median, w.targetSec, r.Stats("controller", "GiB-peak-RSS").Median, w.targetGiB)
				}
			}
		})
	}
}

type result struct {
	elapsed, load      time.Duration
	hwmKiB, loadHWMKiB int64
}

// runChild runs one workload in one mode in a fresh process: this test
// binary again, which TestMain turns into coldStartChild.
func runChild(workload, scale int, mode string) (result, error) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", envWorkload, workload), fmt.Sprintf("%s=%d", envScale, scale), envMode+"="+mode)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return result{}, fmt.Errorf("child (workload %d, %s): %v\n%s", workload, mode, err, out.String())
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
			return result{}, fmt.Errorf("parse %q: %w", line, err)
		}
		r.elapsed, r.load = time.Duration(el), time.Duration(ld)
		return r, nil
	}
	return result{}, fmt.Errorf("child printed no result:\n%s", out.String())
}

// coldStartChild is the child side of BenchmarkColdStart: it loads the
// workload named by the environment, runs the mode, prints a RESULT line,
// and returns the exit code.
func coldStartChild() int {
	if err := coldStart(); err != nil {
		fmt.Fprintln(os.Stderr, "cold start:", err)
		return 1
	}
	return 0
}

func coldStart() error {
	i, err := strconv.Atoi(os.Getenv(envWorkload))
	scale, serr := strconv.Atoi(os.Getenv(envScale))
	if serr != nil || scale < 1 {
		return fmt.Errorf("bad %s=%q", envScale, os.Getenv(envScale))
	}
	ws := workloadsAt(scale)
	if err != nil || i < 0 || i >= len(ws) {
		return fmt.Errorf("bad %s=%q", envWorkload, os.Getenv(envWorkload))
	}
	w := ws[i]

	start := time.Now()
	client := fake.NewSimpleClientset()
	tracker := client.Tracker()
	var loadErr error
	w.generate(func(o kruntime.Object) {
		if err := tracker.Add(o); err != nil && loadErr == nil {
			loadErr = fmt.Errorf("load: %w", err)
		}
	})
	if loadErr != nil {
		return loadErr
	}
	load := time.Since(start)
	runtime.GC()
	loadHWM, err := vmHWM()
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(context.Background())
	factory := informers.NewSharedInformerFactory(client, 0)
	defer func() {
		cancel()
		factory.Shutdown()
	}()
	start = time.Now()
	switch mode := os.Getenv(envMode); mode {
	case "lists":
		if err := listAll(ctx, client); err != nil {
			return err
		}
		return report(time.Since(start), load, loadHWM)
	case "floor":
		synced := []cache.InformerSynced{
			factory.Core().V1().Pods().Informer().HasSynced,
			factory.Core().V1().Namespaces().Informer().HasSynced,
			factory.Networking().V1().NetworkPolicies().Informer().HasSynced,
		}
		factory.Start(ctx.Done())
		// Polled every millisecond, as the controller mode polls for its
		// result (cache.WaitForCacheSync polls every 100 ms).
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for !synced[0]() || !synced[1]() || !synced[2]() {
			<-tick.C
		}
		if err := report(time.Since(start), load, loadHWM); err != nil {
			return err
		}
		return writeHeapProfile()
	case "controller":
	default:
		return fmt.Errorf("bad %s=%q", envMode, mode)
	}

	c, err := controller.New(factory, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return err
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
			return fmt.Errorf("controller stopped: %v", err)
		case <-tick.C:
		}
	}
	elapsed := time.Since(start)
	if err := report(elapsed, load, loadHWM); err != nil {
		return err
	}
	if err := writeHeapProfile(); err != nil {
		return err
	}

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
	var errs []error
	if empty > 0 {
		errs = append(errs, fmt.Errorf("%d objects have an empty span", empty))
	}
	if members != w.wantMembers {
		errs = append(errs, fmt.Errorf("%d group members, want %d", members, w.wantMembers))
	}
	cancel()
	if err := <-done; err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// listAll lists pods, namespaces and policies once each, concurrently, as
// three informers starting together would, and keeps nothing.
func listAll(ctx context.Context, client *fake.Clientset) error {
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
	var all []error
	for range lists {
		all = append(all, <-errs)
	}
	return errors.Join(all...)
}

func report(elapsed, load time.Duration, loadHWM int64) error {
	hwm, err := vmHWM()
	if err != nil {
		return err
	}
	fmt.Printf("RESULT elapsed_ns=%d load_ns=%d hwm_kib=%d load_hwm_kib=%d\n", elapsed.Nanoseconds(), load.Nanoseconds(), hwm, loadHWM)
	return nil
}

// vmHWM is the process's peak resident set size in KiB.
func vmHWM() (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("peak RSS needs /proc/self/status: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse VmHWM %q: %w", v, err)
			}
			return kib, nil
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/self/status")
}

func writeHeapProfile() error {
	path := os.Getenv(envHeap)
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC() // the profile shows the heap as of the last collection
	return errors.Join(pprof.WriteHeapProfile(f), f.Close())
}
