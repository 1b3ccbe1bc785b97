package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// stateVersion is the format of the state file; a file of another version
// is ignored (with an error) rather than misread.
const stateVersion = 1

type stateFile struct {
	Version int   `json:"version"`
	State   State `json:"state"`
}

// writeState replaces path with s durably: a temporary file in the same
// directory is written and fsynced, renamed over path, and the directory
// is fsynced (where the OS allows), so a crash leaves the old or the new
// file, never a torn one.
func writeState(path string, s *State) error {
	b, err := json.Marshal(stateFile{Version: stateVersion, State: *s})
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
	return nil
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
	return &f.State, nil
}
