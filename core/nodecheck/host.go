package nodecheck

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Host is the OS seam of node checks and preparation.
type Host interface {
	// EnsureDir creates dir (with parents) if needed and makes its access
	// match perm (Unix mode bits; an OS without them applies its own
	// equivalent or none). It reports whether it changed anything.
	EnsureDir(dir string, perm fs.FileMode) (changed bool, err error)
	// CheckDir reports, changing nothing, how dir differs from EnsureDir's
	// result.
	CheckDir(dir string, perm fs.FileMode) error
	// Executable reports whether the file can be run as a program.
	Executable(path string, fi fs.FileInfo) error
	// PluginFile is the file name of the CNI plugin called name ("seine",
	// "seine.exe" on Windows).
	PluginFile(name string) string
}

// UnixHost implements Host with Unix permission bits. Linux uses it as is.
type UnixHost struct{}

// EnsureDir implements Host.
func (UnixHost) EnsureDir(dir string, perm fs.FileMode) (bool, error) {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, perm); err != nil {
			return false, err
		}
		// MkdirAll's mode is filtered by the umask.
		return true, os.Chmod(dir, perm)
	case err != nil:
		return false, err
	case !fi.IsDir():
		return false, fmt.Errorf("%s is not a directory", dir)
	case fi.Mode().Perm() != perm:
		return true, os.Chmod(dir, perm)
	}
	return false, nil
}

// CheckDir implements Host.
func (UnixHost) CheckDir(dir string, perm fs.FileMode) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if got := fi.Mode().Perm(); got != perm {
		return fmt.Errorf("%s has mode %04o, want %04o", dir, got, perm)
	}
	return nil
}

// Executable implements Host: a regular file with an execute bit.
func (UnixHost) Executable(path string, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not executable (mode %04o)", path, fi.Mode().Perm())
	}
	return nil
}

// PluginFile implements Host.
func (UnixHost) PluginFile(name string) string { return name }

// DirAccess sets and checks who may use a directory, on an OS whose
// permissions Unix modes do not express (Windows: windows.DirACL). A
// private directory is for the OS's administrators and services only
// (SYSTEM and Administrators); a public one is theirs to change and others'
// to read.
type DirAccess interface {
	Ensure(dir string, private bool) (changed bool, err error)
	Check(dir string, private bool) error
}

// WindowsHost implements Host for Windows: programs are .exe files, and
// Unix modes do not apply. Without ACL only existence is ensured and
// checked, and a directory inherits its parent's access (C:\ProgramData's
// lets every user add files to a new subdirectory, C:\'s lets them modify
// what is below it); with ACL a mode without group and other bits is
// private, any other public, and ACL sets and checks that.
type WindowsHost struct {
	ACL DirAccess
}

func private(perm fs.FileMode) bool { return perm&0o077 == 0 }

// EnsureDir implements Host.
func (h WindowsHost) EnsureDir(dir string, perm fs.FileMode) (bool, error) {
	created := false
	switch fi, err := os.Stat(dir); {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return false, err
		}
		created = true
	case err != nil:
		return false, err
	case !fi.IsDir():
		return false, fmt.Errorf("%s is not a directory", dir)
	}
	if h.ACL == nil {
		return created, nil
	}
	changed, err := h.ACL.Ensure(dir, private(perm))
	return created || changed, err
}

// CheckDir implements Host.
func (h WindowsHost) CheckDir(dir string, perm fs.FileMode) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if h.ACL == nil {
		return nil
	}
	return h.ACL.Check(dir, private(perm))
}

// Executable implements Host.
func (WindowsHost) Executable(path string, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	if !strings.EqualFold(filepath.Ext(path), ".exe") {
		return fmt.Errorf("%s is not an .exe", path)
	}
	return nil
}

// PluginFile implements Host.
func (WindowsHost) PluginFile(name string) string { return name + ".exe" }
