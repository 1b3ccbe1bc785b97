//go:build !linux && !windows

package ipam

import "path/filepath"

// replaceDurably atomically and durably replaces dst with tmp.
func replaceDurably(tmp, dst string) error {
	return renameAndSyncDir(tmp, dst, filepath.Dir(dst))
}
