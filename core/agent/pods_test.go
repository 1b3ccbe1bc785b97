package agent

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	corev1 "k8s.io/api/core/v1"

	"github.com/seine-cni/seine/cni"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
)

func twoNodesSlice() []*corev1.Node {
	return []*corev1.Node{node("node-1", "172.30.0.11", "10.244.1.0/24"), node("node-2", "172.30.0.12", "10.244.2.0/24")}
}

// leftovers describes what a pod could have left behind; "" when nothing.
func (w *world) leftovers(a *Agent) string {
	var b strings.Builder
	if d := w.backend.FakePodAttacher.Dump(); d != "" {
		b.WriteString("interfaces: " + d)
	}
	if ps := w.db.podPorts(); len(ps) > 0 {
		b.WriteString("ports: " + strings.Join(ps, ",") + "\n")
	}
	if n := w.sw.count(pipeline.CategoryPod, 0); n > 0 {
		b.WriteString("pod flows present\n")
	}
	if a.ipam != nil && len(a.ipam.List()) > 0 {
		b.WriteString("IPAM allocations present\n")
	}
	return b.String()
}

func TestAddCheckDel(t *testing.T) {
	w := newWorld(t, twoNodesSlice()...)
	a, _ := w.start()
	waitReady(t, a)
	ctx := context.Background()

	res, err := a.Add(ctx, w.req(cni.CmdAdd, "c1", "web-0"))
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if res.CNIVersion != "1.1.0" || len(res.IPs) != 1 || res.IPs[0].Address.String() != "10.244.1.2/24" || res.IPs[0].Gateway.String() != "10.244.1.1" {
		t.Errorf("result: version %s, IPs %v", res.CNIVersion, res.IPs)
	}
	if len(res.Interfaces) != 2 || res.Interfaces[1].Name != "eth0" || res.Interfaces[1].Sandbox != w.netns || res.Interfaces[1].Mtu != 1450 {
		t.Errorf("result interfaces: %+v", res.Interfaces)
	}
	if got := w.backend.FakePodAttacher.Dump(); !strings.Contains(got, "default/web-0") || !strings.Contains(got, "10.244.1.2/24") || !strings.Contains(got, "mtu=1450") {
		t.Errorf("attached:\n%s", got)
	}
	ports := w.db.podPorts()
	if len(ports) != 1 {
		t.Fatalf("pod ports %v, want one", ports)
	}
	info, _ := w.db.GetPort(ctx, ports[0])
	for k, v := range map[string]string{extNamespace: "default", extName: "web-0", extContainerID: "c1", extIfName: "eth0", extIP: "10.244.1.2/24", extNetNS: w.netns} {
		if info.ExternalIDs[k] != v {
			t.Errorf("port external_ids[%s] = %q, want %q", k, info.ExternalIDs[k], v)
		}
	}
	if n := w.sw.count(pipeline.CategoryPod, pipeline.PodID("default", "web-0")); n == 0 {
		t.Errorf("no pod flows after ADD:\n%s", w.sw.text())
	}
	if err := a.Check(ctx, w.req(cni.CmdCheck, "c1", "web-0")); err != nil {
		t.Errorf("CHECK after ADD: %v", err)
	}
	// A retried ADD gives the same answer and changes nothing.
	res2, err := a.Add(ctx, w.req(cni.CmdAdd, "c1", "web-0"))
	if err != nil || res2.IPs[0].Address.String() != "10.244.1.2/24" {
		t.Errorf("second ADD: %v, %v", res2, err)
	}

	// CHECK notices a missing flow.
	c, m := pipeline.ObjectSelector(a.round, pipeline.CategoryPod, pipeline.PodID("default", "web-0"))
	flows, _ := w.sw.DumpFlows(ctx, allTables, c, m)
	_ = w.sw.BundleFlows(ctx, openflow.FlowDeleteStrict, []*openflow.Flow{flows[0].Flow})
	if err := a.Check(ctx, w.req(cni.CmdCheck, "c1", "web-0")); err == nil || !strings.Contains(err.Error(), "flows missing") {
		t.Errorf("CHECK with a flow gone: %v", err)
	}

	for i := range 2 { // DEL is idempotent
		if err := a.Del(ctx, w.req(cni.CmdDel, "c1", "web-0")); err != nil {
			t.Fatalf("DEL %d: %v", i+1, err)
		}
		if left := w.leftovers(a); left != "" {
			t.Errorf("after DEL %d:\n%s", i+1, left)
		}
	}
	if err := a.Check(ctx, w.req(cni.CmdCheck, "c1", "web-0")); cniCode(err) != types.ErrUnknownContainer {
		t.Errorf("CHECK after DEL: code %d (%v), want %d", cniCode(err), err, types.ErrUnknownContainer)
	}
}

