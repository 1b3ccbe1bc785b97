package agent

import (
	"runtime/debug"
	"testing"
)

// TestTightGCRestores: overlapping replays (agents in one process) leave
// the GC target as they found it, and hold replayGCPercent meanwhile.
func TestTightGCRestores(t *testing.T) {
	before := debug.SetGCPercent(77)
	defer debug.SetGCPercent(before)
	a := tightGC()
	b := tightGC()
	if got := debug.SetGCPercent(replayGCPercent); got != replayGCPercent {
		t.Errorf("during replays: GC target %d, want %d", got, replayGCPercent)
	}
	a()
	if got := debug.SetGCPercent(replayGCPercent); got != replayGCPercent {
		t.Errorf("one replay still running: GC target %d, want %d", got, replayGCPercent)
	}
	b()
	if got := debug.SetGCPercent(77); got != 77 {
		t.Errorf("after both: GC target %d, want 77 back", got)
	}
}
