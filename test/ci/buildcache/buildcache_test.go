package buildcache

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// writeDir is a build that makes tmp a directory holding one file, slowly
// enough for concurrent builders to meet.
func writeDir(calls *atomic.Int32) func(string) error {
	return func(tmp string) error {
		calls.Add(1)
		if err := os.Mkdir(tmp, 0o755); err != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
		return os.WriteFile(filepath.Join(tmp, "prog"), []byte("built"), 0o755)
	}
}

// Builders of one entry at the same time: one builds, the others wait for
// it and take its result; none sees a half-built or deleted entry.
func TestConcurrentBuildersBuildOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cache", "runtime-0123")
	var calls, waited, builtBy atomic.Int32
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			built, err := Ensure(path, func() { waited.Add(1) }, writeDir(&calls))
			if built {
				builtBy.Add(1)
			}
			if err == nil {
				// The entry is whole when Ensure returns, whoever built it.
				var b []byte
				if b, err = os.ReadFile(filepath.Join(path, "prog")); err == nil && string(b) != "built" {
					err = errors.New("entry holds " + string(b))
				}
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("builder %d: %v", i, err)
		}
	}
	if calls.Load() != 1 || builtBy.Load() != 1 {
		t.Errorf("built %d times (%d said they built), want once", calls.Load(), builtBy.Load())
	}
	if waited.Load() == 0 {
		t.Errorf("no builder was told it waited for another")
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("temporary path left: %v", err)
	}
}

// A failed build leaves neither the entry nor its temporary path, and the
// next builder builds it again; an existing entry is taken as it is.
func TestFailedBuildLeavesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "labkube-0123")
	_, err := Ensure(path, nil, func(tmp string) error {
		os.WriteFile(tmp, []byte("half"), 0o755)
		return errors.New("compile error")
	})
	if err == nil || err.Error() != "compile error" {
		t.Fatalf("failed build: error %v", err)
	}
	for _, p := range []string{path, path + ".tmp"} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s after a failed build: %v", p, err)
		}
	}
	// A build that creates nothing fails too.
	if _, err := Ensure(path, nil, func(string) error { return nil }); err == nil {
		t.Errorf("a build that created nothing was taken")
	}
	// An interrupted build's leftovers are cleared by the next.
	os.WriteFile(path+".tmp", []byte("stale"), 0o644)
	built, err := Ensure(path, nil, func(tmp string) error { return os.WriteFile(tmp, []byte("ok"), 0o755) })
	if err != nil || !built {
		t.Fatalf("rebuild: built %v, %v", built, err)
	}
	if b, _ := os.ReadFile(path); string(b) != "ok" {
		t.Errorf("entry holds %q, want the rebuild's", b)
	}
	built, err = Ensure(path, nil, func(string) error { t.Error("an existing entry was built again"); return nil })
	if err != nil || built {
		t.Errorf("existing entry: built %v, %v", built, err)
	}
}