func TestAddUnwindsEveryStep(t *testing.T) {
	boom := errors.New("injected failure")
	for _, tc := range []struct {
		step   string
		inject func(w *world)
	}{
		{"attach", func(w *world) { w.backend.FakePodAttacher.FailNext("Attach", boom) }},
		{"OVS port", func(w *world) { w.db.FailNext("EnsurePort", boom) }},
		{"ofport", func(w *world) { w.db.FailNext("PortOfport", boom) }},
		{"flows", func(w *world) { w.sw.mu.Lock(); w.sw.failNext = boom; w.sw.mu.Unlock() }},
	} {
		t.Run(tc.step, func(t *testing.T) {
			w := newWorld(t, twoNodesSlice()...)
			a, _ := w.start()
			waitReady(t, a)
			ctx := context.Background()
			// Another pod that must survive the unwinding.
			if _, err := a.Add(ctx, w.req(cni.CmdAdd, "keep", "keep-0")); err != nil {
				t.Fatal(err)
			}
			tc.inject(w)
			_, err := a.Add(ctx, w.req(cni.CmdAdd, "c1", "web-0"))
			if !errors.Is(err, boom) {
				t.Fatalf("ADD error %v, want the injected one", err)
			}
			if err := a.Del(ctx, w.req(cni.CmdDel, "keep", "keep-0")); err != nil {
				t.Fatal(err)
			}
			if left := w.leftovers(a); left != "" {
				t.Errorf("a failed ADD left:\n%s", left)
			}
		})
	}
}

func TestAddErrors(t *testing.T) {
	w := newWorld(t, node("node-1", "172.30.0.11", "10.244.1.0/30"), node("node-2", "172.30.0.12", "10.244.2.0/24"))
	a, _ := w.start()
	waitReady(t, a)
	ctx := context.Background()

	noArgs := w.req(cni.CmdAdd, "c0", "x")
	noArgs.K8s = cni.K8sArgs{}
	badNS := w.req(cni.CmdAdd, "c0", "x")
	badNS.Netns = "/nonexistent/netns"
	w.backend.FakePodAttacher.RemoveNetNS(badNS.Netns)
	for name, r := range map[string]*cni.Request{"no pod in CNI_ARGS": noArgs, "unknown netns": badNS} {
		if _, err := a.Add(ctx, r); cniCode(err) != types.ErrInvalidEnvironmentVariables {
			t.Errorf("%s: code %d (%v), want %d", name, cniCode(err), err, types.ErrInvalidEnvironmentVariables)
		}
	}
	// A /30 has one pod address besides the gateway (and broadcast).
	var added int
	var last error
	for i := range 4 {
		if _, err := a.Add(ctx, w.req(cni.CmdAdd, "c"+string(rune('1'+i)), "web")); err != nil {
			last = err
			break
		}
		added++
	}
	if last == nil || !strings.Contains(last.Error(), "no free address") {
		t.Fatalf("after %d pods: %v, want an exhausted pool", added, last)
	}
	if n := len(w.db.podPorts()); n != added {
		t.Errorf("%d pod ports for %d pods: the failed ADD left one", n, added)
	}
	if err := a.GC(ctx, w.req(cni.CmdGC, "", ""), nil); err != nil {
		t.Fatal(err)
	}
	if left := w.leftovers(a); left != "" {
		t.Errorf("after GC of everything:\n%s", left)
	}
}

func TestGC(t *testing.T) {
	w := newWorld(t, twoNodesSlice()...)
	a, _ := w.start()
	waitReady(t, a)
	ctx := context.Background()
	for _, id := range []string{"c1", "c2", "c3"} {
		if _, err := a.Add(ctx, w.req(cni.CmdAdd, id, "web-"+id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.GC(ctx, w.req(cni.CmdGC, "", ""), []cni.Attachment{{ContainerID: "c2", IfName: "eth0"}}); err != nil {
		t.Fatal(err)
	}
	if ps := w.db.podPorts(); len(ps) != 1 {
		t.Errorf("ports after GC: %v", ps)
	}
	if err := a.Check(ctx, w.req(cni.CmdCheck, "c2", "web-c2")); err != nil {
		t.Errorf("the valid attachment: %v", err)
	}
	if n := w.sw.count(pipeline.CategoryPod, pipeline.PodID("default", "web-c1")); n != 0 {
		t.Errorf("%d flows left of a collected pod", n)
	}
	if got := len(a.ipam.List()); got != 1 {
		t.Errorf("%d allocations after GC, want 1", got)
	}
}

func TestDelWhenFlowsCannotBeDeleted(t *testing.T) {
	w := newWorld(t, twoNodesSlice()...)
	a, _ := w.start()
	waitReady(t, a)
	ctx := context.Background()
	if _, err := a.Add(ctx, w.req(cni.CmdAdd, "c1", "web-0")); err != nil {
		t.Fatal(err)
	}
	w.sw.mu.Lock()
	w.sw.failNext = errors.New("connection to ovs-vswitchd lost")
	w.sw.mu.Unlock()
	if err := a.Del(ctx, w.req(cni.CmdDel, "c1", "web-0")); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if n := w.sw.count(pipeline.CategoryPod, 0); n == 0 {
		t.Fatal("the injected failure did not keep the pod's flows")
	}
	// The next replay (a reconnect) leaves the pod out.
	if err := w.sw.restart(ctx); err != nil {
		t.Fatal(err)
	}
	if left := w.leftovers(a); left != "" {
		t.Errorf("after DEL and a replay:\n%s", left)
	}
}
