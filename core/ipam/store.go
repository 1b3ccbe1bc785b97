package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// The state lives in one small JSON file, replaced whole on every change:
// written to a temp file in the same directory, fsynced, renamed over the
// old one, and the directory fsynced (see durable_*.go and README.md).

const (
	stateFile    = "state.json"
	tempPrefix   = stateFile + ".tmp-"
	stateVersion = 1
)

// fileState is the on-disk form.
type fileState struct {
	Version  int      `json:"version"`
	PodCIDRs []string `json:"podCIDRs"`
	// Cursors holds, per pod CIDR, the address allocated last ("" if none):
	// the next allocation starts after it.
	Cursors     []string     `json:"cursors"`
	Allocations []fileRecord `json:"allocations"`
}

type fileRecord struct {
	ContainerID  string   `json:"containerID"`
	IfName       string   `json:"ifName"`
	PodNamespace string   `json:"podNamespace,omitempty"`
	PodName      string   `json:"podName,omitempty"`
	NetNS        string   `json:"netns,omitempty"`
	IPs          []string `json:"ips"`
}

// readState loads the state file; ok is false if there is none.
func readState(dir string) (fs fileState, ok bool, err error) {
	path := filepath.Join(dir, stateFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return fileState{}, false, nil
	}
	if err != nil {
		return fileState{}, false, fmt.Errorf("read IPAM state: %w", err)
	}
	if err := json.Unmarshal(data, &fs); err != nil {
		return fileState{}, false, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
	}
	if fs.Version != stateVersion {
		return fileState{}, false, fmt.Errorf("%w: %s has version %d, this agent reads version %d", ErrCorrupt, path, fs.Version, stateVersion)
	}
	return fs, true, nil
}

// writeState makes fs the durable state in dir.
func writeState(dir string, fs *fileState) error {
	data, err := json.Marshal(fs)
	if err != nil {
		return fmt.Errorf("encode IPAM state: %w", err)
	}
	tmp, err := os.CreateTemp(dir, tempPrefix+"*")
	if err != nil {
		return fmt.Errorf("write IPAM state: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write IPAM state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync IPAM state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write IPAM state: %w", err)
	}
	if err := replaceDurably(tmp.Name(), filepath.Join(dir, stateFile)); err != nil {
		return fmt.Errorf("commit IPAM state: %w", err)
	}
	return nil
}

// removeTempFiles deletes temp files left by a writer that crashed before
// its rename; they never hold the state, which is only ever the renamed file.
func removeTempFiles(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read IPAM directory: %w", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tempPrefix) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("remove leftover temp file: %w", err)
			}
		}
	}
	return nil
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
