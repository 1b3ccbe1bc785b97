package bundle

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"
)

// LogRing keeps a process's latest log lines, up to a size, with the time
// each was written: the log a support bundle serves wherever the process
// logs to (a pod's stderr, a Windows service's file, the lab's pipes).
type LogRing struct {
	mu    sync.Mutex
	max   int
	size  int
	lines []logLine // oldest first
	cut   int       // lines dropped to stay under max
	now   func() time.Time
}

type logLine struct {
	at   time.Time
	text []byte
}

// DefaultLogRingBytes is what seine-agent and seine-controller keep: some
// thousands of lines, little against the agent's start-up peak (under 150
// MB at 10,000 Services, with a few MB to spare).
const DefaultLogRingBytes = 1 << 20

// lineOverhead is what the ring spends on a line besides its text (its
// logLine and the slice header of its text), counted against max.
const lineOverhead = 48

// NewLogRing keeps up to max bytes of log, counting each line's overhead.
func NewLogRing(max int) *LogRing {
	return &LogRing{max: max, now: time.Now}
}

// Write keeps p as one line (slog's handlers write a record per call).
func (r *LogRing) Write(p []byte) (int, error) {
	line := logLine{at: r.now(), text: append([]byte(nil), p...)}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, line)
	r.size += len(p) + lineOverhead
	drop := 0
	for r.size > r.max && drop < len(r.lines)-1 {
		r.size -= len(r.lines[drop].text) + lineOverhead
		drop++
	}
	if drop > 0 {
		r.cut += drop
		r.lines = append(r.lines[:0], r.lines[drop:]...)
	}
	return len(p), nil
}

// WriteSince writes the lines written at or after since (all of them if
// since is zero), after a line saying how many the ring no longer holds.
func (r *LogRing) WriteSince(w io.Writer, since time.Time) error {
	r.mu.Lock()
	lines := append([]logLine(nil), r.lines...)
	cut := r.cut
	r.mu.Unlock()
	if cut > 0 {
		if _, err := io.WriteString(w, "[... earlier lines no longer held]\n"); err != nil {
			return err
		}
	}
	for _, l := range lines {
		if !since.IsZero() && l.at.Before(since) {
			continue
		}
		if _, err := w.Write(l.text); err != nil {
			return err
		}
	}
	return nil
}

// Handler returns a handler that passes every record to h and also keeps
// it, as text at h's level or Info, whichever is lower, in the ring.
func (r *LogRing) Handler(h slog.Handler) slog.Handler {
	level := slog.LevelInfo
	if h.Enabled(context.Background(), slog.LevelDebug) {
		level = slog.LevelDebug
	}
	return teeHandler{h, slog.NewTextHandler(r, &slog.HandlerOptions{Level: level})}
}

// teeHandler hands each record to both handlers that want it.
type teeHandler struct{ a, b slog.Handler }

func (t teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return t.a.Enabled(ctx, l) || t.b.Enabled(ctx, l)
}

func (t teeHandler) Handle(ctx context.Context, rec slog.Record) error {
	var errs []error
	if t.a.Enabled(ctx, rec.Level) {
		errs = append(errs, t.a.Handle(ctx, rec.Clone()))
	}
	if t.b.Enabled(ctx, rec.Level) {
		errs = append(errs, t.b.Handle(ctx, rec))
	}
	return errors.Join(errs...)
}

func (t teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return teeHandler{t.a.WithAttrs(as), t.b.WithAttrs(as)}
}

func (t teeHandler) WithGroup(name string) slog.Handler {
	return teeHandler{t.a.WithGroup(name), t.b.WithGroup(name)}
}

// Log is the ring's lines since the request's start (Request.Since).
func Log(name string, r *LogRing, since time.Time) Source {
	return Source{Name: name, Collect: func(_ context.Context, w io.Writer) error {
		if r == nil {
			return errors.New("this process keeps no log for bundles")
		}
		return r.WriteSince(w, since)
	}}
}
