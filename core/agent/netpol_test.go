package agent

import (
	"context"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/seine-cni/seine/cni"
	"github.com/seine-cni/seine/core/agent/policy"
	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
)

// isolateDB isolates default/db (ingress) and lets nothing in.
func isolateDB() policy.State {
	return policy.State{
		AppliedToGroups: map[string]*controlplane.AppliedToGroup{"db": {ObjectMeta: metav1.ObjectMeta{Name: "db"},
			Members: []controlplane.GroupMember{{Pod: controlplane.PodReference{Namespace: "default", Name: "db"}}}}},
		NetworkPolicies: map[string]*controlplane.NetworkPolicy{"deny-db": {
			ObjectMeta:      metav1.ObjectMeta{Name: "deny-db", UID: types.UID("uid-deny-db"), Generation: 4},
			AppliedToGroups: []string{"db"}, PolicyTypes: []controlplane.PolicyType{controlplane.PolicyTypeIngress}}},
	}
}

// policyFlowText is the switch's policy flows without their round.
func (s *fakeSwitch) policyFlowText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var fs []*openflow.Flow
	for _, f := range s.flows {
		if pipeline.Cookie(f.CookieValue()).Category() == pipeline.CategoryPolicy {
			fs = append(fs, f)
		}
	}
	pipeline.Sort(fs)
	var lines []string
	for _, f := range fs {
		l := f.String()
		lines = append(lines, l[strings.Index(l, ", ")+2:]) // without the cookie
	}
	return strings.Join(lines, "\n")
}

// A restarted agent enforces the policies it had before the controller
// answers: its first replay installs them with the pods' flows, in the
// same round.
func TestPolicySurvivesRestart(t *testing.T) {
	w := newWorld(t, twoNodesSlice()...)
	a, stop := w.start()
	waitReady(t, a)
	ctx := context.Background()
	if _, err := a.Add(ctx, w.req(cni.CmdAdd, "c1", "db")); err != nil {
		t.Fatal(err)
	}
	if err := a.Policy().Sync(ctx, isolateDB()); err != nil {
		t.Fatal(err)
	}
	before := w.sw.policyFlowText()
	if !strings.Contains(before, "actions=drop") {
		t.Fatalf("db not isolated:\n%s", before)
	}
	if got := a.Policy().Realized(); got["deny-db"] != 4 {
		t.Errorf("realized %v", got)
	}
	stop()

	b, _ := w.start() // nobody calls Sync: the controller is down
	waitReady(t, b)
	if after := w.sw.policyFlowText(); after != before {
		t.Errorf("policy flows after the restart:\n%s\nbefore:\n%s", after, before)
	}
	if rs := w.sw.rounds(); len(rs) != 1 {
		t.Errorf("rounds %v after the restart: policy flows not replaced with the rest", rs)
	}
	if got := b.Policy().Realized(); got["deny-db"] != 4 {
		t.Errorf("realized after restart %v", got)
	}
	// ovs-vswitchd restarts: the policy flows come back with the others.
	if err := w.sw.restart(ctx); err != nil {
		t.Fatal(err)
	}
	if after := w.sw.policyFlowText(); after != before {
		t.Errorf("policy flows after a vswitchd restart:\n%s", after)
	}
	// The pod goes: so does its isolation, soon after DEL (which does not
	// wait for it).
	if err := b.Del(ctx, w.req(cni.CmdDel, "c1", "db")); err != nil {
		t.Fatal(err)
	}
	poll(t, "policy flows gone after the only target pod went", func() (bool, string) {
		return w.sw.count(pipeline.CategoryPolicy, 0) == 0, w.sw.policyFlowText()
	})
}
