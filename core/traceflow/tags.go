package traceflow

import (
	"errors"
	"fmt"
	"sync"
)

// MaxTag is the highest data-plane tag: the tag is the DSCP of the
// packet's IPv4 header, six bits, and 0 means "not a trace". So 63
// Traceflows run at once (Antrea allows 14).
const MaxTag = 63

// ErrNoTag: every tag is taken by a running Traceflow.
var ErrNoTag = errors.New("every data-plane tag is in use")

// Tags hands out data-plane tags to Traceflows by name. It is safe for
// concurrent use.
type Tags struct {
	mu    sync.Mutex
	owner [MaxTag + 1]string
	next  uint8
}

// Allocate gives name a free tag, or the tag it already holds. Tags are
// handed out round-robin, so a tag just released (whose flows a slow agent
// may still be removing) is the last to come back.
func (t *Tags) Allocate(name string) (uint8, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if tag := t.find(name); tag != 0 {
		return tag, nil
	}
	for range MaxTag {
		t.next = t.next%MaxTag + 1
		if t.owner[t.next] == "" {
			t.owner[t.next] = name
			return t.next, nil
		}
	}
	return 0, fmt.Errorf("%w (%d Traceflows running)", ErrNoTag, MaxTag)
}

// Claim records that name holds tag (a controller restarting reads the
// tags of running Traceflows from their status). It fails if another
// Traceflow holds it.
func (t *Tags) Claim(name string, tag uint8) error {
	if tag == 0 || tag > MaxTag {
		return fmt.Errorf("tag %d out of range 1-%d", tag, MaxTag)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if o := t.owner[tag]; o != "" && o != name {
		return fmt.Errorf("tag %d is held by Traceflow %s", tag, o)
	}
	t.owner[tag] = name
	return nil
}

// Release frees name's tag, if it holds one.
func (t *Tags) Release(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if tag := t.find(name); tag != 0 {
		t.owner[tag] = ""
	}
}

// InUse is the number of tags held.
func (t *Tags) InUse() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, o := range t.owner[1:] {
		if o != "" {
			n++
		}
	}
	return n
}

func (t *Tags) find(name string) uint8 {
	for i, o := range t.owner {
		if i > 0 && o == name {
			return uint8(i)
		}
	}
	return 0
}
