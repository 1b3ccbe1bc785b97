package netpol

import (
	"fmt"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seine-cni/seine/core/client/clientset/versioned"
)

// statusCase: the realization status an admin reads (issue #5: "which
// nodes have realized which policy generation"), through the
// kube-apiserver's aggregation as `kubectl get
// networkpolicies.controlplane.seine.io` reads it. A policy on the pods of
// x (one on each node) is realized by the three agents; with one agent
// stopped, an update is realized by two and the status never claims three;
// the restarted agent catches up; the deleted policy is gone.
var statusCase = labCase{
	name: "realization-status", upstream: "(none: issue #5, realization status)",
	run: runStatus,
}

// statusPolicy admits every pod to the pods of its namespace; the update
// adds a documentation CIDR, changing the spec but not the matrices.
func statusPolicy(update bool) *networkingv1.NetworkPolicy {
	from := peers(fromNS(all()))
	if update {
		from = append(from, cidr("192.0.2.0/24"))
	}
	return ingressPolicy("status", all(), in(from))
}

// policyStatus is the status of one controlplane NetworkPolicy.
type policyStatus struct {
	found             bool
	generation        int64
	desired, realized int64
	phase             string
	err               error
}

func (p policyStatus) String() string {
	switch {
	case p.err != nil:
		return p.err.Error()
	case !p.found:
		return "not found"
	}
	return fmt.Sprintf("generation %d: %d/%d realized, %s", p.generation, p.realized, p.desired, p.phase)
}

func runStatus(t *testing.T, s *suite) {
	admin, err := s.c.RESTConfig("admin")
	if err != nil {
		t.Fatal(err)
	}
	cpcs, err := versioned.NewForConfig(admin)
	if err != nil {
		t.Fatal(err)
	}
	nps := cpcs.ControlplaneV1beta1().NetworkPolicies()

	created := time.Now()
	s.create(t, "x", statusPolicy(false))
	k8s, err := s.cs.NetworkingV1().NetworkPolicies("x").Get(s.ctx, "status", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	name := string(k8s.UID) // the internal policy is named after the user policy's UID
	get := func() policyStatus {
		o, err := nps.Get(s.ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return policyStatus{}
		} else if err != nil {
			return policyStatus{err: err}
		}
		st := policyStatus{found: true}
		if s := o.Status; s != nil {
			st.generation, st.desired, st.realized, st.phase = s.Generation, int64(s.DesiredNodes), int64(s.RealizedNodes), string(s.Phase)
		}
		return st
	}
	// await polls the status until want holds and returns how long it took.
	await := func(what string, from time.Time, want func(policyStatus) bool) time.Duration {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			st := get()
			if want(st) {
				d := time.Since(from)
				t.Logf("%s after %s: %s", what, d.Round(time.Millisecond), st)
				return d
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not after 30s; status %s", what, st)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	realizedBy := func(gen, n int64, phase string) func(policyStatus) bool {
		return func(st policyStatus) bool {
			return st.found && st.generation == gen && st.desired == 3 && st.realized == n && st.phase == phase
		}
	}

	// a) Created: realized on the three nodes.
	gen := k8s.Generation
	await("policy created; realized on 3 nodes", created, realizedBy(gen, 3, "Realized"))

	// b) One agent stopped, the spec updated: two nodes realize the new
	// generation and the status keeps saying so.
	node := s.node[parsePodRef("x/a")]
	if err := s.c.StopAgent(node); err != nil {
		t.Fatal(err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			if err := s.c.StartAgent(node); err != nil {
				t.Errorf("restart the agent of %s: %v", node, err)
			}
		}
	})
	updated := time.Now()
	s.update(t, "x", statusPolicy(true))
	if k8s, err = s.cs.NetworkingV1().NetworkPolicies("x").Get(s.ctx, "status", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	if k8s.Generation != gen+1 {
		t.Fatalf("generation %d after a spec update, want %d", k8s.Generation, gen+1)
	}
	gen = k8s.Generation
	await("spec updated with the agent of "+node+" stopped; realized on 2 nodes", updated, realizedBy(gen, 2, "Realizing"))
	// Watch a while: the stopped node must never be counted.
	for hold := time.Now().Add(3 * time.Second); time.Now().Before(hold); time.Sleep(100 * time.Millisecond) {
		if st := get(); !realizedBy(gen, 2, "Realizing")(st) {
			t.Fatalf("with the agent of %s stopped the status became %s, want generation %d: 2/3 realized, Realizing", node, st, gen)
		}
	}
	started := time.Now()
	if err := s.c.StartAgent(node); err != nil {
		t.Fatal(err)
	}
	restarted = true
	await("agent of "+node+" restarted; realized on 3 nodes", started, realizedBy(gen, 3, "Realized"))
	if err := s.waitAgentReady(node, time.Minute); err != nil {
		t.Fatal(err)
	}

	// c) Deleted: the controlplane policy is gone.
	deleted := time.Now()
	s.deletePolicy(t, "x", "status")
	await("policy deleted; gone", deleted, func(st policyStatus) bool { return !st.found && st.err == nil })
}
