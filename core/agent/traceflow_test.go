package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynfake "k8s.io/client-go/dynamic/fake"

	"github.com/seine-cni/seine/cni"
	"github.com/seine-cni/seine/core/agent/policy"
	crd "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/core/traceflow"
	"github.com/seine-cni/seine/ovs/openflow"
)

// copiesInStep compares the switch's copies of trace tag with the copies
// of the flows the switch holds now (traceflow.Copies of a fresh dump):
// "" when they are the same, else what differs. Cookies (rounds) are left
// out.
func (s *fakeSwitch) copiesInStep(tag uint8) string {
	s.mu.Lock()
	var base, have []*openflow.Flow
	for _, f := range s.flows {
		ck := pipeline.Cookie(f.CookieValue())
		switch {
		case ck.Category() != pipeline.CategoryTraceflow:
			base = append(base, f)
		case ck.ID() == uint64(tag):
			have = append(have, f)
		}
	}
	s.mu.Unlock()
	want, _, err := traceflow.Copies(base, tag, traceflow.Cookie(0, tag), traceflow.Mode{})
	if err != nil {
		return err.Error()
	}
	text := func(fs []*openflow.Flow) []string {
		var out []string
		for _, f := range fs {
			l := f.String()
			out = append(out, l[strings.Index(l, ", ")+2:])
		}
		slices.Sort(out)
		return out
	}
	h, w := text(have), text(want)
	var diff []string
	for _, l := range h {
		if !slices.Contains(w, l) {
			diff = append(diff, "stale: "+l)
		}
	}
	for _, l := range w {
		if !slices.Contains(h, l) {
			diff = append(diff, "missing: "+l)
		}
	}
	if len(w) == 0 {
		diff = append(diff, "no copies at all")
	}
	return strings.Join(diff, "\n")
}

// TestTraceflowCopiesFollowFlowChanges: while a trace runs, its tagged
// copies stay those of the flows the switch holds as the agent changes
// them: a new pod's flows get copies, a policy realized mid-trace (the
// isolation's drop) and a Service losing and regaining its endpoints (the
// proxy's reject) get and lose theirs, a deleted pod's copies go; nothing
// is copied once the trace ended. Copies made once at the trace's start
// missed all of these: the tagged packet was dropped unseen or followed
// flows that no longer were.
func TestTraceflowCopiesFollowFlowChanges(t *testing.T) {
	w := newWorld(t, twoNodesSlice()...)
	w.cfg.Proxy.ServiceCIDRs = []string{"10.96.0.0/16"}
	vsd := newFakeVswitchd()
	w.vswitchd = vsd.dial
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := w.kube.CoreV1().Services("default").Create(ctx, webService(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.kube.DiscoveryV1().EndpointSlices("default").Create(ctx, webSlice("10.244.1.5"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	a, _ := w.start()
	waitReady(t, a)
	if _, err := a.Add(ctx, w.req(cni.CmdAdd, "c1", "web-0")); err != nil {
		t.Fatal(err)
	}

	// A trace from a pod of node-2 through node-1 (no injection here).
	const tag = 5
	start := metav1.Now()
	tf := &crd.Traceflow{TypeMeta: metav1.TypeMeta{APIVersion: crd.SchemeGroupVersion.String(), Kind: "Traceflow"},
		ObjectMeta: metav1.ObjectMeta{Name: "t", UID: "u-1"},
		Spec:       crd.TraceflowSpec{Source: crd.Source{Namespace: "default", Pod: "remote"}, Destination: crd.Destination{Namespace: "default", Pod: "db"}},
		Status: crd.TraceflowStatus{Phase: crd.Running, StartTime: &start, DataplaneTag: tag, SourceNode: "node-2", Nodes: []string{"node-2", "node-1"},
			SrcIP: "10.244.2.9", DstIP: "10.244.1.3", DstPort: 80}}
	u, err := k8sruntime.DefaultUnstructuredConverter.ToUnstructured(tf)
	if err != nil {
		t.Fatal(err)
	}
	dyn := dynfake.NewSimpleDynamicClientWithCustomListKinds(k8sruntime.NewScheme(),
		map[schema.GroupVersionResource]string{crd.TraceflowsResource: "TraceflowList"}, &unstructured.Unstructured{Object: u})
	tfa := traceflow.NewAgent("node-1", dyn, traceflowNode{a}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	a.tf.Store(tfa)
	go func() { _ = tfa.Run(ctx) }()
	poll(t, "the trace's copies", func() (bool, string) {
		d := w.sw.copiesInStep(tag)
		return d == "", d
	})
	// ...and the datapath's cached flows made before them flushed.
	poll(t, "the datapath flushed after the copies", func() (bool, string) {
		vsd.mu.Lock()
		defer vsd.mu.Unlock()
		return slices.Contains(vsd.calls, "dpctl/del-flows"), strings.Join(vsd.calls, "\n")
	})

	// Each change must leave the copies in step, and change how many
	// there are (more or fewer).
	step := func(what string, change func() error, more bool) {
		t.Helper()
		before := w.sw.count(pipeline.CategoryTraceflow, tag)
		if err := change(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		poll(t, "copies in step after "+what, func() (bool, string) {
			d, n := w.sw.copiesInStep(tag), w.sw.count(pipeline.CategoryTraceflow, tag)
			return d == "" && (n > before) == more && n != before, fmt.Sprintf("%d copies, %d before\n%s", n, before, d)
		})
	}
	step("a new pod", func() error {
		_, err := a.Add(ctx, w.req(cni.CmdAdd, "c2", "db"))
		return err
	}, true)
	step("a policy realized", func() error { return a.Policy().Sync(ctx, isolateDB()) }, true)
	step("the Service's last endpoint gone", func() error {
		_, err := w.kube.DiscoveryV1().EndpointSlices("default").Update(ctx, webSlice(), metav1.UpdateOptions{})
		return err
	}, true)
	step("an endpoint back", func() error {
		_, err := w.kube.DiscoveryV1().EndpointSlices("default").Update(ctx, webSlice("10.244.1.5"), metav1.UpdateOptions{})
		return err
	}, false)
	step("the policy gone", func() error { return a.Policy().Sync(ctx, policy.State{}) }, false)
	step("the pod deleted", func() error { return a.Del(ctx, w.req(cni.CmdDel, "c2", "db")) }, false)

	// The trace ends: its copies go, and later changes copy nothing.
	if err := dyn.Resource(crd.TraceflowsResource).Delete(ctx, "t", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "copies gone", func() (bool, string) {
		return w.sw.count(pipeline.CategoryTraceflow, 0) == 0, w.sw.text()
	})
	if _, err := a.Add(ctx, w.req(cni.CmdAdd, "c3", "db")); err != nil {
		t.Fatal(err)
	}
	if n := w.sw.count(pipeline.CategoryTraceflow, 0); n != 0 {
		t.Errorf("%d trace flows after a change once the trace ended:\n%s", n, w.sw.text())
	}
}
