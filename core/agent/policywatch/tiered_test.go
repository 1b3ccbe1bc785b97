package policywatch

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
)

// selectorsSeen returns the field selectors of the requests so far, sorted.
func (f *fakeAPI) selectorsSeen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := slices.Clone(f.selectors)
	slices.Sort(s)
	return s
}

// The agent enforces tiered policies, so it asks for them: the controller
// leaves them out of a node's view without tiered=true (an older agent
// would read their Drop rules as allows).
func TestAsksForTieredPolicies(t *testing.T) {
	f := newFakeAPI()
	f.set([]cp.NetworkPolicy{npRefs("p", "g1")}, []cp.AppliedToGroup{atgOf("g1", "a")}, nil)
	rec := &syncRecorder{}
	runWatcher(t, f, rec, Options{})
	for _, res := range []string{AppliedToGroups, NetworkPolicies, AddressGroups} {
		f.watcher(t, res)
	}
	var want []string
	for _, verb := range []string{"list", "watch"} {
		for _, res := range []string{AddressGroups, AppliedToGroups, NetworkPolicies} {
			want = append(want, verb+" "+res+" nodeName=n1,tiered=true")
		}
	}
	if got := f.selectorsSeen(); !slices.Equal(got, want) {
		t.Errorf("requests:\n got %q\nwant %q", got, want)
	}
}

// A controller older than tiered policy refuses the field (its field label
// conversion knows nodeName only: 400). It has no tiered policy to hide, so
// the agent lists and watches without it, and its state is synced.
func TestOlderControllerWithoutTieredField(t *testing.T) {
	f := newFakeAPI()
	f.refuse = func(sel string) error {
		if strings.Contains(sel, cp.TieredField) {
			return apierrors.NewBadRequest(fmt.Sprintf("field label %q is not supported: use %q", cp.TieredField, cp.NodeNameField))
		}
		return nil
	}
	f.set([]cp.NetworkPolicy{npRefs("p", "g1")}, []cp.AppliedToGroup{atgOf("g1", "a")}, nil)
	rec := &syncRecorder{}
	runWatcher(t, f, rec, Options{})
	for _, res := range []string{AppliedToGroups, NetworkPolicies, AddressGroups} {
		f.watcher(t, res)
	}
	waitUntil(t, "the listed state synced", func() bool { return len(rec.got()) == 1 })
	if st := rec.got()[0]; st.NetworkPolicies["p"] == nil || st.AppliedToGroups["g1"] == nil {
		t.Errorf("synced state %+v, want policy p and group g1", st)
	}
	// One refused list, then every request without the field.
	want := []string{"list appliedtogroups nodeName=n1", "list appliedtogroups nodeName=n1,tiered=true"}
	for _, verb := range []string{"list", "watch"} {
		for _, res := range []string{AddressGroups, AppliedToGroups, NetworkPolicies} {
			if verb+res != "list"+AppliedToGroups {
				want = append(want, verb+" "+res+" nodeName=n1")
			}
		}
	}
	slices.Sort(want)
	if got := f.selectorsSeen(); !slices.Equal(got, want) {
		t.Errorf("requests:\n got %q\nwant %q", got, want)
	}

	// Any other refusal is not taken for an old controller.
	c := newClientFor(newFakeAPI().cs.ControlplaneV1beta1(), "n1")
	if refusedTiered(apierrors.NewBadRequest("label selectors are not supported")) || refusedTiered(apierrors.NewForbidden(cp.Resource("networkpolicies"), "", fmt.Errorf(`"tiered"`))) {
		t.Error("an unrelated error taken for a refused tiered field")
	}
	if c.Untiered() {
		t.Error("a new client starts untiered")
	}
}
