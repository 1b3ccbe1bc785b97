package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// windowsHost is node-prep's OS seam on Windows: directories inherit the
// ACLs of C:\ProgramData (administrators and SYSTEM write, users read); Unix
// modes do not apply, so only existence is ensured and checked.
type windowsHost struct{}

func (windowsHost) EnsureDir(dir string, _ fs.FileMode) (bool, error) {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return false, fmt.Errorf("%s is not a directory", dir)
		}
		return false, nil
	}
	return true, os.MkdirAll(dir, 0o755)
}

func (windowsHost) CheckDir(dir string, _ fs.FileMode) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	return nil
}

func (windowsHost) Executable(path string, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	if !strings.EqualFold(filepath.Ext(path), ".exe") {
		return fmt.Errorf("%s is not an .exe", path)
	}
	return nil
}

func (windowsHost) PluginFile(name string) string { return name + ".exe" }
