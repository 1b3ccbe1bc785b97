package traceflow

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	crd "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

// testController is a Controller whose informer store the test fills and
// whose status writes are recorded.
type testController struct {
	*Controller
	t       *testing.T
	applied map[string]crd.TraceflowStatus
	now     time.Time
}

func pod(ns, name, node, ip string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{NodeName: node}, Status: corev1.PodStatus{PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}}
}

func newTestController(t *testing.T) *testController {
	kube := kubefake.NewClientset(
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-2"}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-3"}},
		pod("default", "a", "node-1", "10.244.1.10"),
		pod("default", "b", "node-2", "10.244.2.10"),
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "host"}, Spec: corev1.PodSpec{NodeName: "node-1", HostNetwork: true}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
			Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", Ports: []corev1.ServicePort{{Port: 53, Protocol: corev1.ProtocolUDP}, {Port: 80, Protocol: corev1.ProtocolTCP}}}},
		&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web-x", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.3.10"}, NodeName: ptr.To("node-3")}, {Addresses: []string{"10.244.2.11"}, NodeName: ptr.To("node-2")}}},
	)
	dyn := dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{crd.TraceflowsResource: "TraceflowList"})
	tc := &testController{Controller: NewController(dyn, kube, slog.New(slog.NewTextHandler(io.Discard, nil))), t: t,
		applied: map[string]crd.TraceflowStatus{}, now: time.Unix(1_000_000, 0)}
	tc.Controller.now = func() time.Time { return tc.now }
	tc.Controller.apply = func(_ context.Context, name string, st *crd.TraceflowStatus) error {
		tc.applied[name] = *st.DeepCopy()
		tc.set(name, func(tf *crd.Traceflow) {
			results := tf.Status.Results
			tf.Status = *st.DeepCopy()
			tf.Status.Results = results
		})
		return nil
	}
	return tc
}

// add puts a Traceflow created now into the store.
func (tc *testController) add(name string, spec crd.TraceflowSpec) {
	tf := &crd.Traceflow{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name), CreationTimestamp: metav1.NewTime(tc.now)}, Spec: spec}
	tc.store(tf)
}

func (tc *testController) store(tf *crd.Traceflow) {
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(tf)
	if err != nil {
		tc.t.Fatal(err)
	}
	if err := tc.inf.GetStore().Update(&unstructured.Unstructured{Object: u}); err != nil {
		tc.t.Fatal(err)
	}
}

func (tc *testController) get(name string) *crd.Traceflow {
	obj, ok, err := tc.inf.GetStore().GetByKey(name)
	if err != nil || !ok {
		tc.t.Fatalf("traceflow %s: %v %v", name, ok, err)
	}
	tf, err := fromUnstructured(obj)
	if err != nil {
		tc.t.Fatal(err)
	}
	return tf
}

func (tc *testController) set(name string, mod func(*crd.Traceflow)) {
	tf := tc.get(name)
	mod(tf)
	tc.store(tf)
}

func (tc *testController) sync(name string) crd.TraceflowStatus {
	tc.t.Helper()
	if err := tc.Controller.sync(context.Background(), name); err != nil {
		tc.t.Fatalf("sync %s: %v", name, err)
	}
	return tc.get(name).Status
}

func podSpec(dst crd.Destination) crd.TraceflowSpec {
	return crd.TraceflowSpec{Source: crd.Source{Namespace: "default", Pod: "a"}, Destination: dst}
}

