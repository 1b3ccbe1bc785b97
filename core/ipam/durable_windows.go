package ipam

import "golang.org/x/sys/windows"

// replaceDurably atomically and durably replaces dst with tmp. NTFS renames
// are atomic; MOVEFILE_WRITE_THROUGH makes MoveFileEx return only once the
// rename is on disk (a directory cannot be fsynced on Windows).
func replaceDurably(tmp, dst string) error {
	from, err := windows.UTF16PtrFromString(tmp)
	if err != nil {
		return err
	}
	to, err := windows.UTF16PtrFromString(dst)
	if err != nil {
		return err
	}
	return windows.MoveFileEx(from, to, windows.MOVEFILE_REPLACE_EXISTING|windows.MOVEFILE_WRITE_THROUGH)
}
