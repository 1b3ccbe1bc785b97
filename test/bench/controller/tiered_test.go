package controller

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic/dynamicinformer"
	dynfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	crdv1 "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/core/controller"
	"github.com/seine-cni/seine/core/tiers"
	"github.com/seine-cni/seine/test/bench/benchutil"
)

// envTiered runs this test binary as a child of BenchmarkTieredColdStart
// in the mode it names ("controller" or "floor").
const envTiered = "SEINE_BENCH_CONTROLLER_TIERED"

// The tiered workload: 10,000 ClusterNetworkPolicies over the six
// built-in tiers, on 1,000 namespaces of 10 pods (10,000 pods).
const (
	tieredNamespaces = 1000
	tieredPods       = 10
	tieredPolicies   = 10000
)

// BenchmarkTieredColdStart is issue 16's controller benchmark: the cold
// start of seine-controller with 10,000 ClusterNetworkPolicies spread over
// the six built-in tiers (each applied to the pods of one label in the
// namespaces of one team, one rule from another team's namespaces on one
// port, Allow or Drop), against the floor measured in the same rounds:
// the same informers (pods, namespaces, NetworkPolicies, tiers,
// ClusterNetworkPolicies) synced with no controller. Each run is a fresh
// process (peak RSS its own). The controller side also times one policy
// change after the cold start: one ClusterNetworkPolicy moved to another
// priority, until the controller's internal policy carries it. Under
// -short the workload is 100 times smaller.
func BenchmarkTieredColdStart(b *testing.B) {
	scale := 1
	if testing.Short() {
		scale = shortScale
	}
	var changes []float64
	side := func(mode string) benchutil.Side {
		return benchutil.Side{Name: mode, Run: func(int) (benchutil.Sample, error) {
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), envTiered+"="+mode, fmt.Sprintf("%s=%d", envScale, scale))
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Run(); err != nil {
				return nil, fmt.Errorf("child (%s): %v\n%s", mode, err, out.String())
			}
			var el, ch, hwm int64
			for _, l := range strings.Split(out.String(), "\n") {
				if _, err := fmt.Sscanf(strings.TrimSpace(l), "RESULT elapsed_ns=%d change_ns=%d hwm_kib=%d", &el, &ch, &hwm); err == nil {
					if mode == "controller" {
						changes = append(changes, float64(ch)/1e6)
					}
					return benchutil.Sample{"s": float64(el) / 1e9, "GiB-peak-RSS": float64(hwm) / (1 << 20)}, nil
				}
			}
			return nil, fmt.Errorf("child (%s) printed no result:\n%s", mode, out.String())
		}}
	}
	for b.Loop() {
		r, err := benchutil.Comparison{
			Name:    fmt.Sprintf("tiered cold start, %d ClusterNetworkPolicies over 6 tiers", tieredPolicies/scale),
			Metrics: []string{"s", "GiB-peak-RSS"},
			Sides:   []benchutil.Side{side("controller"), side("floor")},
			Rounds:  3,
		}.Run()
		if err != nil {
			b.Fatal(err)
		}
		r.Report(b)
	}
	slices.Sort(changes)
	if len(changes) > 0 {
		b.ReportMetric(changes[len(changes)/2], "change-ms-median")
		b.Logf("one ClusterNetworkPolicy moved after the cold start: %v ms", changes)
	}
}

// tieredChild is the child side of BenchmarkTieredColdStart.
func tieredChild() int {
	if err := tieredColdStart(os.Getenv(envTiered)); err != nil {
		fmt.Fprintln(os.Stderr, "tiered cold start:", err)
		return 1
	}
	return 0
}

