package server

import (
	"context"
	"sync"
)

// locks serializes requests: at most one at a time per container ID, and GC
// alone (it reasons about every attachment at once). A waiting GC holds off
// new requests so that it is not starved. Waiting honours the context.
type locks struct {
	mu          sync.Mutex
	held        map[string]bool
	active      int  // requests holding a container lock
	exclusive   bool // a GC holds everything
	exclWaiting int
	changed     chan struct{} // closed and replaced on every release
}

func newLocks() *locks {
	return &locks{held: map[string]bool{}, changed: make(chan struct{})}
}

// lockContainer waits until no other request for id and no GC runs.
func (l *locks) lockContainer(ctx context.Context, id string) (unlock func(), err error) {
	for {
		l.mu.Lock()
		if !l.exclusive && l.exclWaiting == 0 && !l.held[id] {
			l.held[id] = true
			l.active++
			l.mu.Unlock()
			return func() {
				l.mu.Lock()
				delete(l.held, id)
				l.active--
				l.broadcastLocked()
				l.mu.Unlock()
			}, nil
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// lockAll waits until no other request runs.
func (l *locks) lockAll(ctx context.Context) (unlock func(), err error) {
	l.mu.Lock()
	l.exclWaiting++
	for l.exclusive || l.active > 0 {
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			l.mu.Lock()
			l.exclWaiting--
			l.broadcastLocked()
			l.mu.Unlock()
			return nil, ctx.Err()
		}
		l.mu.Lock()
	}
	l.exclWaiting--
	l.exclusive = true
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		l.exclusive = false
		l.broadcastLocked()
		l.mu.Unlock()
	}, nil
}

func (l *locks) broadcastLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}
