package apiserver

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/seine-cni/seine/core/controller"
)

// historySize is how many changes a hub keeps so that a client whose watch
// broke can resume from the resource version it last saw instead of
// listing again.
const historySize = 4096

// storeWatchBuffer is the room a hub gives its controller.Store watch. A hub
// only copies pointers, so it falls behind only if it is starved; then it
// lists the store again and turns the difference into changes.
const storeWatchBuffer = 1 << 16

// kind says how a hub turns the stored objects of one resource into API
// objects.
type kind[T metav1.Object] struct {
	resource string
	singular string
	newObj   func() runtime.Object
	newList  func() runtime.Object
	// stamp returns a shallow copy of obj with its resourceVersion set; the
	// stored object is shared and immutable.
	stamp func(obj T, rv string) T
	// list wraps stamped objects into a list object.
	list func(objs []T, rv string) runtime.Object
	// patch returns the change from old to new as a patch object, or nil if
	// the resource is always sent whole.
	patch func(old, new T, rv string) runtime.Object
	// tiered, when set, says whether obj is a tiered policy, which a node's
	// view holds only if its agent asked for them (view.tiered).
	tiered func(obj T) bool
}

type entry[T any] struct {
	obj     T
	span    *controller.Span
	version uint64
	at      time.Time // when the hub stored it (the realization lag's start)
}

// change is one step of a hub's history. The objects sent for it are built
// at most once, whatever the number of watchers.
type change[T metav1.Object] struct {
	version        uint64
	old, new       entry[T]
	hadOld, hasNew bool

	full, gone, patch runtime.Object
}

// hub serves one resource of a controller.Store to any number of watchers,
// each seeing only the objects whose span holds its node (all objects for
// node ""). An object entering a node's span is ADDED for that node, leaving
// it is DELETED; a group whose members changed reaches the nodes that
// already have it as a patch.
type hub[T metav1.Object] struct {
	k     kind[T]
	store *controller.Store[T]
	log   *slog.Logger

	mu       sync.RWMutex
	items    map[string]entry[T]
	version  uint64
	history  []*change[T] // ring: history[(first+i)%historySize]
	first    int
	watchers map[*watcher]struct{}
	ready    chan struct{}

	// status, when set, fills in the status of stamped objects an admin
	// reads (get, and list without a node): NetworkPolicies' realization.
	// It runs outside the hub's lock, on copies no watcher shares.
	status func(objs []T, spans []*controller.Span)
}

func newHub[T metav1.Object](k kind[T], store *controller.Store[T], log *slog.Logger) *hub[T] {
	return &hub[T]{
		k: k, store: store, log: log.With("resource", k.resource),
		items: make(map[string]entry[T]),
		// Versions start at the wall clock in microseconds, so those of a
		// restarted controller are larger than any its clients saw before
		// and fall outside its history: they list again.
		version:  uint64(time.Now().UnixMicro()),
		watchers: make(map[*watcher]struct{}),
		ready:    make(chan struct{}),
	}
}

// run follows the store until ctx ends.
func (h *hub[T]) run(ctx context.Context) {
	for {
		w := h.resync()
		for open := true; open; {
			select {
			case <-ctx.Done():
				w.Stop()
				return
			case e, ok := <-w.Events():
				if !ok {
					h.log.Warn("fell behind the store; listing it again")
					open = false
					break
				}
				h.apply(e.Key, e.Object, e.Span, e.Type == controller.Deleted)
			}
		}
	}
}

// resync watches the store and applies the difference between its content
// and the hub's as changes.
func (h *hub[T]) resync() *controller.Watcher[T] {
	for {
		w, v := h.store.Watch(storeWatchBuffer)
		snap := h.store.List("")
		if h.store.Version() != v {
			// The list may hold changes the watcher will deliver again.
			w.Stop()
			continue
		}
		h.mu.RLock()
		var gone []string
		for key := range h.items {
			if _, ok := snap[key]; !ok {
				gone = append(gone, key)
			}
		}
		h.mu.RUnlock()
		for _, key := range gone {
			var zero T
			h.apply(key, zero, nil, true)
		}
		for key, it := range snap {
			h.mu.RLock()
			old, ok := h.items[key]
			h.mu.RUnlock()
			if !ok || any(old.obj) != any(it.Object) || old.span != it.Span {
				h.apply(key, it.Object, it.Span, false)
			}
		}
		select {
		case <-h.ready:
		default:
			close(h.ready)
		}
		return w
	}
}

// apply records a change and hands it to every watcher concerned.
func (h *hub[T]) apply(key string, obj T, span *controller.Span, deleted bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	old, hadOld := h.items[key]
	if deleted && !hadOld {
		return
	}
	h.version++
	c := &change[T]{version: h.version, old: old, hadOld: hadOld}
	if deleted {
		delete(h.items, key)
	} else {
		c.new, c.hasNew = entry[T]{obj: obj, span: span, version: h.version, at: time.Now()}, true
		h.items[key] = c.new
	}
	if len(h.history) < historySize {
		h.history = append(h.history, c)
	} else {
		h.history[h.first] = c
		h.first = (h.first + 1) % historySize
	}
	for w := range h.watchers {
		if ev, ok := h.eventFor(w.view, c); ok {
			w.send(ev)
		}
	}
}

func inSpan(span *controller.Span, node string) bool { return node == "" || span.Has(node) }

// sees says whether view v holds entry e: its span holds v's node, and it
// is not a tiered policy hidden from an agent that did not ask for them.
func (h *hub[T]) sees(v view, e entry[T]) bool {
	if !inSpan(e.span, v.node) {
		return false
	}
	return v.node == "" || v.tiered || h.k.tiered == nil || !h.k.tiered(e.obj)
}

