package agent

import (
	"context"
	"errors"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seine-cni/seine/cni"
	"github.com/seine-cni/seine/core/pipeline"
)

func TestPeers(t *testing.T) {
	w := newWorld(t, twoNodesSlice()...)
	a, _ := w.start()
	waitReady(t, a)
	ctx := context.Background()
	hasPeer := func(name string) (bool, string) {
		n := w.sw.count(pipeline.CategoryPeer, pipeline.PeerID(name))
		return n > 0, w.sw.text()
	}
	poll(t, "node-2's flows", func() (bool, string) { return hasPeer("node-2") })
	if d := w.backend.FakeHostRules.Dump(); !strings.Contains(d, "10.244.2.0/24 via 10.244.2.1") {
		t.Errorf("host rules lack the route to node-2's pods:\n%s", d)
	}
	// A bridged uplink on the netdev datapath: the host stack must not see
	// the uplink's frames a second time.
	if d := w.backend.FakeHostRules.Dump(); !strings.Contains(d, "no-host-ingress eth0\n") {
		t.Errorf("host rules do not keep the host stack off the uplink:\n%s", d)
	}

	// A new node with a podCIDR becomes a peer; one without does not yet.
	if _, err := w.kube.CoreV1().Nodes().Create(ctx, node("node-3", "172.30.0.13", ""), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	n3 := node("node-3", "172.30.0.13", "10.244.3.0/24")
	if _, err := w.kube.CoreV1().Nodes().Update(ctx, n3, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "node-3's flows", func() (bool, string) { return hasPeer("node-3") })
	poll(t, "node-3's route", func() (bool, string) {
		d := w.backend.FakeHostRules.Dump()
		return strings.Contains(d, "10.244.3.0/24 via 10.244.3.1"), d
	})
	// A pod added before the change keeps its flows through the new round.
	if _, err := a.Add(ctx, w.req(cni.CmdAdd, "c1", "web-0")); err != nil {
		t.Fatal(err)
	}

	if err := w.kube.CoreV1().Nodes().Delete(ctx, "node-2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "node-2's flows gone", func() (bool, string) { ok, s := hasPeer("node-2"); return !ok, s })
	poll(t, "node-2's route gone", func() (bool, string) {
		d := w.backend.FakeHostRules.Dump()
		return !strings.Contains(d, "10.244.2.0/24"), d
	})
	if rs := w.sw.rounds(); len(rs) != 1 {
		t.Errorf("flows of rounds %v after peer changes, want one round", rs)
	}
	if err := a.Check(ctx, w.req(cni.CmdCheck, "c1", "web-0")); err != nil {
		t.Errorf("pod after peer changes: %v", err)
	}
}

func TestNoEncapRoutesViaNodeIP(t *testing.T) {
	w := newWorld(t, twoNodesSlice()...)
	w.cfg.TrafficMode = "noEncap"
	a, _ := w.start()
	waitReady(t, a)
	poll(t, "node-2's route", func() (bool, string) {
		d := w.backend.FakeHostRules.Dump()
		return strings.Contains(d, "route 10.244.2.0/24 via 172.30.0.12\n"), d
	})
	if _, err := w.db.GetPort(context.Background(), TunnelPort); err == nil {
		t.Error("noEncap node has a tunnel port")
	}
}

func TestStatusBeforeSetup(t *testing.T) {
	w := newWorld(t, node("node-1", "172.30.0.11", "")) // no podCIDR yet
	a, _ := w.start()
	ctx := context.Background()
	poll(t, "the agent to wait for its podCIDR", func() (bool, string) {
		_, why := a.Ready()
		return strings.Contains(why, "podCIDR"), why
	})
	if err := a.Status(ctx, w.req(cni.CmdStatus, "", "")); cniCode(err) != 50 {
		t.Errorf("STATUS before setup: code %d (%v), want 50", cniCode(err), err)
	}
	if _, err := a.Add(ctx, w.req(cni.CmdAdd, "c1", "web-0")); cniCode(err) != 11 {
		t.Errorf("ADD before setup: code %d (%v), want 11", cniCode(err), err)
	}
	if _, err := w.kube.CoreV1().Nodes().Update(ctx, node("node-1", "172.30.0.11", "10.244.1.0/24"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitReady(t, a)
	if err := a.Status(ctx, w.req(cni.CmdStatus, "", "")); err != nil {
		t.Errorf("STATUS when ready: %v", err)
	}
}

func TestHostRulesRetried(t *testing.T) {
	w := newWorld(t, twoNodesSlice()...)
	w.backend.FakeHostRules.FailNext("Sync", errors.New("iptables-restore: injected failure"))
	a, _ := w.start()
	waitReady(t, a)
	if l := w.backend.FakeHostRules.Log(); !strings.Contains(l, "injected failure") {
		t.Fatalf("the injected failure did not happen:\n%s", l)
	}
	// Any Node event (a kubelet's status update) brings a retry.
	n2 := node("node-2", "172.30.0.12", "10.244.2.0/24")
	n2.Labels = map[string]string{"touched": "yes"}
	if _, err := w.kube.CoreV1().Nodes().Update(context.Background(), n2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "host rules retried", func() (bool, string) {
		d := w.backend.FakeHostRules.Dump()
		return strings.Contains(d, "10.244.2.0/24 via 10.244.2.1"), d
	})
}

func TestRoutedHost(t *testing.T) {
	w := newWorld(t, twoNodesSlice()...)
	w.cfg.Topology = "routedHost"
	w.cfg.FlowSetOS = "linux" // a Windows node has no routed host
	a, _ := w.start()
	waitReady(t, a)
	if _, err := a.Add(context.Background(), w.req(cni.CmdAdd, "c1", "web-0")); err != nil {
		t.Fatalf("ADD on a routed host: %v", err)
	}
	if d := w.backend.FakeNodeNetwork.Dump(); !strings.Contains(d, "RoutedHost") {
		t.Errorf("node state:\n%s", d)
	}
	if n := w.sw.count(pipeline.CategoryPeer, pipeline.PeerID("node-2")); n == 0 {
		t.Errorf("no peer flows on a routed host:\n%s", w.sw.text())
	}
}
