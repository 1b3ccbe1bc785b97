package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	crd "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
)

// fakeTraceflowCluster answers every new Traceflow as seine-controller and
// the agents would, with status (after two polls), and records the specs.
type fakeTraceflowCluster struct {
	dyn    *dynfake.FakeDynamicClient
	status crd.TraceflowStatus
	mu     sync.Mutex
	specs  []crd.TraceflowSpec
}

func (c *fakeTraceflowCluster) run(ctx context.Context) {
	res := c.dyn.Resource(crd.TraceflowsResource)
	seen := map[string]int{}
	for ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
		l, err := res.List(ctx, metav1.ListOptions{})
		if err != nil {
			continue
		}
		for _, u := range l.Items {
			var tf crd.Traceflow
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &tf); err != nil || tf.Status.Phase != "" {
				continue
			}
			if seen[tf.Name]++; seen[tf.Name] == 1 {
				c.mu.Lock()
				c.specs = append(c.specs, tf.Spec)
				c.mu.Unlock()
				continue // Running for a while first
			}
			tf.Status = c.status
			obj, _ := runtime.DefaultUnstructuredConverter.ToUnstructured(&tf)
			_, _ = res.Update(ctx, &unstructured.Unstructured{Object: obj}, metav1.UpdateOptions{})
		}
	}
}

func (c *fakeTraceflowCluster) lastSpec() crd.TraceflowSpec {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.specs) == 0 {
		return crd.TraceflowSpec{}
	}
	return c.specs[len(c.specs)-1]
}

var delivered = crd.TraceflowStatus{Phase: crd.Succeeded, DataplaneTag: 3, SourceNode: "node-1", Nodes: []string{"node-1", "node-2"},
	SrcIP: "10.244.1.10", DstIP: "10.244.2.11", DstPort: 8080,
	Results: []crd.NodeResult{
		{Node: "node-2", FlowsInstalled: true, Observations: []crd.Observation{
			{Component: crd.ComponentClassification, ComponentInfo: "from tunnel", Table: "Classifier", Action: crd.ActionReceived},
			{Component: crd.ComponentForwarding, Table: "Output", Action: crd.ActionDelivered, OutputPort: "5"}}},
		{Node: "node-1", FlowsInstalled: true, Observations: []crd.Observation{
			{Component: crd.ComponentSpoofGuard, Table: "SpoofGuard", Action: crd.ActionForwarded},
			{Component: crd.ComponentForwarding, Table: "Output", Action: crd.ActionForwarded, TunnelDstIP: "192.168.77.12", OutputPort: "1"}}},
	}}

func newFakeTraceflowCluster(t *testing.T, status crd.TraceflowStatus) (*fakeTraceflowCluster, *kubefake.Clientset) {
	kube := kubefake.NewClientset(
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web-0"}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "db-0"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"}})
	c := &fakeTraceflowCluster{status: status,
		dyn: dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{crd.TraceflowsResource: "TraceflowList"})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return c, kube
}

func (c *fakeTraceflowCluster) count(t *testing.T) int {
	l, err := c.dyn.Resource(crd.TraceflowsResource).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return len(l.Items)
}

