package cni

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// A DEL that arrives while the agent is unreachable is spooled as one JSON
// file in PendingDelDir and the plugin reports success; the agent replays
// the spool before it serves anything (see README.md for why). The files are
// written with write-temp-then-rename, so a reader never sees a torn one.

// PendingDel is one spooled DEL request.
type PendingDel struct {
	// File is the spool file, removed with RemovePendingDel once handled.
	File    string
	Request *Request
}

// pendingName is the spool file name for an attachment: a hash, because an
// interface name may hold characters a Windows file name may not.
func pendingName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "\x00" + ifName))
	return hex.EncodeToString(sum[:16]) + ".json"
}

// SpoolDel records the DEL req in dir and returns the file it wrote. A
// second DEL for the same attachment replaces the first.
func SpoolDel(dir string, req *Request) (string, error) {
	if req.Command != CmdDel {
		return "", fmt.Errorf("spool %s request: only DEL may be deferred", req.Command)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create pending DEL directory: %w", err)
	}
	data, err := json.Marshal(req)
	if err != nil {
		return "", fmt.Errorf("encode pending DEL: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return "", fmt.Errorf("spool DEL: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return "", fmt.Errorf("spool DEL: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", fmt.Errorf("spool DEL: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("spool DEL: %w", err)
	}
	file := filepath.Join(dir, pendingName(req.ContainerID, req.IfName))
	if err := os.Rename(tmp.Name(), file); err != nil {
		return "", fmt.Errorf("spool DEL: %w", err)
	}
	return file, nil
}

// staleTempAge is how old a leftover temp file must be before a reader
// removes it (a younger one may be a plugin writing right now).
const staleTempAge = 10 * time.Minute

// ReadPendingDels returns the DELs spooled in dir, oldest first. A missing
// dir holds none. Files that cannot be decoded are returned as errors (and
// left in place for a person to look at); leftover temp files of crashed
// writers are removed.
func ReadPendingDels(dir string) ([]PendingDel, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read pending DEL directory: %w", err)
	}
	type item struct {
		p   PendingDel
		mod time.Time
	}
	var items []item
	var errs []error
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(dir, name)
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		if strings.HasPrefix(name, ".tmp-") {
			if time.Since(info.ModTime()) > staleTempAge {
				_ = os.Remove(path)
			}
			continue
		}
		if !strings.HasSuffix(name, ".json") {
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("read pending DEL %s: %w", path, err))
			continue
		}
		req := &Request{}
		if err := json.Unmarshal(data, req); err != nil || req.Command != CmdDel {
			errs = append(errs, fmt.Errorf("pending DEL %s is not a DEL request (%v)", path, err))
			continue
		}
		items = append(items, item{PendingDel{File: path, Request: req}, info.ModTime()})
	}
	// Oldest first: the order the runtime issued them in.
	slices.SortStableFunc(items, func(a, b item) int { return a.mod.Compare(b.mod) })
	out := make([]PendingDel, len(items))
	for i, it := range items {
		out[i] = it.p
	}
	return out, errors.Join(errs...)
}

// RemovePendingDel deletes a handled spool file; one already gone is fine.
func RemovePendingDel(file string) error {
	if err := os.Remove(file); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove pending DEL: %w", err)
	}
	return nil
}
