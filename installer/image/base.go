package image

import (
	"fmt"
	"io/fs"
	"os/exec"
	"path"
	"strings"
)

// Base is the skeleton every image gets: users, name resolution from files
// then DNS, /tmp, /run with /var/run linked to it (as on Debian), and this
// machine's top-level directory links (RootLinks).
func Base() ([]File, error) {
	links, err := RootLinks()
	if err != nil {
		return nil, err
	}
	return append(links,
		File{Path: "/etc/passwd", Data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")},
		File{Path: "/etc/group", Data: []byte("root:x:0:\nnogroup:x:65534:\n")},
		File{Path: "/etc/nsswitch.conf", Data: []byte("hosts: files dns\nnetworks: files\n")},
		File{Path: "/tmp", Dir: true, Mode: 0o777 | fs.ModeSticky},
		File{Path: "/root", Dir: true, Mode: 0o700},
		File{Path: "/run", Dir: true},
		File{Path: "/var/run", Link: "/run"},
		File{Path: "/proc", Dir: true},
		File{Path: "/sys", Dir: true},
		File{Path: "/dev", Dir: true},
	), nil
}

// Busybox returns this machine's static busybox (Debian's busybox-static)
// at /usr/bin/busybox and a link for each of its applets, except the names
// in skip (programs the image carries for real, such as nc). With a merged
// /usr, bin/ and sbin/ applets go to /usr/bin and /usr/sbin.
func Busybox(skip ...string) ([]File, error) {
	const bb = "/usr/bin/busybox"
	out, err := exec.Command(bb, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("busybox --list-full (apt-get install busybox-static): %w", err)
	}
	links, err := RootLinks()
	if err != nil {
		return nil, err
	}
	merged := map[string]bool{}
	for _, l := range links {
		merged[l.Path] = true
	}
	files := []File{{Path: bb, Src: bb}}
	for _, applet := range strings.Fields(string(out)) {
		p := "/" + applet
		if top := "/" + strings.SplitN(applet, "/", 2)[0]; merged[top] {
			p = "/usr" + p
		}
		name := path.Base(p)
		if p == bb || name == "busybox" || contains(skip, name) {
			continue
		}
		files = append(files, File{Path: p, Link: bb})
	}
	return files, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
