// Package buildcache builds an entry of a build cache (a file or a
// directory, such as the lab's control plane or container runtime in
// ~/.cache/seine-lab) at most once, however many builders ask for it at the
// same time.
//
// Builders of one entry take turns through a lock file beside it: the first
// builds into a temporary path and renames it into place; the others wait
// (saying so) and then take the entry it built. Without the lock two
// concurrent `make` runs on one machine (two lab slots) built the same
// entry twice, and the second, clearing the temporary path, deleted the
// first's build under it. A failed or interrupted build leaves no entry, so
// it is never taken for a finished one.
package buildcache

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Ensure makes path exist. When it does not, build is called with tmp, a
// path beside it that build must create (a file or a directory), and tmp is
// renamed to path. waiting, if not nil, is called when another builder holds
// the entry and Ensure waits for it. built says whether this call built it.
func Ensure(path string, waiting func(), build func(tmp string) error) (built bool, err error) {
	if ok, err := exists(path); ok || err != nil {
		return false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return false, err
	}
	unlock, err := lock(path+".lock", waiting)
	if err != nil {
		return false, err
	}
	defer unlock()
	// Another builder may have finished while this one waited.
	if ok, err := exists(path); ok || err != nil {
		return false, err
	}
	// Under the lock the temporary path is this builder's: what is there
	// is left by a build that was interrupted.
	tmp := path + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return false, err
	}
	if err := build(tmp); err != nil {
		os.RemoveAll(tmp)
		return false, err
	}
	if ok, err := exists(tmp); !ok || err != nil {
		return false, fmt.Errorf("build of %s created nothing at %s (%v)", path, tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.RemoveAll(tmp)
		return false, err
	}
	return true, nil
}

func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}
