//go:build !windows

package policy

import (
	"os"
	"path/filepath"
)

// replaceDurably renames tmp over dst and fsyncs the directory, so the
// rename itself survives a power loss.
func replaceDurably(tmp, dst string) error {
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(dst))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
