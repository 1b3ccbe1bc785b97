package apiserver

import (
	"net/http"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/watch"
)

// maxPending is how many live events a watcher may have queued before it
// is ended with 410 Gone (its client lists again): a client that stopped
// reading must not make the controller hold every change for it.
const maxPending = 10000

// watcher is one watch. The hub queues events without blocking (it holds
// its lock); a goroutine hands them to the apiserver's watch handler.
type watcher struct {
	view   view
	remove func(*watcher)

	mu       sync.Mutex
	queue    []watch.Event
	limit    int
	overflow bool

	kick     chan struct{}
	result   chan watch.Event
	done     chan struct{}
	stopOnce sync.Once
}

func newWatcher(v view, backlog []watch.Event, remove func(*watcher)) *watcher {
	w := &watcher{
		view: v, remove: remove,
		queue: backlog, limit: len(backlog) + maxPending,
		kick: make(chan struct{}, 1), result: make(chan watch.Event), done: make(chan struct{}),
	}
	if len(backlog) > 0 {
		w.kick <- struct{}{}
	}
	go w.pump()
	return w
}

// send queues ev; called with the hub's lock held.
func (w *watcher) send(ev watch.Event) {
	w.mu.Lock()
	if w.overflow {
		w.mu.Unlock()
		return
	}
	if len(w.queue) >= w.limit {
		w.overflow = true
		st := apierrors.NewResourceExpired("the watch fell behind; list again").Status()
		st.Code = http.StatusGone
		w.queue = []watch.Event{{Type: watch.Error, Object: &st}}
	} else {
		w.queue = append(w.queue, ev)
	}
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *watcher) pump() {
	defer close(w.result)
	for {
		select {
		case <-w.done:
			return
		case <-w.kick:
		}
		w.mu.Lock()
		batch := w.queue
		w.queue = nil
		overflow := w.overflow
		w.mu.Unlock()
		for _, ev := range batch {
			ev.Object = shallowCopy(ev.Object)
			select {
			case w.result <- ev:
			case <-w.done:
				return
			}
		}
		if overflow {
			w.Stop()
			return
		}
	}
}

// ResultChan implements watch.Interface.
func (w *watcher) ResultChan() <-chan watch.Event { return w.result }

// Stop implements watch.Interface.
func (w *watcher) Stop() {
	w.stopOnce.Do(func() {
		w.remove(w)
		close(w.done)
	})
}
