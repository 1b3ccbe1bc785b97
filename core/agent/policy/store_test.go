package policy

import (
	"encoding/json"
	"reflect"
	"testing"
)

// TestStateEncoderReencodesOnlyNewObjects: the encoder's file decodes to
// what json.Marshal's does, after objects came, were replaced (a new
// object) and went; an object it has encoded is not encoded again, and the
// objects that went are forgotten.
func TestStateEncoderReencodesOnlyNewObjects(t *testing.T) {
	var e stateEncoder
	check := func(s State) {
		t.Helper()
		got, err := e.encode(&s)
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(stateFile{Version: stateVersion, State: s})
		if err != nil {
			t.Fatal(err)
		}
		var g, w stateFile
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatalf("the encoder's file does not decode: %v\n%s", err, got)
		}
		if err := json.Unmarshal(want, &w); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("the encoder's file decodes to\n%+v\nwant\n%+v", g, w)
		}
	}
	s := dbPolicyState(member("default", "web-0", "10.244.1.10"))
	check(s)
	check(State{}) // every map empty: all omitted
	check(s)
	// Replaced in place in the encoder's cache: a stale encoding would
	// show the old member.
	s2 := dbPolicyState(member("default", "web-1", "10.244.1.12"))
	s2.NetworkPolicies = s.NetworkPolicies // the same policy object
	check(s2)
	if n := len(e.objs); n != 3 {
		t.Errorf("%d objects remembered; want 3 (the old groups forgotten)", n)
	}
	// An object already encoded is not encoded again: change it in place
	// (which the controller's callers must not do) and the file keeps the
	// encoding of its pointer.
	np := s2.NetworkPolicies["db"]
	np.Generation = 42
	b, err := e.encode(&s2)
	if err != nil {
		t.Fatal(err)
	}
	var f stateFile
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if f.State.NetworkPolicies["db"].Generation == 42 {
		t.Error("a policy already encoded was encoded again")
	}
}
