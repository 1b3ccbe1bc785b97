package policy

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/intstr"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
)

func renderRealizations(m map[string]Realization) string {
	var out []string
	for _, name := range slices.Sorted(maps.Keys(m)) {
		out = append(out, fmt.Sprintf("%s@%d %s", name, m[name].Generation, m[name].Error))
	}
	return strings.TrimSpace(strings.Join(out, "; "))
}

// changed reports whether the controller signalled a change since the last
// call, consuming the signal.
func changed(c *Controller) bool {
	select {
	case <-c.RealizationsChanged():
		return true
	default:
		return false
	}
}

// What a node reports: realized policies at their generation; a policy with
// an invalid rule with the reason; a policy waiting for a group, nothing. A
// change is signalled once per change of that set, never for a re-sync.
func TestRealizations(t *testing.T) {
	ctx := context.Background()
	n := newFakeNode(webPod, dbPod)
	c := newController(t, n, "")
	if changed(c) {
		t.Error("a change signalled before any sync")
	}
	s := dbPolicyState(member("default", "web-0", "10.244.1.10"))
	if err := c.Sync(ctx, s); err != nil {
		t.Fatal(err)
	}
	if got, want := renderRealizations(c.Realizations()), "db@1"; got != want {
		t.Errorf("realizations %q, want %q", got, want)
	}
	if !changed(c) {
		t.Error("no change signalled after the first realization")
	}
	if err := c.Sync(ctx, dbPolicyState(member("default", "web-0", "10.244.1.10"))); err != nil {
		t.Fatal(err)
	}
	if changed(c) {
		t.Error("a re-sync of the same state signalled a change")
	}

	// Generation 2 has a port out of range (invalid: the node reports it),
	// and a second policy waits for an AddressGroup (transient: not
	// reported).
	s = dbPolicyState(member("default", "web-0", "10.244.1.10"))
	bad := intstr.FromInt32(70000)
	s.NetworkPolicies["db"] = netpol("db", 2, []string{"db"}, ingressOnly,
		controlplane.NetworkPolicyRule{Direction: controlplane.DirectionIn, Services: []controlplane.Service{{Protocol: controlplane.ProtocolTCP, Port: &bad}}})
	s.NetworkPolicies["waits"] = netpol("waits", 4, []string{"db"}, ingressOnly,
		controlplane.NetworkPolicyRule{Direction: controlplane.DirectionIn, From: controlplane.NetworkPolicyPeer{AddressGroups: []string{"later"}}})
	if err := c.Sync(ctx, s); err != nil {
		t.Fatal(err)
	}
	if got, want := renderRealizations(c.Realizations()), "db@2 rule 0: port 70000 out of range"; got != want {
		t.Errorf("realizations %q, want %q", got, want)
	}
	if _, ok := c.Realized()["db"]; ok {
		t.Errorf("a policy with an invalid rule counts as realized: %v", c.Realized())
	}
	if !changed(c) {
		t.Error("no change signalled after a policy failed")
	}
	if err := c.Sync(ctx, State{}); err != nil {
		t.Fatal(err)
	}
	if got := c.Realizations(); len(got) != 0 || !changed(c) {
		t.Errorf("after every policy went: %v (changed signalled: want true)", got)
	}
}

// Flows that cannot be installed leave the old ones enforcing: a policy
// already realized stays so, one the failed change would have brought to a
// new generation reports the error, and the next successful sync clears it.
func TestRealizationsWhenInstallFails(t *testing.T) {
	ctx := context.Background()
	n := newFakeNode(webPod, dbPod)
	c := newController(t, n, "")
	if err := c.Sync(ctx, dbPolicyState(member("default", "web-0", "10.244.1.10"))); err != nil {
		t.Fatal(err)
	}
	changed(c)
	n.fail = errors.New("bundle refused")
	s := dbPolicyState(member("default", "web-0", "10.244.1.10"), member("default", "web-1", "10.244.2.11"))
	s.NetworkPolicies["db"].Generation = 2
	if err := c.Sync(ctx, s); err == nil {
		t.Fatal("sync succeeded with a failing bridge")
	}
	if got, want := renderRealizations(c.Realizations()), "db@2 flows not installed: install 1 policy flow changes: bundle refused"; got != want {
		t.Errorf("realizations %q, want %q", got, want)
	}
	if got := c.Realized()["db"]; got != 1 {
		t.Errorf("realized generation of db = %d after the failure, want 1 (its flows are still in)", got)
	}
	if !changed(c) {
		t.Error("no change signalled after the failure")
	}
	n.fail = nil
	if err := c.Sync(ctx, s); err != nil {
		t.Fatal(err)
	}
	if got, want := renderRealizations(c.Realizations()), "db@2"; got != want {
		t.Errorf("realizations %q after the bridge recovered, want %q", got, want)
	}
}