// eventFor is what a watcher of view v sees of change c.
func (h *hub[T]) eventFor(v view, c *change[T]) (watch.Event, bool) {
	node := v.node
	oldIn := c.hadOld && h.sees(v, c.old)
	newIn := c.hasNew && h.sees(v, c.new)
	rv := strconv.FormatUint(c.version, 10)
	switch {
	case newIn && !oldIn:
		if c.full == nil {
			c.full = any(h.k.stamp(c.new.obj, rv)).(runtime.Object)
		}
		return watch.Event{Type: watch.Added, Object: c.full}, true
	case oldIn && !newIn:
		if c.gone == nil {
			c.gone = any(h.k.stamp(c.old.obj, rv)).(runtime.Object)
		}
		return watch.Event{Type: watch.Deleted, Object: c.gone}, true
	case oldIn && newIn:
		if any(c.old.obj) == any(c.new.obj) {
			return watch.Event{}, false // only the span changed
		}
		if node != "" && h.k.patch != nil {
			if c.patch == nil {
				c.patch = h.k.patch(c.old.obj, c.new.obj, rv)
			}
			return watch.Event{Type: watch.Modified, Object: c.patch}, true
		}
		if c.full == nil {
			c.full = any(h.k.stamp(c.new.obj, rv)).(runtime.Object)
		}
		return watch.Event{Type: watch.Modified, Object: c.full}, true
	}
	return watch.Event{}, false
}

// list returns the objects view v holds; without a node, with their
// status.
func (h *hub[T]) list(v view) runtime.Object {
	node := v.node
	h.mu.RLock()
	objs := make([]T, 0, len(h.items))
	var spans []*controller.Span
	for _, e := range h.items {
		if h.sees(v, e) {
			objs = append(objs, h.k.stamp(e.obj, strconv.FormatUint(e.version, 10)))
			if node == "" {
				spans = append(spans, e.span)
			}
		}
	}
	version := h.version
	h.mu.RUnlock()
	if node == "" && h.status != nil {
		h.status(objs, spans)
	}
	return h.k.list(objs, strconv.FormatUint(version, 10))
}

// get returns one object, with its status.
func (h *hub[T]) get(name string) (runtime.Object, error) {
	h.mu.RLock()
	e, ok := h.items[name]
	h.mu.RUnlock()
	if !ok {
		return nil, apierrors.NewNotFound(controlplaneResource(h.k.resource), name)
	}
	obj := h.k.stamp(e.obj, strconv.FormatUint(e.version, 10))
	if h.status != nil {
		h.status([]T{obj}, []*controller.Span{e.span})
	}
	return any(obj).(runtime.Object), nil
}

// getIn returns one object if its span holds one of nodes, as get does;
// otherwise it is not found.
func (h *hub[T]) getIn(name string, nodes []string) (runtime.Object, error) {
	h.mu.RLock()
	e, ok := h.items[name]
	h.mu.RUnlock()
	if ok && slices.ContainsFunc(nodes, func(n string) bool { return inSpan(e.span, n) }) {
		return h.get(name)
	}
	return nil, apierrors.NewNotFound(controlplaneResource(h.k.resource), name)
}

// watchFrom starts a watcher of view v. With initial set (resourceVersion ""
// or "0", or sendInitialEvents) it first sees every object of its view as
// ADDED, followed by a bookmark if bookmark is set; otherwise it resumes
// after version rv from the history, or fails with 410 Gone when rv is not
// in it any more.
func (h *hub[T]) watchFrom(v view, initial bool, rv uint64, bookmark bool) (*watcher, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var backlog []watch.Event
	switch {
	case initial:
		backlog = make([]watch.Event, 0, len(h.items)+1)
		for _, e := range h.items {
			if h.sees(v, e) {
				obj := any(h.k.stamp(e.obj, strconv.FormatUint(e.version, 10))).(runtime.Object)
				backlog = append(backlog, watch.Event{Type: watch.Added, Object: obj})
			}
		}
		if bookmark {
			obj := h.k.newObj()
			m, _ := obj.(metav1.Object)
			m.SetResourceVersion(strconv.FormatUint(h.version, 10))
			m.SetAnnotations(map[string]string{metav1.InitialEventsAnnotationKey: "true"})
			backlog = append(backlog, watch.Event{Type: watch.Bookmark, Object: obj})
		}
	case rv == h.version:
	default:
		n := len(h.history)
		if n == 0 || rv > h.version || rv+1 < h.history[h.first].version {
			return nil, apierrors.NewResourceExpired(fmt.Sprintf("resource version %d is not in the history of %s (now %d)", rv, h.k.resource, h.version))
		}
		for i := range n {
			c := h.history[(h.first+i)%historySize]
			if c.version <= rv {
				continue
			}
			if ev, ok := h.eventFor(v, c); ok {
				backlog = append(backlog, ev)
			}
		}
	}
	w := newWatcher(v, backlog, func(w *watcher) {
		h.mu.Lock()
		delete(h.watchers, w)
		h.mu.Unlock()
	})
	h.watchers[w] = struct{}{}
	return w, nil
}

// numWatchers is the number of open watches, for tests and metrics.
// since returns when the hub stored object name at generation gen with a
// span holding node; ok is false when it holds something else.
func (h *hub[T]) since(name string, gen int64, node string) (at time.Time, ok bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	e, have := h.items[name]
	if !have || e.obj.GetGeneration() != gen || !e.span.Has(node) {
		return time.Time{}, false
	}
	return e.at, true
}

// watchingNodes adds the nodes with a watch open to set.
func (h *hub[T]) watchingNodes(set map[string]struct{}) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for w := range h.watchers {
		if w.view.node != "" {
			set[w.view.node] = struct{}{}
		}
	}
}

func (h *hub[T]) numWatchers() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.watchers)
}
