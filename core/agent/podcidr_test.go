package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seine-cni/seine/cni"
)

// startEnding runs an agent whose Run may end by itself; the returned
// channel has Run's result.
func (w *world) startEnding() (*Agent, <-chan error) {
	w.t.Helper()
	a, err := New(Options{Config: w.cfg, Logger: testLogger(w.t), Kube: w.kube, OVSDB: w.db, Backend: w.backend, NewSwitch: w.sw.factory})
	if err != nil {
		w.t.Fatal(err)
	}
	noCNISocketUnderWine(a)
	ctx, cancel := context.WithCancel(context.Background())
	done, ended := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(ended)
		done <- a.Run(ctx)
	}()
	w.t.Cleanup(func() {
		cancel()
		select {
		case <-ended:
		case <-time.After(10 * time.Second):
			w.t.Error("agent Run did not end")
		}
	})
	return a, done
}

// waitEnd waits for Run to end with an error wrapping ErrPodCIDRChanged.
func waitEnd(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if !errors.Is(err, ErrPodCIDRChanged) {
			t.Fatalf("Run ended with %v, want ErrPodCIDRChanged", err)
		}
		t.Logf("Run ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not end once the old pod CIDR was empty")
	}
}

func (w *world) movePodCIDR(t *testing.T, cidr string) {
	t.Helper()
	if _, err := w.kube.CoreV1().Nodes().Update(context.Background(), node("node-1", "172.30.0.11", cidr), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestPodCIDRChange: when the Node's pod CIDR changes while pods hold
// addresses in the old one (at a restart, or while running), the agent
// allocates from neither: ADD and STATUS fail with a message naming both
// ranges and the pods in the old one, DEL works, the pods keep working;
// once the last of them is gone Run ends (ErrPodCIDRChanged) and the agent
// started again allocates from the new range.
func TestPodCIDRChange(t *testing.T) {
	ctx := context.Background()
	const wantWhy = "pod CIDR changed from [10.244.1.0/24] to [10.244.7.0/24] while 2 pods hold addresses in the old one (default/web-c1, default/web-c2)"

	t.Run("at a restart", func(t *testing.T) {
		w := newWorld(t, twoNodesSlice()...)
		a, stop := w.start()
		waitReady(t, a)
		for _, id := range []string{"c1", "c2"} {
			if _, err := a.Add(ctx, w.req(cni.CmdAdd, id, "web-"+id)); err != nil {
				t.Fatal(err)
			}
		}
		stop()
		w.movePodCIDR(t, "10.244.7.0/24")
		b, done := w.startEnding()
		poll(t, "not ready for the changed pod CIDR", func() (bool, string) {
			_, why := b.Ready()
			return strings.Contains(why, wantWhy), why
		})
		if _, err := b.Add(ctx, w.req(cni.CmdAdd, "c3", "web-c3")); cniCode(err) != types.ErrTryAgainLater || !strings.Contains(err.Error(), wantWhy) {
			t.Errorf("ADD: code %d (%v), want %d with the reason", cniCode(err), err, types.ErrTryAgainLater)
		}
		if err := b.Status(ctx, w.req(cni.CmdStatus, "", "")); cniCode(err) != types.ErrPluginNotAvailable {
			t.Errorf("STATUS: code %d (%v), want %d", cniCode(err), err, types.ErrPluginNotAvailable)
		}
		if err := b.Check(ctx, w.req(cni.CmdCheck, "c1", "web-c1")); err != nil {
			t.Errorf("CHECK of a pod in the old range: %v", err)
		}
		if err := b.Del(ctx, w.req(cni.CmdDel, "c1", "web-c1")); err != nil {
			t.Fatal(err)
		}
		poll(t, "one pod left", func() (bool, string) {
			_, why := b.Ready()
			return strings.Contains(why, "while 1 pods hold addresses in the old one (default/web-c2)"), why
		})
		if err := b.Del(ctx, w.req(cni.CmdDel, "c2", "web-c2")); err != nil {
			t.Fatal(err)
		}
		waitEnd(t, done)

		c, _ := w.start()
		waitReady(t, c)
		res, err := c.Add(ctx, w.req(cni.CmdAdd, "c4", "web-c4"))
		if err != nil || res.IPs[0].Address.String() != "10.244.7.2/24" {
			t.Fatalf("ADD after the restart: %v, %v; want 10.244.7.2/24", res, err)
		}
		poll(t, "SNAT of the new range", func() (bool, string) {
			d := w.backend.FakeHostRules.Dump()
			return strings.Contains(d, "snat 10.244.7.0/24 ") && !strings.Contains(d, "10.244.1.0/24"), d
		})
	})

	t.Run("while running", func(t *testing.T) {
		w := newWorld(t, twoNodesSlice()...)
		a, done := w.startEnding()
		waitReady(t, a)
		for _, id := range []string{"c1", "c2"} {
			if _, err := a.Add(ctx, w.req(cni.CmdAdd, id, "web-"+id)); err != nil {
				t.Fatal(err)
			}
		}
		w.movePodCIDR(t, "10.244.7.0/24")
		poll(t, "not ready for the changed pod CIDR", func() (bool, string) {
			_, why := a.Ready()
			return strings.Contains(why, wantWhy), why
		})
		if _, err := a.Add(ctx, w.req(cni.CmdAdd, "c3", "web-c3")); err == nil {
			t.Error("ADD succeeded after the pod CIDR changed")
		}
		if err := a.GC(ctx, w.req(cni.CmdGC, "", ""), nil); err != nil {
			t.Fatal(err)
		}
		waitEnd(t, done)
	})

	t.Run("no pods", func(t *testing.T) {
		w := newWorld(t, twoNodesSlice()...)
		a, done := w.startEnding()
		waitReady(t, a)
		w.movePodCIDR(t, "10.244.7.0/24")
		waitEnd(t, done)
	})
}
