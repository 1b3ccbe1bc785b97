package agent

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/seine-cni/seine/cni"
	"github.com/seine-cni/seine/core/ipam"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
	"github.com/seine-cni/seine/platform/platformtest"
)

// lateWorld is a world whose pod interfaces appear only once the runtime
// starts the sandbox, after ADD returned, as on Windows under containerd:
// the OVS port's device is absent until then, so its ofport is -1.
func lateWorld(t *testing.T) *world {
	w := newWorld(t, twoNodesSlice()...)
	w.backend.FakePodAttacher.Late = true
	w.backend.FakePodAttacher.PortType = ovsdb.TypeInternal
	w.backend.FakePodAttacher.Devices = w.db.FakeOVSDB
	// A Windows pod namespace is an HNS namespace GUID, not a path.
	w.netns = "8d9a3c2e-1111-4e5f-9a0b-0123456789ab"
	return w
}

func (w *world) ref(id, name string) platform.PodRef {
	return platform.PodRef{Namespace: "default", Name: name, ContainerID: id, IfName: "eth0", NetNS: w.netns}
}

// portOf returns the pod's OVS port as OVSDB has it.
func (w *world) portOf(t *testing.T, id, name string) ovsdb.PortInfo {
	t.Helper()
	p, err := w.db.GetPort(context.Background(), platformtest.HostName(w.ref(id, name)))
	if err != nil {
		t.Fatalf("pod %s's port: %v", name, err)
	}
	return p
}

func (w *world) podFlows(name string) int {
	return w.sw.count(pipeline.CategoryPod, pipeline.PodID("default", name))
}

// waitConnected waits until the pod's port has its type and an OpenFlow
// port and the pod's flows are installed.
func (w *world) waitConnected(t *testing.T, a *Agent, id, name string) {
	t.Helper()
	poll(t, name+" connected", func() (bool, string) {
		p := w.portOf(t, id, name)
		err := a.Check(context.Background(), w.req(cni.CmdCheck, id, name))
		return p.Type == ovsdb.TypeInternal && p.OFPort > 0 && w.podFlows(name) > 0 && err == nil,
			fmt.Sprintf("port type %q ofport %d, %d flows, CHECK: %v", p.Type, p.OFPort, w.podFlows(name), err)
	})
}

// TestLatePodInterface: ADD of a pod whose interface appears after ADD
// returns (Windows under containerd) does not wait for the OpenFlow port;
// the port is connected and the flows installed once the sandbox starts;
// a retried ADD changes nothing before or after; DEL while waiting leaves
// nothing, and nothing comes back later.
func TestLatePodInterface(t *testing.T) {
	ctx := context.Background()
	t.Run("connects when the sandbox starts", func(t *testing.T) {
		w := lateWorld(t)
		a, _ := w.start()
		waitReady(t, a)
		start := time.Now()
		res, err := a.Add(ctx, w.req(cni.CmdAdd, "c1", "web-0"))
		if err != nil {
			t.Fatalf("ADD: %v", err)
		}
		t.Logf("ADD returned after %v", time.Since(start).Round(time.Millisecond))
		if len(res.IPs) != 1 || res.IPs[0].Address.String() != "10.244.1.2/24" || res.Interfaces[1].Sandbox != w.netns {
			t.Errorf("result: IPs %v, interfaces %+v", res.IPs, res.Interfaces)
		}
		p := w.portOf(t, "c1", "web-0")
		if p.Type != ovsdb.TypeSystem || p.OFPort != -1 || p.ExternalIDs[extIP] != "10.244.1.2/24" || p.ExternalIDs[extNetNS] != w.netns {
			t.Errorf("port before the sandbox started: type %q ofport %d external_ids %v; want no type, ofport -1, the pod's IDs", p.Type, p.OFPort, p.ExternalIDs)
		}
		if n := w.podFlows("web-0"); n != 0 {
			t.Errorf("%d pod flows before the pod has a port", n)
		}
		if err := a.Check(ctx, w.req(cni.CmdCheck, "c1", "web-0")); cniCode(err) != types.ErrTryAgainLater {
			t.Errorf("CHECK while waiting: code %d (%v), want %d", cniCode(err), err, types.ErrTryAgainLater)
		}
		// kubelet on Windows sends ADD again for the same sandbox.
		w.db.ResetLog()
		if res2, err := a.Add(ctx, w.req(cni.CmdAdd, "c1", "web-0")); err != nil || res2.IPs[0].Address.String() != "10.244.1.2/24" {
			t.Errorf("ADD again while waiting: %v, %v", res2, err)
		}
		if l := w.db.Log(); strings.Contains(l, "(created") || strings.Contains(l, "(updated") {
			t.Errorf("ADD again while waiting changed OVSDB:\n%s", l)
		}

		w.backend.FakePodAttacher.StartSandbox(w.ref("c1", "web-0"))
		w.waitConnected(t, a, "c1", "web-0")
		w.db.ResetLog()
		if _, err := a.Add(ctx, w.req(cni.CmdAdd, "c1", "web-0")); err != nil {
			t.Errorf("ADD again when connected: %v", err)
		}
		if p := w.portOf(t, "c1", "web-0"); p.Type != ovsdb.TypeInternal || p.OFPort <= 0 {
			t.Errorf("ADD again unplugged the port: type %q ofport %d", p.Type, p.OFPort)
		}
		if err := a.Del(ctx, w.req(cni.CmdDel, "c1", "web-0")); err != nil {
			t.Fatal(err)
		}
		if left := w.leftovers(a); left != "" {
			t.Errorf("after DEL:\n%s", left)
		}
	})

	t.Run("DEL while waiting", func(t *testing.T) {
		w := lateWorld(t)
		a, _ := w.start()
		waitReady(t, a)
		if _, err := a.Add(ctx, w.req(cni.CmdAdd, "c1", "web-0")); err != nil {
			t.Fatal(err)
		}
		if err := a.Del(ctx, w.req(cni.CmdDel, "c1", "web-0")); err != nil {
			t.Fatal(err)
		}
		if left := w.leftovers(a); left != "" {
			t.Errorf("after DEL:\n%s", left)
		}
		if p := a.late.pending(ipam.Key{ContainerID: "c1", IfName: "eth0"}); p != nil {
			t.Error("the pod is still awaited after DEL")
		}
		time.Sleep(3 * lateBackoffMin)
		if left := w.leftovers(a); left != "" {
			t.Errorf("a while after DEL:\n%s", left)
		}
	})

	t.Run("a failed ADD leaves nothing", func(t *testing.T) {
		w := lateWorld(t)
		a, _ := w.start()
		waitReady(t, a)
		w.db.FailNext("EnsurePort", fmt.Errorf("injected failure"))
		if _, err := a.Add(ctx, w.req(cni.CmdAdd, "c1", "web-0")); err == nil {
			t.Fatal("ADD hid the injected failure")
		}
		if left := w.leftovers(a); left != "" {
			t.Errorf("after the failed ADD:\n%s", left)
		}
	})
}

