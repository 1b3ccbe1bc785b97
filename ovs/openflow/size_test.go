package openflow

import (
	"bytes"
	"errors"
	"runtime"
	"testing"
)

// conjFlow is a policy clause flow carrying n conjunction actions (16
// bytes each), the shape that outgrew 64 KiB in the agent.
func conjFlow(n int) *Flow {
	a := NewActions()
	for i := range n {
		a.Conjunction(uint32(i+1), 3, 3)
	}
	return NewFlow(40, 200).Cookie(7).Match(NewMatch().TCP().TCPDst(80)).Actions(a)
}

// largestConjFlow is the flow with the most conjunctions whose flow-mod
// fits in max bytes.
func largestConjFlow(t *testing.T, max int) (*Flow, int) {
	t.Helper()
	base := conjFlow(1).flowModLen() - 16
	n := (max - base) / 16
	if conjFlow(n).flowModLen() > max || conjFlow(n+1).flowModLen() <= max {
		t.Fatalf("%d conjunctions: %d bytes; %d: %d bytes; max %d", n, conjFlow(n).flowModLen(), n+1, conjFlow(n+1).flowModLen(), max)
	}
	return conjFlow(n), n
}

func TestMarshalRefusesOversizedMessage(t *testing.T) {
	// The case: 5,000 conjunctions marshalled to 80,064 bytes
	// whose header said 14,528.
	big := AddFlow(conjFlow(5000))
	b, err := Marshal(big, 1)
	if !errors.Is(err, ErrTooLarge) || len(b) != 0 {
		t.Fatalf("Marshal of a 5,000-conjunction flow = %d bytes, %v; want no bytes and ErrTooLarge", len(b), err)
	}
	t.Logf("error: %v", err)
	prefix := []byte{1, 2, 3}
	out, err := AppendMessage(prefix, big, 1)
	if !errors.Is(err, ErrTooLarge) || string(out) != string(prefix) {
		t.Errorf("AppendMessage after 3 bytes = %d bytes, %v; want the 3 bytes back and ErrTooLarge", len(out), err)
	}

	// The largest flow-mod that OVS can dump back is encoded whole, with
	// its true length, in a message or a bundle.
	f, n := largestConjFlow(t, MaxFlowModLen)
	b, err = Marshal(AddFlow(f), 1)
	if err != nil {
		t.Fatalf("flow-mod of %d bytes (%d conjunctions): %v", f.flowModLen(), n, err)
	}
	if h, _ := ParseHeader(b); int(h.Length) != len(b) || len(b) != f.flowModLen() {
		t.Errorf("header length %d, message %d bytes, flowModLen %d", h.Length, len(b), f.flowModLen())
	}
	if _, m, err := Unmarshal(b); err != nil || m.(*FlowMod).Flow.ActionsString() != f.ActionsString() {
		t.Errorf("the largest flow-mod does not decode back: %v", err)
	}
	if _, err := appendBundleAdd(nil, 1, 0, AddFlow(f), 1); err != nil {
		t.Errorf("bundle-add of the largest flow: %v", err)
	}
	// One conjunction more does not go, in a message or a bundle.
	if _, err := Marshal(AddFlow(conjFlow(n+1)), 1); !errors.Is(err, ErrTooLarge) {
		t.Errorf("%d conjunctions: %v, want ErrTooLarge", n+1, err)
	}
	b, err = appendBundleAdd(prefix, 1, 0, AddFlow(conjFlow(n+1)), 1)
	if !errors.Is(err, ErrTooLarge) || string(b) != string(prefix) {
		t.Errorf("bundle-add of %d conjunctions = %d bytes, %v; want the prefix back and ErrTooLarge", n+1, len(b), err)
	}

	// Any other message may have 64 KiB, 16 bytes less inside a bundle.
	raw := func(n int) *Raw { return &Raw{Type: 99, Body: make([]byte, n-headerLen)} }
	if b, err := Marshal(raw(MaxMessageLen), 1); err != nil || len(b) != MaxMessageLen || be.Uint16(b[2:]) != MaxMessageLen {
		t.Errorf("a message of MaxMessageLen: %d bytes, %v", len(b), err)
	}
	if _, err := Marshal(raw(MaxMessageLen+1), 1); !errors.Is(err, ErrTooLarge) {
		t.Errorf("a message of MaxMessageLen+1: %v, want ErrTooLarge", err)
	}
	if _, err := appendBundleAdd(nil, 1, 0, raw(MaxBundledLen), 1); err != nil {
		t.Errorf("bundle-add of MaxBundledLen: %v", err)
	}
	if _, err := appendBundleAdd(nil, 1, 0, raw(MaxBundledLen+1), 1); !errors.Is(err, ErrTooLarge) {
		t.Errorf("bundle-add of MaxBundledLen+1: %v, want ErrTooLarge", err)
	}
	// Marshalling a BundleAdd value checks the outer length too.
	if _, err := Marshal(&BundleAdd{BundleID: 1, Message: raw(MaxBundledLen + 1)}, 1); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Marshal(BundleAdd) past MaxMessageLen: %v, want ErrTooLarge", err)
	}
}

