package traceflow

import (
	"errors"
	"fmt"
	"testing"
)

func TestTags(t *testing.T) {
	var tags Tags
	seen := map[uint8]string{}
	for i := range MaxTag {
		name := fmt.Sprint("tf-", i)
		tag, err := tags.Allocate(name)
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		if tag == 0 || tag > MaxTag || seen[tag] != "" {
			t.Fatalf("%s got tag %d (held by %q)", name, tag, seen[tag])
		}
		seen[tag] = name
	}
	if tag, err := tags.Allocate("tf-0"); err != nil || seen[tag] != "tf-0" {
		t.Errorf("a holder asking again: %d, %v", tag, err)
	}
	if _, err := tags.Allocate("one-too-many"); !errors.Is(err, ErrNoTag) {
		t.Errorf("64th trace: %v, want ErrNoTag", err)
	}
	if tags.InUse() != MaxTag {
		t.Errorf("in use %d", tags.InUse())
	}
	tags.Release("tf-9")
	tag, err := tags.Allocate("late")
	if err != nil || seen[tag] != "tf-9" {
		t.Errorf("after a release: %d, %v (want tf-9's tag)", tag, err)
	}
	tags.Release("never-held") // no-op
	if err := tags.Claim("other", tag); err == nil {
		t.Error("claimed a held tag")
	}
	if err := tags.Claim("late", tag); err != nil {
		t.Errorf("holder re-claiming: %v", err)
	}
	if err := tags.Claim("x", 0); err == nil {
		t.Error("claimed tag 0")
	}
}

// TestTagsRoundRobin: a released tag is the last to be handed out again,
// so a slow agent's old flows for it are gone first.
func TestTagsRoundRobin(t *testing.T) {
	var tags Tags
	a, _ := tags.Allocate("a")
	tags.Release("a")
	b, _ := tags.Allocate("b")
	if a == b {
		t.Errorf("released tag %d handed out again at once", a)
	}
	var restarted Tags
	if err := restarted.Claim("b", b); err != nil {
		t.Fatal(err)
	}
	c, _ := restarted.Allocate("c")
	if c == b {
		t.Errorf("a claimed tag was allocated again")
	}
}