func TestControllerTagsAndResolves(t *testing.T) {
	tc := newTestController(t)
	for _, c := range []struct {
		name        string
		dst         crd.Destination
		nodes       string
		dstIP       string
		dstPort     int32
		wantFailure string
	}{
		{"to-pod", crd.Destination{Namespace: "default", Pod: "b"}, "node-1,node-2", "10.244.2.10", 80, ""},
		{"to-svc", crd.Destination{Namespace: "default", Service: "web"}, "node-1,node-3,node-2", "10.96.0.10", 80, ""},
		{"to-ip", crd.Destination{IP: "8.8.8.8"}, "node-1", "8.8.8.8", 80, ""},
		{"no-pod", crd.Destination{Namespace: "default", Pod: "nope"}, "", "", 0, `destination pod default/nope`},
		{"host", crd.Destination{Namespace: "default", Pod: "host"}, "", "", 0, "uses the host's network"},
		{"bad", crd.Destination{Namespace: "default"}, "", "", 0, "exactly one of pod, service or ip"},
	} {
		tc.add(c.name, podSpec(c.dst))
		st := tc.sync(c.name)
		if c.wantFailure != "" {
			if st.Phase != crd.Failed || !strings.Contains(st.Reason, c.wantFailure) || st.DataplaneTag != 0 {
				t.Errorf("%s: %s %q tag %d, want Failed with %q", c.name, st.Phase, st.Reason, st.DataplaneTag, c.wantFailure)
			}
			continue
		}
		if st.Phase != crd.Running || st.DataplaneTag == 0 || st.SourceNode != "node-1" || strings.Join(st.Nodes, ",") != c.nodes ||
			st.SrcIP != "10.244.1.10" || st.DstIP != c.dstIP || st.DstPort != c.dstPort || st.StartTime == nil {
			t.Errorf("%s: status %+v", c.name, st)
		}
	}
	if tc.Running() != 3 {
		t.Errorf("%d tags held, want 3 (failed traces hold none)", tc.Running())
	}
}

func TestControllerVerdictAndTimeout(t *testing.T) {
	tc := newTestController(t)
	tc.add("ok", podSpec(crd.Destination{Namespace: "default", Pod: "b"}))
	tc.add("lost", podSpec(crd.Destination{Namespace: "default", Pod: "b"}))
	tc.sync("ok")
	tc.sync("lost")
	// Forwarded into the tunnel is not a verdict yet.
	fwd := crd.NodeResult{Node: "node-1", FlowsInstalled: true, Observations: []crd.Observation{
		{Component: crd.ComponentForwarding, Action: crd.ActionForwarded, TunnelDstIP: "192.168.0.2"}}}
	tc.set("ok", func(tf *crd.Traceflow) { tf.Status.Results = []crd.NodeResult{fwd} })
	if st := tc.sync("ok"); st.Phase != crd.Running {
		t.Fatalf("phase %s after a forward", st.Phase)
	}
	tc.set("ok", func(tf *crd.Traceflow) {
		tf.Status.Results = append(tf.Status.Results, crd.NodeResult{Node: "node-2", FlowsInstalled: true,
			Observations: []crd.Observation{{Component: crd.ComponentForwarding, Action: crd.ActionDelivered}}})
	})
	if st := tc.sync("ok"); st.Phase != crd.Succeeded || st.DataplaneTag == 0 {
		t.Errorf("after Delivered: %+v", st)
	}
	if _, ok := tc.applied["ok"]; !ok || tc.applied["ok"].Results != nil {
		t.Errorf("the controller applied results it does not own: %+v", tc.applied["ok"])
	}
	// 19.9 s in, "lost" still runs; at 20 s it fails, naming the node that
	// never installed its flows.
	tc.set("lost", func(tf *crd.Traceflow) { tf.Status.Results = []crd.NodeResult{fwd} })
	tc.now = tc.now.Add(19900 * time.Millisecond)
	if st := tc.sync("lost"); st.Phase != crd.Running {
		t.Fatalf("failed before its timeout: %+v", st)
	}
	tc.now = tc.now.Add(100 * time.Millisecond)
	st := tc.sync("lost")
	if st.Phase != crd.Failed || !strings.Contains(st.Reason, "node node-2 did not install") {
		t.Errorf("at the timeout: %s %q", st.Phase, st.Reason)
	}
	if tc.Running() != 0 {
		t.Errorf("%d tags held after both ended", tc.Running())
	}
}

