package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// stateVersion is the format of the state file; a file of another version
// is ignored (with an error) rather than misread.
const stateVersion = 1

type stateFile struct {
	Version int `json:"version"`
	// Seq numbers the last change the file holds: the journal's changes
	// after it are applied on top of it (journal.go).
	Seq   uint64 `json:"seq,omitempty"`
	State State  `json:"state"`
}

// writeState replaces path with s durably: a temporary file in the same
// directory is written and fsynced, renamed over path, and the directory
// is fsynced (where the OS allows), so a crash leaves the old or the new
// file, never a torn one.
func writeState(path string, s *State) error {
	var e stateEncoder
	return e.writeBase(path, s)
}

// stateEncoder writes State files, encoding only the objects that are not
// the ones (the same pointers) it encoded before: with 10,000 policies,
// encoding them all took ~14 ms of every one-policy change. The objects
// must not change in place once written (the watch decodes a new object
// for every change). The file is what json.Marshal of a stateFile gives,
// its map keys in no particular order; a change is appended to the
// journal beside it while the journal is small (journal.go).
type stateEncoder struct {
	gen  uint64
	objs map[any]*encoded // by the object's pointer
	size int              // of the last file
	j    journal
}

// encoded is one object of the file: b is its map entry `"name":{object}`,
// v the object alone (b's tail).
type encoded struct {
	gen  uint64
	name string
	b, v []byte
}

// writeBase replaces path with s (and a new sequence number) and drops the
// journal.
func (e *stateEncoder) writeBase(path string, s *State) error {
	e.j.seq++
	b, err := e.encode(s)
	if err != nil {
		return fmt.Errorf("encode policy state: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("policy state dir: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".policy-state-*")
	if err != nil {
		return fmt.Errorf("policy state: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write policy state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync policy state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close policy state: %w", err)
	}
	if err := replaceDurably(tmp.Name(), path); err != nil {
		return fmt.Errorf("replace policy state: %w", err)
	}
	e.j.based(path, s)
	return nil
}

// encoded returns obj's encoding as the entry name.
func (e *stateEncoder) encoded(name string, obj any) (*encoded, error) {
	if e.objs == nil {
		e.objs = map[any]*encoded{}
	}
	enc := e.objs[obj]
	if enc == nil || enc.name != name {
		k, kerr := json.Marshal(name)
		v, verr := json.Marshal(obj)
		if err := errors.Join(kerr, verr); err != nil {
			return nil, err
		}
		b := slices.Concat(k, []byte{':'}, v)
		enc = &encoded{gen: e.gen, name: name, b: b, v: b[len(k)+1:]}
		e.objs[obj] = enc
	}
	return enc, nil
}

// encode renders s as a stateFile.
func (e *stateEncoder) encode(s *State) ([]byte, error) {
	e.gen++
	var buf bytes.Buffer
	buf.Grow(e.size + e.size/8)
	fmt.Fprintf(&buf, `{"version":%d,"seq":%d,"state":{`, stateVersion, e.j.seq)
	first := true
	var err error
	section := func(field string, n int, each func(func(name string, obj any))) {
		if n == 0 || err != nil {
			return // omitempty
		}
		if !first {
			buf.WriteByte(',')
		}
		first = false
		fmt.Fprintf(&buf, "%q:{", field)
		i := 0
		each(func(name string, obj any) {
			if err != nil {
				return
			}
			if i > 0 {
				buf.WriteByte(',')
			}
			i++
			var enc *encoded
			if enc, err = e.encoded(name, obj); err != nil {
				return
			}
			enc.gen = e.gen
			buf.Write(enc.b)
		})
		buf.WriteByte('}')
	}
	section("networkPolicies", len(s.NetworkPolicies), func(f func(string, any)) {
		for name, o := range s.NetworkPolicies {
			f(name, o)
		}
	})
	section("appliedToGroups", len(s.AppliedToGroups), func(f func(string, any)) {
		for name, o := range s.AppliedToGroups {
			f(name, o)
		}
	})
	section("addressGroups", len(s.AddressGroups), func(f func(string, any)) {
		for name, o := range s.AddressGroups {
			f(name, o)
		}
	})
	if err != nil {
		return nil, err
	}
	buf.WriteString("}}")
	if len(e.objs) > len(s.NetworkPolicies)+len(s.AppliedToGroups)+len(s.AddressGroups) {
		for k, enc := range e.objs {
			if enc.gen != e.gen {
				delete(e.objs, k)
			}
		}
	}
	e.size = buf.Len()
	return buf.Bytes(), nil
}

// readState reads the state at path; a missing file gives nil and no error.
func readState(path string) (*State, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read policy state: %w", err)
	}
	var f stateFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("decode policy state %s: %w", path, err)
	}
	if f.Version != stateVersion {
		return nil, fmt.Errorf("policy state %s has version %d, want %d", path, f.Version, stateVersion)
	}
	if err := replayJournal(journalPath(path), &f); err != nil {
		return nil, err
	}
	return &f.State, nil
}