// TestLatePodAcrossRestart: a pod whose port has no OpenFlow port (-1) but
// whose attachment is intact is a live pod waiting for (or already past)
// its sandbox start: a restarted agent keeps it and its address and
// connects it; one whose namespace is gone is dropped and its address
// freed.
func TestLatePodAcrossRestart(t *testing.T) {
	ctx := context.Background()
	w := lateWorld(t)
	a, stop := w.start()
	waitReady(t, a)
	const deadNS = "8d9a3c2e-9999-4e5f-9a0b-0123456789ab"
	for _, id := range []string{"early", "later", "dead", "live"} {
		r := w.req(cni.CmdAdd, id, "web-"+id)
		if id == "dead" {
			r.Netns = deadNS
		}
		if _, err := a.Add(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	w.backend.FakePodAttacher.StartSandbox(w.ref("live", "web-live"))
	w.waitConnected(t, a, "live", "web-live")
	before := map[string]string{}
	for _, al := range a.ipam.List() {
		before[al.ContainerID] = fmt.Sprint(al.IPs)
	}
	stop()

	// While the agent is down one sandbox starts and one pod dies with its
	// namespace.
	w.backend.FakePodAttacher.StartSandbox(w.ref("early", "web-early"))
	w.backend.FakePodAttacher.RemoveNetNS(deadNS)

	b, _ := w.start()
	waitReady(t, b)
	w.waitConnected(t, b, "early", "web-early")
	w.waitConnected(t, b, "live", "web-live")
	if p := w.portOf(t, "later", "web-later"); p.OFPort != -1 {
		t.Errorf("the pod whose sandbox has not started: ofport %d, want -1 (kept, waiting)", p.OFPort)
	}
	if b.late.pending(ipam.Key{ContainerID: "later", IfName: "eth0"}) == nil {
		t.Error("the pod whose sandbox has not started is not awaited")
	}
	after := map[string]string{}
	for _, al := range b.ipam.List() {
		after[al.ContainerID] = fmt.Sprint(al.IPs)
	}
	for _, id := range []string{"early", "later", "live"} {
		if after[id] == "" || after[id] != before[id] {
			t.Errorf("pod %s: addresses %q after the restart, %q before", id, after[id], before[id])
		}
	}
	if _, ok := after["dead"]; ok {
		t.Error("the dead pod's address was not freed")
	}
	if ps := w.db.podPorts(); slices.Contains(ps, platformtest.HostName(platform.PodRef{Namespace: "default", Name: "web-dead", ContainerID: "dead", IfName: "eth0"})) || len(ps) != 3 {
		t.Errorf("pod ports after the restart: %v, want the three live pods'", ps)
	}
	w.backend.FakePodAttacher.StartSandbox(w.ref("later", "web-later"))
	w.waitConnected(t, b, "later", "web-later")
}
