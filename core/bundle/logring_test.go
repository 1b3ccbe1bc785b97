package bundle

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestLogRing(t *testing.T) {
	r := NewLogRing(200)
	clock := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return clock }
	var stderr bytes.Buffer
	log := slog.New(r.Handler(slog.NewTextHandler(&stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	log.Info("first", "n", 1)
	clock = clock.Add(time.Hour)
	log.With("node", "n1").Warn("second")
	log.Debug("never kept") // below both handlers' levels

	// The process's own handler still gets only what it asked for.
	if s := stderr.String(); strings.Contains(s, "first") || !strings.Contains(s, "second") {
		t.Errorf("stderr: %q", s)
	}
	var all, recent bytes.Buffer
	if err := r.WriteSince(&all, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if s := all.String(); !strings.Contains(s, "msg=first n=1") || !strings.Contains(s, "msg=second node=n1") || strings.Contains(s, "never") {
		t.Errorf("ring: %q", s)
	}
	r.WriteSince(&recent, clock.Add(-time.Minute))
	if s := recent.String(); strings.Contains(s, "first") || !strings.Contains(s, "second") {
		t.Errorf("ring since the last minute: %q", s)
	}

	// Past max bytes the oldest lines go, and the reader is told.
	for range 10 {
		log.Info("filler line")
	}
	var cut bytes.Buffer
	r.WriteSince(&cut, time.Time{})
	if s := cut.String(); !strings.HasPrefix(s, "[... earlier lines no longer held]") || strings.Contains(s, "first") {
		t.Errorf("ring after overflow: %q", s)
	}
	if r.size > 200+len("time=2026-12-07T13:00:00.000Z level=INFO msg=\"filler line\"\n") {
		t.Errorf("ring holds %d bytes, max 200 and one line", r.size)
	}
}
