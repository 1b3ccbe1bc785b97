package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// What real-node labs change on the machine itself, they change together:
// the mount points their nodes need (nodeMounts, nodeFiles) and the
// kernel settings a kubelet rewrites (kubeletSysctls). Two labs can be up
// at once (two lab slots, the lead's lab beside a test's), so neither may
// put these back while the other still runs: removing /etc/cni/net.d under
// a running node detaches that node's bind mount, and restoring a sysctl
// recorded after another lab's kubelet changed it leaves the machine
// changed. The first real-node lab up records the settings and creates
// what is missing; the last one down puts it all back. The record lives in
// one file, only while a real-node lab is up, updated under a lock.

// sharedHost is that record: the state directories of the real-node labs
// up, the paths they created (parents first) and the kubelet's sysctls as
// they were before the first lab.
type sharedHost struct {
	Labs    []string          `json:"labs"`
	Created []string          `json:"created,omitempty"`
	Sysctls map[string]string `json:"sysctls,omitempty"`
}

// hostPaths are where the machine's state is read and changed: "/" and
// /proc/sys on the machine, a temporary directory in unit tests.
type hostPaths struct {
	record string // the sharedHost file
	root   string // the file system the mount points are made in
	sysctl string // the directory of the kernel's settings
}

var machine = hostPaths{record: "/run/seine-lab-shared-host.json", root: "/", sysctl: "/proc/sys"}

// update runs fn on the record while holding an exclusive lock on the
// record's directory (a directory every machine has, so that the lock
// itself leaves no file), then writes the record back, or removes it when
// no lab is left in it and nothing remains to put back.
func (h hostPaths) update(fn func(*sharedHost) error) error {
	dir, err := os.Open(filepath.Dir(h.record))
	if err != nil {
		return err
	}
	defer dir.Close()
	if err := unix.Flock(int(dir.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", dir.Name(), err)
	}
	defer unix.Flock(int(dir.Fd()), unix.LOCK_UN)
	var s sharedHost
	b, err := os.ReadFile(h.record)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &s); err != nil {
			return fmt.Errorf("%s: %w", h.record, err)
		}
	case !errors.Is(err, os.ErrNotExist):
		return err
	}
	ferr := fn(&s)
	if len(s.Labs) == 0 && len(s.Created) == 0 && len(s.Sysctls) == 0 {
		if err := os.Remove(h.record); err != nil && !errors.Is(err, os.ErrNotExist) {
			return errors.Join(ferr, err)
		}
		return ferr
	}
	b, _ = json.MarshalIndent(s, "", "  ")
	return errors.Join(ferr, os.WriteFile(h.record, b, 0o644))
}

// pruneGone drops the labs whose state directory no longer exists (a lab
// removed by hand): they will never come down to put things back.
func (s *sharedHost) pruneGone() {
	s.Labs = slices.DeleteFunc(s.Labs, func(d string) bool {
		_, err := os.Stat(d)
		return errors.Is(err, os.ErrNotExist)
	})
}

// join adds the lab in stateDir to the record: the first lab records the
// kubelet's sysctls; each creates the mount points still missing and
// records them, also when it fails half way, so that the last lab down
// removes them.
func (h hostPaths) join(stateDir string) error {
	return h.update(func(s *sharedHost) error {
		s.pruneGone()
		if len(s.Labs) == 0 && len(s.Sysctls) == 0 {
			vals := map[string]string{}
			for _, k := range kubeletSysctls {
				b, err := os.ReadFile(filepath.Join(h.sysctl, k))
				if err != nil {
					return fmt.Errorf("read sysctl %s: %w", k, err)
				}
				vals[k] = strings.TrimSpace(string(b))
			}
			s.Sysctls = vals
		}
		if !slices.Contains(s.Labs, stateDir) {
			s.Labs = append(s.Labs, stateDir)
		}
		created, err := h.createMountPoints()
		s.Created = append(s.Created, created...)
		if err != nil {
			return fmt.Errorf("mount points: %w", err)
		}
		return nil
	})
}

// leave removes the lab in stateDir from the record; when no real-node
// lab is left, it removes the created mount points (deepest first) and
// writes the sysctls back. What could not be put back stays in the record
// with an error, for the next `lab down` to retry.
func (h hostPaths) leave(stateDir string) error {
	return h.update(func(s *sharedHost) error {
		s.Labs = slices.DeleteFunc(s.Labs, func(d string) bool { return d == stateDir })
		s.pruneGone()
		if len(s.Labs) > 0 {
			return nil
		}
		var errs []error
		var kept []string
		for i := len(s.Created) - 1; i >= 0; i-- {
			p := s.Created[i]
			if err := os.Remove(filepath.Join(h.root, p)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove %s the lab created: %w", p, err))
				kept = append([]string{p}, kept...)
			}
		}
		s.Created = kept
		for _, k := range slices.Sorted(maps.Keys(s.Sysctls)) {
			v := s.Sysctls[k]
			f := filepath.Join(h.sysctl, k)
			if cur, _ := os.ReadFile(f); strings.TrimSpace(string(cur)) != v {
				if err := os.WriteFile(f, []byte(v), 0o644); err != nil {
					errs = append(errs, fmt.Errorf("restore sysctl %s=%s: %w", k, v, err))
					continue
				}
			}
			delete(s.Sysctls, k)
		}
		return errors.Join(errs...)
	})
}

// createMountPoints creates the mount points of nodeMounts and nodeFiles
// that do not exist below h.root and returns what it created, parents
// first.
func (h hostPaths) createMountPoints() ([]string, error) {
	var created []string
	mkdirAll := func(p string) error {
		var missing []string
		for d := p; d != "/"; d = filepath.Dir(d) {
			if _, err := os.Lstat(filepath.Join(h.root, d)); err == nil {
				break
			}
			missing = append([]string{d}, missing...)
		}
		for _, d := range missing {
			if err := os.Mkdir(filepath.Join(h.root, d), 0o755); err != nil {
				return err
			}
			created = append(created, d)
		}
		return nil
	}
	for _, p := range nodeMounts {
		if err := mkdirAll(p); err != nil {
			return created, err
		}
	}
	for _, p := range nodeFiles {
		if _, err := os.Lstat(filepath.Join(h.root, p)); err == nil {
			continue
		}
		if err := mkdirAll(filepath.Dir(p)); err != nil {
			return created, err
		}
		f, err := os.OpenFile(filepath.Join(h.root, p), os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o600)
		if err != nil {
			return created, err
		}
		f.Close()
		created = append(created, p)
	}
	return created, nil
}
