package image

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/seine-cni/seine/test/ci"
)

// TestClosureRunsInAnEmptyRoot copies a dynamically linked program with its
// closure into an empty directory and runs it chrooted there: nothing it
// needs is missing.
func TestClosureRunsInAnEmptyRoot(t *testing.T) {
	ci.RequireRoot(t, "chroot")
	prog, err := exec.LookPath("ls")
	if err != nil {
		t.Fatal(err)
	}
	files, err := Closure(prog)
	if err != nil {
		t.Fatal(err)
	}
	var libc bool
	for _, f := range files {
		libc = libc || strings.HasPrefix(filepath.Base(f.Path), "libc.so")
	}
	if !libc {
		t.Fatalf("closure of %s lacks libc: %+v", prog, files)
	}
	links, err := RootLinks()
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := extract(root, append(files, links...)); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(prog, "/")
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	cmd.Dir = "/"
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s in its closure: %v\n%s", prog, err, out.String())
	}
	if !strings.Contains(out.String(), "usr") {
		t.Errorf("ls / in the closure printed %q", out.String())
	}
}

func TestClosureOfANonELFProgramFails(t *testing.T) {
	p := filepath.Join(t.TempDir(), "script")
	os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755)
	if _, err := Closure(p); err == nil {
		t.Error("Closure of a shell script succeeded")
	}
	if _, err := Closure(filepath.Join(t.TempDir(), "absent")); err == nil {
		t.Error("Closure of a missing file succeeded")
	}
}

// extract lays files out below root as a layer would.
func extract(root string, files []File) error {
	for _, f := range files {
		p := filepath.Join(root, f.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		switch {
		case f.Link != "":
			if err := os.Symlink(f.Link, p); err != nil {
				return err
			}
		case f.Src != "":
			b, err := os.ReadFile(f.Src)
			if err != nil {
				return err
			}
			if err := os.WriteFile(p, b, 0o755); err != nil {
				return err
			}
		}
	}
	return nil
}