func TestControllerRestartAndExhaustion(t *testing.T) {
	tc := newTestController(t)
	for i := range MaxTag {
		tc.add(fmt.Sprint("tf-", i), podSpec(crd.Destination{IP: "8.8.8.8"}))
		tc.sync(fmt.Sprint("tf-", i))
	}
	tc.add("one-more", podSpec(crd.Destination{IP: "8.8.8.8"}))
	if st := tc.sync("one-more"); st.Phase != crd.Pending || !strings.Contains(st.Reason, "waiting for a data-plane tag") {
		t.Errorf("64th trace: %s %q, want Pending", st.Phase, st.Reason)
	}
	// A restarted controller claims the running traces' tags back.
	restarted := newTestController(t)
	for _, obj := range tc.inf.GetStore().List() {
		if err := restarted.inf.GetStore().Add(obj); err != nil {
			t.Fatal(err)
		}
	}
	restarted.claimRunning()
	if restarted.Running() != MaxTag {
		t.Errorf("restarted controller holds %d tags, want %d", restarted.Running(), MaxTag)
	}
	// The first to finish frees a tag for the waiting one.
	restarted.set("tf-0", func(tf *crd.Traceflow) {
		tf.Status.Results = []crd.NodeResult{{Node: "node-1", Observations: []crd.Observation{{Component: crd.ComponentForwarding, Action: crd.ActionForwardedOutOfNetwork}}}}
	})
	restarted.sync("tf-0")
	if st := restarted.sync("one-more"); st.Phase != crd.Running {
		t.Errorf("waiting trace after a tag was freed: %s %q", st.Phase, st.Reason)
	}
}

// TestControllerLive: a live trace is tagged on its source pod's node, or
// on its destination pod's without one; without a destination it waits
// for every node; nothing is defaulted (no port means any port).
func TestControllerLive(t *testing.T) {
	tc := newTestController(t)
	for _, c := range []struct {
		name                    string
		spec                    crd.TraceflowSpec
		source, nodes, src, dst string
		dstPort                 int32
	}{
		{"anywhere", crd.TraceflowSpec{Source: crd.Source{Namespace: "default", Pod: "a"}},
			"node-1", "node-1,node-2,node-3", "10.244.1.10", "", 0},
		{"from-ip", crd.TraceflowSpec{Source: crd.Source{IP: "192.0.2.1"}, Destination: crd.Destination{Namespace: "default", Pod: "b"}, Packet: crd.Packet{Protocol: "TCP", DstPort: 8080}},
			"node-2", "node-2", "192.0.2.1", "10.244.2.10", 8080},
		{"from-anywhere", crd.TraceflowSpec{Destination: crd.Destination{Namespace: "default", Pod: "b"}, DroppedOnly: true},
			"node-2", "node-2", "", "10.244.2.10", 0},
		{"to-svc", crd.TraceflowSpec{Source: crd.Source{Namespace: "default", Pod: "a"}, Destination: crd.Destination{Namespace: "default", Service: "web"}, Packet: crd.Packet{Protocol: "UDP"}},
			"node-1", "node-1,node-3,node-2", "10.244.1.10", "10.96.0.10", 0},
	} {
		c.spec.LiveTraffic = true
		tc.add(c.name, c.spec)
		st := tc.sync(c.name)
		if st.Phase != crd.Running || st.DataplaneTag == 0 || st.SourceNode != c.source || strings.Join(st.Nodes, ",") != c.nodes ||
			st.SrcIP != c.src || st.DstIP != c.dst || st.DstPort != c.dstPort {
			t.Errorf("%s: status %+v", c.name, st)
		}
	}
	tc.add("inject-from-ip", crd.TraceflowSpec{Source: crd.Source{IP: "192.0.2.1"}, Destination: crd.Destination{IP: "10.0.0.1"}})
	if st := tc.sync("inject-from-ip"); st.Phase != crd.Failed || !strings.Contains(st.Reason, "live traffic only") {
		t.Errorf("injected trace from an IP: %+v", st)
	}
}
