package controller

import (
	"sync"
	"sync/atomic"
)

// EventType is the kind of change a store Event reports.
type EventType uint8

// Store event types.
const (
	Added EventType = iota + 1
	Modified
	Deleted
)

// Event is one change to a Store. Object and Span are the new values (the
// last values for Deleted); both are immutable.
type Event[T any] struct {
	Type    EventType
	Key     string
	Object  T
	Span    *Span
	Version uint64
	// Seq orders the events of the stores that share a sequence (the three
	// stores of one Controller): of two such events, the one with the
	// smaller Seq happened first. Zero for a store without a sequence.
	Seq uint64
}

// Item is one object of a Store with its span.
type Item[T any] struct {
	Object T
	Span   *Span
}

// Store is an in-memory keyed store of computed objects with a version
// counter that grows with every change, and watchers. Objects put in a Store
// must not be modified afterwards. A watcher that falls behind by more than
// its buffer is closed and must list again, as with the apiserver's cacher.
type Store[T any] struct {
	mu       sync.RWMutex
	items    map[string]Item[T]
	version  uint64
	watchers map[*Watcher[T]]struct{}
	seq      *atomic.Uint64 // shared with other stores, or nil
}

// NewStore returns an empty Store.
func NewStore[T any]() *Store[T] {
	return &Store[T]{items: make(map[string]Item[T]), watchers: make(map[*Watcher[T]]struct{})}
}

// Watcher receives a Store's events from the moment it was created.
type Watcher[T any] struct {
	ch    chan Event[T]
	store *Store[T]
}

// Events is closed when the watcher is stopped or fell behind.
func (w *Watcher[T]) Events() <-chan Event[T] { return w.ch }

// Stop ends the watch; it is safe to call more than once.
func (w *Watcher[T]) Stop() {
	w.store.mu.Lock()
	defer w.store.mu.Unlock()
	if _, ok := w.store.watchers[w]; ok {
		delete(w.store.watchers, w)
		close(w.ch)
	}
}

// Watch starts a watcher with room for buffer pending events, and returns
// the version it starts after.
func (s *Store[T]) Watch(buffer int) (*Watcher[T], uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := &Watcher[T]{ch: make(chan Event[T], buffer), store: s}
	s.watchers[w] = struct{}{}
	return w, s.version
}

func (s *Store[T]) notify(e Event[T]) {
	if s.seq != nil {
		e.Seq = s.seq.Add(1)
	}
	for w := range s.watchers {
		select {
		case w.ch <- e:
		default:
			delete(s.watchers, w)
			close(w.ch)
		}
	}
}

// Set adds or replaces the object under key.
func (s *Store[T]) Set(key string, obj T, span *Span) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, existed := s.items[key]
	s.items[key] = Item[T]{Object: obj, Span: span}
	s.version++
	if len(s.watchers) == 0 {
		return
	}
	t := Added
	if existed {
		t = Modified
	}
	s.notify(Event[T]{Type: t, Key: key, Object: obj, Span: span, Version: s.version})
}

// Delete removes key; deleting a missing key does nothing.
func (s *Store[T]) Delete(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.items[key]
	if !ok {
		return
	}
	delete(s.items, key)
	s.version++
	s.notify(Event[T]{Type: Deleted, Key: key, Object: old.Object, Span: old.Span, Version: s.version})
}

// Get returns the object under key and its span.
func (s *Store[T]) Get(key string) (Item[T], bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	it, ok := s.items[key]
	return it, ok
}

// Len is the number of objects.
func (s *Store[T]) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.items)
}

// Version is the number of changes so far.
func (s *Store[T]) Version() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.version
}

// List returns every object whose span holds node, or every object when
// node is empty.
func (s *Store[T]) List(node string) map[string]Item[T] {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]Item[T], len(s.items))
	for k, it := range s.items {
		if node == "" || it.Span.Has(node) {
			out[k] = it
		}
	}
	return out
}