// TestTraceflowCommand runs seinectl traceflow against fake clients
// standing for the kube-apiserver, seine-controller and the agents: the
// spec it creates from its flags, the hop-by-hop output in path order with
// the verdict, JSON output, the Traceflow deleted afterwards (kept with
// --keep), and exit codes for a failed trace and for bad flags.
func TestTraceflowCommand(t *testing.T) {
	c, kube := newFakeTraceflowCluster(t, delivered)
	var out bytes.Buffer
	o := traceflowOptions{source: "web-0", destination: "prod/db-0", protocol: "tcp", dstPort: 8080, timeout: 5, output: formatTable}
	if err := traceflowRun(context.Background(), c.dyn, kube, o, &out, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	want := crd.TraceflowSpec{Source: crd.Source{Namespace: "default", Pod: "web-0"}, Destination: crd.Destination{Namespace: "prod", Pod: "db-0"},
		Packet: crd.Packet{Protocol: "TCP", DstPort: 8080}, Timeout: 5}
	if got := c.lastSpec(); got != want {
		t.Errorf("created spec %+v, want %+v", got, want)
	}
	text := out.String()
	for _, w := range []string{"default/web-0 -> prod/db-0 (injected packet)", "TCP 10.244.1.10 -> 10.244.2.11:8080, tag 3",
		"verdict: Succeeded: Delivered on node-2", "tunnel to 192.168.77.12, port 1", "from tunnel"} {
		if !strings.Contains(text, w) {
			t.Errorf("output lacks %q:\n%s", w, text)
		}
	}
	if strings.Index(text, "\nnode-1\n") > strings.Index(text, "\nnode-2\n") {
		t.Errorf("nodes not in path order (node-1 first):\n%s", text)
	}
	if n := c.count(t); n != 0 {
		t.Errorf("%d Traceflows left after the command", n)
	}

	// A Service, live traffic, JSON, kept.
	out.Reset()
	o = traceflowOptions{source: "default/web-0", destination: "default/web", live: true, timeout: 20, keep: true, output: formatJSON}
	if err := traceflowRun(context.Background(), c.dyn, kube, o, &out, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	var tf crd.Traceflow
	if err := json.Unmarshal(out.Bytes(), &tf); err != nil || tf.Status.Phase != crd.Succeeded || tf.Kind != "Traceflow" {
		t.Errorf("-o json: %v %+v\n%s", err, tf, out.String())
	}
	if s := c.lastSpec(); s.Destination.Service != "web" || !s.LiveTraffic || s.Packet.Protocol != "" {
		t.Errorf("service spec %+v", s)
	}
	if n := c.count(t); n != 1 {
		t.Errorf("%d Traceflows after --keep, want 1", n)
	}

	for name, tc := range map[string]struct {
		o    traceflowOptions
		code int
		want string
	}{
		"unknown destination": {traceflowOptions{source: "web-0", destination: "default/nope", timeout: 20}, 1, "no pod or service of that name"},
		"timeout":             {traceflowOptions{source: "web-0", destination: "10.0.0.1", timeout: 301}, 2, "timeout 301 s out of range 1-300"},
		"dropped only":        {traceflowOptions{source: "web-0", destination: "10.0.0.1", timeout: 20, droppedOnly: true}, 2, "droppedOnly needs liveTraffic"},
		"ip source":           {traceflowOptions{source: "10.0.0.9", destination: "10.0.0.1", timeout: 20}, 2, "live traffic only"},
	} {
		err := traceflowRun(context.Background(), c.dyn, kube, tc.o, &out, time.Millisecond)
		var ee *exitError
		if err == nil || !strings.Contains(err.Error(), tc.want) || tc.code == 2 && (!errors.As(err, &ee) || ee.code != 2) {
			t.Errorf("%s: %v, want %q (exit %d)", name, err, tc.want, tc.code)
		}
	}
}

// TestTraceflowCommandFailed: a trace without a verdict prints its reason
// and exits 1.
func TestTraceflowCommandFailed(t *testing.T) {
	c, kube := newFakeTraceflowCluster(t, crd.TraceflowStatus{Phase: crd.Failed, Reason: "timed out after 2s: no live packet matched"})
	var out bytes.Buffer
	o := traceflowOptions{destination: "prod/db-0", live: true, timeout: 2, output: formatTable}
	err := traceflowRun(context.Background(), c.dyn, kube, o, &out, time.Millisecond)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 || !strings.Contains(err.Error(), "no live packet matched") {
		t.Errorf("failed trace: %v", err)
	}
	if !strings.Contains(out.String(), "any source -> prod/db-0 (live traffic)") || !strings.Contains(out.String(), "verdict: Failed: timed out") {
		t.Errorf("output:\n%s", out.String())
	}
}
