package policywatch

import (
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/watch"

	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
)

func member(name, ip string) cp.GroupMember {
	return cp.GroupMember{Pod: cp.PodReference{Namespace: "ns", Name: name}, IPs: []cp.IPAddress{[]byte(ip)}}
}

func TestApplyPatchesAndDangling(t *testing.T) {
	st := &state{nps: map[string]*cp.NetworkPolicy{}, atgs: map[string]*cp.AppliedToGroup{}, ags: map[string]*cp.AddressGroup{}}
	w := &Watcher{}
	np := &cp.NetworkPolicy{AppliedToGroups: []string{"g1"}, Rules: []cp.NetworkPolicyRule{{Direction: cp.DirectionIn, From: cp.NetworkPolicyPeer{AddressGroups: []string{"g1"}}}}}
	np.Name = "p"
	atg := &cp.AppliedToGroup{Members: []cp.GroupMember{member("a", "1111"), member("b", "2222")}}
	atg.Name = "g1"
	for _, ev := range []watch.Event{{Type: watch.Added, Object: np}, {Type: watch.Added, Object: atg}} {
		if err := w.apply(st, event{ev: ev}); err != nil {
			t.Fatal(err)
		}
	}
	if !st.dangling() {
		t.Error("policy refers to AddressGroup g1 not received: want dangling")
	}
	ag := &cp.AddressGroup{}
	ag.Name = "g1"
	if err := w.apply(st, event{ev: watch.Event{Type: watch.Added, Object: ag}}); err != nil {
		t.Fatal(err)
	}
	if st.dangling() {
		t.Error("every group received: want not dangling")
	}

	before := st.snapshot()
	p := &cp.AppliedToGroupPatch{AddedMembers: []cp.GroupMember{member("c", "3333")}, RemovedMembers: []cp.GroupMember{member("a", "1111")}}
	p.Name = "g1"
	if err := w.apply(st, event{ev: watch.Event{Type: watch.Modified, Object: p}}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range st.atgs["g1"].Members {
		got = append(got, m.Pod.Name)
	}
	if want := []string{"b", "c"}; !slices.Equal(got, want) {
		t.Errorf("members after patch %v, want %v", got, want)
	}
	if n := len(before.AppliedToGroups["g1"].Members); n != 2 {
		t.Errorf("a snapshot handed to the syncer changed: %d members, want 2", n)
	}

	unknown := &cp.AddressGroupPatch{}
	unknown.Name = "nope"
	if err := w.apply(st, event{ev: watch.Event{Type: watch.Modified, Object: unknown}}); err == nil {
		t.Error("patch of an unknown group: want an error (the watcher lists again)")
	}
	if err := w.apply(st, event{ev: watch.Event{Type: watch.Deleted, Object: np}}); err != nil || len(st.nps) != 0 {
		t.Errorf("delete policy: err %v, %d left", err, len(st.nps))
	}
}
