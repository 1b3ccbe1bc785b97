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

// WindowsHost implements Host for Windows: directories inherit the ACLs of
// their parent (C:\ProgramData: administrators and SYSTEM write, users
// read) and Unix modes do not apply, so only existence is ensured and
// checked; programs are .exe files.
type WindowsHost struct{}

// EnsureDir implements Host.
func (WindowsHost) EnsureDir(dir string, _ fs.FileMode) (bool, error) {
	if err := (WindowsHost{}).CheckDir(dir, 0); !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	return true, os.MkdirAll(dir, 0o755)
}

// CheckDir implements Host.
func (WindowsHost) CheckDir(dir string, _ fs.FileMode) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	return nil
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
