package image

import (
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// libDirs are where the dynamic loader of a Debian amd64 system finds
// libraries (ld.so.conf.d/x86_64-linux-gnu.conf and the defaults).
var libDirs = []string{
	"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
	"/lib64", "/usr/lib64", "/lib", "/usr/lib",
}

// Closure returns the files of this machine that the given programs need to
// run in an image: the programs, their ELF interpreter and every shared
// library they load (DT_NEEDED, transitively), each at its path on this
// machine; a symbolic link (the program itself, or a library's soname link)
// is returned as a link File plus its target. Libraries a program opens with
// dlopen are not found this way and must be listed by the caller.
func Closure(progs ...string) ([]File, error) {
	c := closure{seen: map[string]bool{}}
	for _, p := range progs {
		if err := c.add(p, true); err != nil {
			return nil, err
		}
	}
	sort.Slice(c.files, func(i, j int) bool { return c.files[i].Path < c.files[j].Path })
	return c.files, nil
}

type closure struct {
	seen  map[string]bool
	files []File
}

// add adds path (following symbolic links, each kept as a link) and, for an
// ELF file, its interpreter and libraries.
func (c *closure) add(p string, elfOnly bool) error {
	for range 40 {
		var err error
		if p, err = canonicalDir(p); err != nil {
			return err
		}
		if c.seen[p] {
			return nil
		}
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if st.Mode()&fs.ModeSymlink == 0 {
			break
		}
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		c.seen[p] = true
		c.files = append(c.files, File{Path: p, Link: target})
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(p), target)
		}
		p = filepath.Clean(target)
	}
	if c.seen[p] {
		return nil
	}
	c.seen[p] = true
	c.files = append(c.files, File{Path: p, Src: p})
	f, err := elf.Open(p)
	if err != nil {
		if elfOnly {
			return fmt.Errorf("%s: %w", p, err)
		}
		return nil
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			b := make([]byte, prog.Filesz)
			if _, err := prog.ReadAt(b, 0); err != nil {
				return fmt.Errorf("%s: interpreter: %w", p, err)
			}
			if err := c.add(strings.TrimRight(string(b), "\x00"), true); err != nil {
				return fmt.Errorf("%s: interpreter: %w", p, err)
			}
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	for _, lib := range libs {
		lp, err := findLib(lib)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if err := c.add(lp, true); err != nil {
			return err
		}
	}
	return nil
}

// canonicalDir resolves the links among p's directories (/lib ->
// usr/lib on a merged-/usr system), so each file has one path in the
// image; RootLinks gives the image the same directory links.
func canonicalDir(p string) (string, error) {
	dir, err := filepath.EvalSymlinks(filepath.Dir(p))
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, filepath.Base(p)), nil
}

// RootLinks returns the links among this machine's top-level directories
// (/bin -> usr/bin, /lib -> usr/lib, ... on a merged-/usr system), so
// programs find their interpreter and libraries in an image as they do here.
func RootLinks() ([]File, error) {
	var out []File
	for _, d := range []string{"/bin", "/sbin", "/lib", "/lib64"} {
		st, err := os.Lstat(d)
		if err != nil || st.Mode()&fs.ModeSymlink == 0 {
			continue
		}
		t, err := os.Readlink(d)
		if err != nil {
			return nil, err
		}
		out = append(out, File{Path: d, Link: t})
	}
	return out, nil
}

func findLib(name string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, d := range libDirs {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("shared library %s: %w", name, errors.New("not found in "+strings.Join(libDirs, ", ")))
}

// Tree returns every regular file and link below dir of this machine, at
// the same paths (a directory of plugins a program opens with dlopen).
func Tree(dir string) ([]File, error) {
	var out []File
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out = append(out, File{Path: p, Link: t})
		case d.Type().IsRegular():
			out = append(out, File{Path: p, Src: p})
		}
		return nil
	})
	return out, err
}

// Merge joins file lists; a path given again replaces the earlier entry,
// as a file of a later layer hides one of an earlier layer (closures of
// several programs share libraries; a real program replaces a busybox
// applet of the same name).
func Merge(lists ...[]File) []File {
	index := map[string]int{}
	var out []File
	for _, l := range lists {
		for _, f := range l {
			p := filepath.Clean(f.Path)
			if i, ok := index[p]; ok {
				out[i] = f
				continue
			}
			index[p] = len(out)
			out = append(out, f)
		}
	}
	return out
}
