package agent

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seine-cni/seine/cni"
	"github.com/seine-cni/seine/core/pipeline"
)

// A peer change sends the flows that differ, in one bundle: no dump of
// every table, no new round, no bundle of the whole flow set (which used to
// hold the agent's lock, and every CNI request behind it, for as long as
// the switch took).
func TestPeerChangeSendsOnlyTheDifference(t *testing.T) {
	w := newWorld(t, twoNodesSlice()...)
	a, _ := w.start()
	waitReady(t, a)
	ctx := context.Background()
	if _, err := a.Add(ctx, w.req(cni.CmdAdd, "c1", "web-0")); err != nil {
		t.Fatal(err)
	}
	poll(t, "node-2's flows", func() (bool, string) {
		return w.sw.count(pipeline.CategoryPeer, pipeline.PeerID("node-2")) > 0, w.sw.text()
	})
	rounds := w.sw.rounds()
	_, dumps, _ := w.sw.stats()
	for i, change := range []func() error{
		func() error {
			_, err := w.kube.CoreV1().Nodes().Create(ctx, node("node-3", "172.30.0.13", "10.244.3.0/24"), metav1.CreateOptions{})
			return err
		},
		func() error { return w.kube.CoreV1().Nodes().Delete(ctx, "node-2", metav1.DeleteOptions{}) },
	} {
		before, _, _ := w.sw.stats()
		if err := change(); err != nil {
			t.Fatal(err)
		}
		poll(t, fmt.Sprintf("change %d on the switch", i), func() (bool, string) {
			has3 := w.sw.count(pipeline.CategoryPeer, pipeline.PeerID("node-3")) > 0
			has2 := w.sw.count(pipeline.CategoryPeer, pipeline.PeerID("node-2")) > 0
			return has3 && has2 == (i == 0), w.sw.text()
		})
		after, d, last := w.sw.stats()
		if after != before+1 || d != dumps {
			t.Errorf("change %d: %d bundles and %d dumps, want 1 and 0", i, after-before, d-dumps)
		}
		for _, m := range last {
			if strings.Contains(m, "10.244.1.2") {
				t.Errorf("change %d resent a pod flow: %s", i, m)
			}
		}
		if n := len(last); n == 0 || n > 20 {
			t.Errorf("change %d: a bundle of %d flow-mods:\n%s", i, n, strings.Join(last, "\n"))
		}
	}
	if got := w.sw.rounds(); fmt.Sprint(got) != fmt.Sprint(rounds) {
		t.Errorf("rounds %v after peer changes, want still %v", got, rounds)
	}
	if err := a.Check(ctx, w.req(cni.CmdCheck, "c1", "web-0")); err != nil {
		t.Errorf("pod after peer changes: %v", err)
	}
}

// CNI DEL while ovs-vswitchd is away returns at once: the pod leaves the
// desired state, its port, interface and address go, and the replay on the
// next connection leaves its flows out. It used to wait for the switch
// until its deadline, leaving the pod Terminating.
func TestDelDoesNotWaitForVswitchd(t *testing.T) {
	w := newWorld(t, twoNodesSlice()...)
	a, _ := w.start()
	waitReady(t, a)
	ctx := context.Background()
	if err := a.Policy().Sync(ctx, isolateDB()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Add(ctx, w.req(cni.CmdAdd, "c1", "web-0")); err != nil {
		t.Fatal(err)
	}
	w.sw.disconnect()
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	start := time.Now()
	if err := a.Del(dctx, w.req(cni.CmdDel, "c1", "web-0")); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("DEL took %v with ovs-vswitchd away", took)
	}
	if ps := w.db.podPorts(); len(ps) != 0 {
		t.Errorf("pod ports left: %v", ps)
	}
	if err := w.sw.reconnect(ctx); err != nil {
		t.Fatal(err)
	}
	if left := w.leftovers(a); left != "" {
		t.Errorf("after DEL and the reconnect: %s", left)
	}
}
