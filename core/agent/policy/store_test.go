package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
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

// roundTrip is s as the state file gives it back.
func roundTrip(t *testing.T, s State) State {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var out State
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestStateJournal: after the first write (the whole file), a change is a
// batch appended to the journal and the file stays; reading gives the
// last State written, with objects added, replaced and deleted; a write
// of the same State appends nothing; a torn last line (a crash in the
// middle of an append) is ignored; a new process's first write (a new
// encoder) rewrites the file numbered after the journal, and a journal
// left beside it (a crash before its removal) is not applied again; a
// journal that would pass half the file's size rewrites the file.
func TestStateJournal(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "state.json")
	read := func() State {
		t.Helper()
		s, err := readState(file)
		if err != nil || s == nil {
			t.Fatalf("read: %v", err)
		}
		return *s
	}
	want := func(s State, what string) {
		t.Helper()
		if got, w := read(), roundTrip(t, s); !reflect.DeepEqual(got, w) {
			t.Fatalf("%s: read\n%+v\nwant\n%+v", what, got, w)
		}
	}
	var e stateEncoder
	s1 := dbPolicyState(member("default", "web-0", "10.244.1.10"))
	for i := range 40 { // a file large enough for a few batches
		s1.AddressGroups[fmt.Sprintf("pad%d", i)] = ag(fmt.Sprintf("pad%d", i), member("default", fmt.Sprintf("p%d", i), "10.244.3.1"))
	}
	if err := e.write(file, &s1); err != nil {
		t.Fatal(err)
	}
	base, _ := os.ReadFile(file)
	want(s1, "first write")
	// A changed policy, a new group, a deleted group.
	s2 := State{NetworkPolicies: maps.Clone(s1.NetworkPolicies), AppliedToGroups: maps.Clone(s1.AppliedToGroups), AddressGroups: maps.Clone(s1.AddressGroups)}
	np := *s2.NetworkPolicies["db"]
	np.Generation = 7
	s2.NetworkPolicies["db"] = &np
	s2.AddressGroups["more"] = ag("more", member("default", "x", "10.244.2.2"))
	delete(s2.AddressGroups, "pad3")
	if err := e.write(file, &s2); err != nil {
		t.Fatal(err)
	}
	if now, _ := os.ReadFile(file); !bytes.Equal(now, base) {
		t.Error("a small change rewrote the file")
	}
	j, err := os.ReadFile(journalPath(file))
	if err != nil || bytes.Count(j, []byte("\n")) != 4 {
		t.Fatalf("journal after one change: %v\n%s", err, j)
	}
	want(s2, "one batch")
	if err := e.write(file, &s2); err != nil {
		t.Fatal(err)
	}
	if j2, _ := os.ReadFile(journalPath(file)); !bytes.Equal(j2, j) {
		t.Error("the same State appended to the journal")
	}
	// A torn append: half a record and no commit.
	f, err := os.OpenFile(journalPath(file), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"seq":3,"kind":"np","name":"db","deleted":true}` + "\n" + `{"seq":3,"kind":"ag","na`)
	f.Close()
	want(s2, "a torn batch")
	// A new process: its first write rewrites the file after the journal.
	leftover, _ := os.ReadFile(journalPath(file))
	var e2 stateEncoder
	s3 := State{NetworkPolicies: maps.Clone(s2.NetworkPolicies), AppliedToGroups: maps.Clone(s2.AppliedToGroups), AddressGroups: maps.Clone(s2.AddressGroups)}
	delete(s3.NetworkPolicies, "db")
	if err := e2.write(file, &s3); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(journalPath(file)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("journal left after the file was rewritten: %v", err)
	}
	if err := os.WriteFile(journalPath(file), leftover, 0o600); err != nil {
		t.Fatal(err)
	}
	want(s3, "an old journal beside a newer file")
	// Many changes: the journal stays under half the file.
	for i := range 60 {
		s := State{NetworkPolicies: s3.NetworkPolicies, AppliedToGroups: s3.AppliedToGroups, AddressGroups: maps.Clone(s3.AddressGroups)}
		s.AddressGroups["more"] = ag("more", member("default", "x", fmt.Sprintf("10.244.2.%d", i)))
		if err := e2.write(file, &s); err != nil {
			t.Fatal(err)
		}
		s3 = s
	}
	want(s3, "after many batches")
	fi, _ := os.Stat(file)
	if ji, err := os.Stat(journalPath(file)); err == nil && ji.Size() > fi.Size()/2+1024 {
		t.Errorf("journal %d bytes beside a file of %d", ji.Size(), fi.Size())
	}
}