func TestGroupModRefusesTooManyBuckets(t *testing.T) {
	g := lbGroup(2000)
	if _, err := Marshal(AddGroup(g), 1); !errors.Is(err, ErrTooLarge) {
		t.Errorf("group of 2,000 buckets: %v, want ErrTooLarge", err)
	}
}

// lbGroup is a service load-balancing group of n buckets shaped like the
// proxy's (two register loads and a resubmit: 56 bytes a bucket).
func lbGroup(n int) *GroupEntry {
	g := &GroupEntry{ID: 7, Type: GroupTypeSelect, SelectionMethod: "hash", Fields: []*Field{FieldIPSrc, FieldIPDst}}
	for i := range n {
		g.Buckets = append(g.Buckets, Bucket{ID: uint32(i), Weight: 100, Actions: NewActions().
			SetReg(3, 0x0a000000|uint32(i)).SetReg(4, 0x10050).Resubmit(PortInPort, 42)})
	}
	return g
}

func TestGroupModsSplitsLargeGroups(t *testing.T) {
	for _, n := range []int{0, 1, 500, 3000} {
		g := lbGroup(n)
		for _, cmd := range []uint16{GroupAdd, GroupModify} {
			msgs, err := GroupMods(cmd, g)
			if err != nil {
				t.Fatalf("%d buckets: %v", n, err)
			}
			var got []Bucket
			for i, m := range msgs {
				gm := m.(*GroupMod)
				want := GroupInsertBuckets
				if i == 0 {
					want = cmd
				}
				if gm.Command != want || gm.Group.ID != g.ID || gm.Group.Type != g.Type {
					t.Errorf("%d buckets, message %d: command %d group %d type %d", n, i, gm.Command, gm.Group.ID, gm.Group.Type)
				}
				b, err := appendBundleAdd(nil, 1, 0, m, 1)
				if err != nil {
					t.Fatalf("%d buckets, message %d does not fit a bundle: %v", n, i, err)
				}
				// Decoded from the wire: what OVS reads.
				_, dm, err := Unmarshal(b)
				if err != nil {
					t.Fatal(err)
				}
				dgm := dm.(*BundleAdd).Message.(*GroupMod)
				if i > 0 && (dgm.CommandBucketID != BucketLast || dgm.Group.SelectionMethod != "") {
					t.Errorf("insert %d: command_bucket_id %#x, selection method %q", i, dgm.CommandBucketID, dgm.Group.SelectionMethod)
				}
				if i == 0 && dgm.Group.SelectionMethod != "hash" {
					t.Errorf("first message lost the selection method")
				}
				got = append(got, dgm.Group.Buckets...)
			}
			if len(got) != n {
				t.Fatalf("%d buckets split into %d messages carrying %d", n, len(msgs), len(got))
			}
			for i := range got {
				if got[i].ID != uint32(i) || got[i].Weight != 100 {
					t.Fatalf("bucket %d came back as id %d weight %d", i, got[i].ID, got[i].Weight)
				}
			}
			if n == 3000 && len(msgs) < 3 {
				t.Errorf("3,000 buckets in %d messages", len(msgs))
			}
			if n <= 500 && len(msgs) != 1 {
				t.Errorf("%d buckets in %d messages, want 1", n, len(msgs))
			}
		}
	}
}

