package nodecheck

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// maxLinks bounds the symbolic links one path may go through (Linux's
// MAXSYMLINKS).
const maxLinks = 40

// inRoot is the path, for this process, of the node path p under root (the
// node's root mounted elsewhere): p's symbolic links are followed as the
// node would follow them, an absolute target from root (Debian's /var/run
// is a link to /run: under /host it must lead to /host/run, not to this
// container's /run) and `..` never above root. Components that do not
// exist are kept as they are. With root "" it is p.
func inRoot(root, p string) (string, error) {
	if root == "" || p == "" {
		return p, nil
	}
	rest := strings.Split(filepath.ToSlash(filepath.Clean("/"+p)), "/")
	cur, links := "/", 0
	for len(rest) > 0 {
		part := rest[0]
		rest = rest[1:]
		switch part {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur)
			continue
		}
		next := filepath.Join(cur, part)
		fi, err := os.Lstat(filepath.Join(root, next))
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			cur = next // a missing component stays as named
			continue
		}
		if links++; links > maxLinks {
			return "", fmt.Errorf("%s under %s: too many symbolic links", p, root)
		}
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", err
		}
		if filepath.IsAbs(target) {
			cur = "/"
		}
		rest = append(strings.Split(filepath.ToSlash(target), "/"), rest...)
	}
	return filepath.Join(root, cur), nil
}