func tieredColdStart(mode string) error {
	scale, err := strconv.Atoi(os.Getenv(envScale))
	if err != nil || scale < 1 {
		return fmt.Errorf("bad %s=%q", envScale, os.Getenv(envScale))
	}
	nss, nps := tieredNamespaces/scale, tieredPolicies/scale
	client := fake.NewSimpleClientset()
	g := newGen()
	for n := range nss {
		ns := g.namespace(fmt.Sprintf("ns-%d", n))
		ns.Labels["team"] = fmt.Sprintf("t-%d", n%100)
		if err := client.Tracker().Add(ns); err != nil {
			return err
		}
		for i := range tieredPods {
			if err := client.Tracker().Add(g.pod(ns.Name, fmt.Sprintf("pod-%d", i), "app", fmt.Sprintf("a-%d", i))); err != nil {
				return err
			}
		}
	}
	var objs []kruntime.Object
	for i := range nps {
		objs = append(objs, tieredPolicy(i, float64(i/len(tiers.BuiltIn))))
	}
	dyn := dynfake.NewSimpleDynamicClientWithCustomListKinds(kruntime.NewScheme(), map[schema.GroupVersionResource]string{
		crdv1.ClusterNetworkPoliciesResource: "ClusterNetworkPolicyList", crdv1.TiersResource: "TierList",
	}, objs...)
	runtime.GC()

	ctx, cancel := context.WithCancel(context.Background())
	factory := informers.NewSharedInformerFactory(client, 0)
	df := dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0)
	defer func() {
		cancel()
		factory.Shutdown()
		df.Shutdown()
	}()
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	if mode == "floor" {
		synced := []func() bool{
			factory.Core().V1().Pods().Informer().HasSynced,
			factory.Core().V1().Namespaces().Informer().HasSynced,
			factory.Networking().V1().NetworkPolicies().Informer().HasSynced,
			df.ForResource(crdv1.ClusterNetworkPoliciesResource).Informer().HasSynced,
			df.ForResource(crdv1.TiersResource).Informer().HasSynced,
		}
		factory.Start(ctx.Done())
		df.Start(ctx.Done())
		for slices.ContainsFunc(synced, func(f func() bool) bool { return !f() }) {
			<-tick.C
		}
		return tieredReport(time.Since(start), 0)
	}
	if mode != "controller" {
		return fmt.Errorf("bad %s=%q", envTiered, mode)
	}
	c, err := controller.New(factory, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return err
	}
	if err := c.AddTiered(df); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	df.Start(ctx.Done())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	for c.NetworkPolicies.Len() != nps || !c.Idle() {
		select {
		case err := <-done:
			return fmt.Errorf("controller stopped: %v", err)
		case <-tick.C:
		}
	}
	elapsed := time.Since(start)

	// One change: the middle policy moves to the front of its tier.
	moved := tieredPolicy(nps/2, -1)
	start = time.Now()
	if _, err := dyn.Resource(crdv1.ClusterNetworkPoliciesResource).Update(ctx, moved, metav1.UpdateOptions{}); err != nil {
		return err
	}
	for {
		if it, ok := c.NetworkPolicies.Get(string(moved.GetUID())); ok && it.Object.Priority != nil && *it.Object.Priority == -1 && c.Idle() {
			break
		}
		select {
		case err := <-done:
			return fmt.Errorf("controller stopped: %v", err)
		case <-tick.C:
		}
	}
	return tieredReport(elapsed, time.Since(start))
}

func tieredReport(elapsed, change time.Duration) error {
	hwm, err := vmHWM()
	if err != nil {
		return err
	}
	fmt.Printf("RESULT elapsed_ns=%d change_ns=%d hwm_kib=%d\n", elapsed.Nanoseconds(), change.Nanoseconds(), hwm)
	return nil
}

// tieredPolicy is the i-th ClusterNetworkPolicy of the workload, in
// built-in tier i%6 at prio: applied to the pods app=a-<i%10> of team
// t-<i%100>'s namespaces, one ingress rule (Allow for even i, Drop for
// odd) from team t-<(i+1)%100>'s namespaces on TCP port 8000+i%100.
func tieredPolicy(i int, prio float64) *unstructured.Unstructured {
	action := "Allow"
	if i%2 == 1 {
		action = "Drop"
	}
	team := func(k int) map[string]any {
		return map[string]any{"matchLabels": map[string]any{"team": fmt.Sprintf("t-%d", k%100)}}
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": crdv1.SchemeGroupVersion.String(), "kind": "ClusterNetworkPolicy",
		"metadata": map[string]any{"name": fmt.Sprintf("cnp-%d", i), "uid": fmt.Sprintf("cnp-uid-%d", i), "generation": int64(1)},
		"spec": map[string]any{
			"tier":     tiers.BuiltIn[i%len(tiers.BuiltIn)].Name,
			"priority": prio,
			"appliedTo": []any{map[string]any{
				"namespaceSelector": team(i),
				"podSelector":       map[string]any{"matchLabels": map[string]any{"app": fmt.Sprintf("a-%d", i%10)}},
			}},
			"ingress": []any{map[string]any{
				"action": action,
				"from":   []any{map[string]any{"namespaceSelector": team(i + 1)}},
				"ports":  []any{map[string]any{"protocol": string(corev1.ProtocolTCP), "port": int64(8000 + i%100)}},
			}},
		},
	}}
	u.SetUID(types.UID(fmt.Sprintf("cnp-uid-%d", i)))
	return u
}
