package ipam

import "os"

// renameAndSyncDir renames tmp over dst and fsyncs their directory, so the
// rename itself survives a power loss (POSIX rename is atomic but not
// durable until the directory entry is on disk).
func renameAndSyncDir(tmp, dst, dir string) error {
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
