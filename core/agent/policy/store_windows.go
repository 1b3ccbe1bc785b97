package policy

import "os"

// replaceDurably renames tmp over dst. Windows cannot fsync a directory;
// os.Rename uses MoveFileEx with MOVEFILE_REPLACE_EXISTING, and the file
// itself was flushed before the rename.
func replaceDurably(tmp, dst string) error {
	return os.Rename(tmp, dst)
}
