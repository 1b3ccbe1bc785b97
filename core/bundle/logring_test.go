package bundle

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestLogRing(t *testing.T) {
	r := NewLogRing(300)
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
	if r.size > 300 {
		t.Errorf("ring holds %d bytes (with each line's overhead), max 300", r.size)
	}
	// However much is logged, what the ring holds stays under its max.
	big := NewLogRing(64 << 10)
	line := []byte(strings.Repeat("x", 150) + "\n")
	for range 100_000 {
		big.Write(line)
	}
	held := 0
	for _, l := range big.lines {
		held += len(l.text) + lineOverhead
	}
	if held > 64<<10 || held < 60<<10 || big.size != held {
		t.Errorf("after 100,000 lines the ring holds %d bytes (size %d), want at most 64 KiB and most of it", held, big.size)
	}
}