func TestGroupModsRefusesBadInput(t *testing.T) {
	dup := lbGroup(3)
	dup.Buckets[2].ID = 0
	huge := lbGroup(1)
	a := NewActions()
	for range 5000 {
		a.Conjunction(1, 1, 2) // any action: 16 bytes each
	}
	huge.Buckets[0].Actions = a
	reserved := lbGroup(1)
	reserved.Buckets[0].ID = BucketLast
	for name, c := range map[string]struct {
		cmd uint16
		g   *GroupEntry
		is  error
	}{
		"duplicate bucket id":      {GroupAdd, dup, nil},
		"bucket larger than 64KiB": {GroupModify, huge, ErrTooLarge},
		"reserved bucket id":       {GroupAdd, reserved, nil},
		"delete is not split":      {GroupDelete, lbGroup(1), nil},
	} {
		msgs, err := GroupMods(c.cmd, c.g)
		if err == nil || msgs != nil || c.is != nil && !errors.Is(err, c.is) {
			t.Errorf("%s: %d messages, %v", name, len(msgs), err)
		}
	}
}

func TestApplyAndSendRefuseOversizedMessages(t *testing.T) {
	fs := newFakeSwitch(t)
	ctx := fakeCtx(t)
	c, err := Dial(ctx, fs.addr(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	before := len(fs.messages())
	small := AddFlow(conjFlow(1))
	if err := c.Apply(ctx, small, AddFlow(conjFlow(5000)), small); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Apply with a 5,000-conjunction flow: %v, want ErrTooLarge", err)
	}
	if err := c.Send(AddFlow(conjFlow(5000))); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Send of a 5,000-conjunction flow: %v, want ErrTooLarge", err)
	}
	// Nothing reached the switch, and the connection still works.
	if err := c.Barrier(ctx); err != nil {
		t.Fatalf("connection after refused messages: %v", err)
	}
	if got := fs.messages()[before:]; len(got) != 0 {
		t.Errorf("the switch received %d messages", len(got))
	}
}

// TestEncoded: an Encoded message goes on the wire exactly as the message
// it was made from, alone and in a bundle; Describe names what it encodes;
// one too large for a bundle is refused when encoded.
func TestEncoded(t *testing.T) {
	g := lbGroup(10)
	gm := &GroupMod{Command: GroupAdd, Group: g}
	e, err := Encoded(gm)
	if err != nil {
		t.Fatal(err)
	}
	want, err := Marshal(gm, 42)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Marshal(e, 42); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("Marshal(Encoded(m)) differs from Marshal(m) (%v):\n%x\n%x", err, got, want)
	}
	wantAdd, _ := appendBundleAdd(nil, 3, BundleAtomic|BundleOrdered, gm, 42)
	if got, err := appendBundleAdd(nil, 3, BundleAtomic|BundleOrdered, e, 42); err != nil || !bytes.Equal(got, wantAdd) {
		t.Fatalf("bundle add of Encoded(m) differs from m's (%v)", err)
	}
	if got, want := Describe(e), Describe(gm); got != want {
		t.Errorf("Describe(Encoded(m)) = %q, want %q", got, want)
	}
	// What an Encoded message keeps alive is its wire size (within the
	// allocator's size classes, at most 1/8 more) and the Raw, not the
	// slack of the buffer it was encoded into. (cap(e.Body) cannot tell:
	// a clipped slice hides its array's slack.)
	const n = 1000
	kept := make([]*Raw, n)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range kept {
		if kept[i], err = Encoded(gm); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := int(after.HeapAlloc-before.HeapAlloc) / n
	if limit := len(e.Body) + len(e.Body)/8 + 64; per > limit {
		t.Errorf("an Encoded message of %d bytes keeps %d bytes alive, want at most %d", len(e.Body), per, limit)
	}
	runtime.KeepAlive(kept)
	if _, err := Encoded(&GroupMod{Command: GroupAdd, Group: lbGroup(3000)}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Encoded of a 3,000-bucket group_mod: %v, want ErrTooLarge", err)
	}
	if _, err := Encoded(AddFlow(conjFlow(5000))); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Encoded of a 5,000-conjunction flow_mod: %v, want ErrTooLarge", err)
	}
}
