//go:build linux

package lab

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Every hostPath of seine.yml must be a path a real lab node owns (one of
// nodeMounts, or below one, or one of nodeFiles): otherwise the pods of
// every node share the machine's own directory, and `lab down` leaves what
// they wrote there (the policy audit log's /var/log/seine did both).
func TestSeineHostPathsAreNodePrivate(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "installer", "kubernetes", "seine.yml"))
	if err != nil {
		t.Fatal(err)
	}
	hostPath := regexp.MustCompile(`(?m)^\s*-?\s*hostPath:\s*\n\s*path:\s*(\S+)`)
	found := hostPath.FindAllSubmatch(b, -1)
	if len(found) == 0 {
		t.Fatal("no hostPath in seine.yml: the pattern no longer matches its layout")
	}
	for _, m := range found {
		p := canonicalHostPath(string(m[1]))
		if slices.Contains(nodeFiles, p) || slices.ContainsFunc(nodeMounts, func(d string) bool {
			return p == d || strings.HasPrefix(p, d+"/")
		}) {
			continue
		}
		t.Errorf("seine.yml mounts hostPath %s, which no real lab node owns (nodeMounts, nodeFiles)", m[1])
	}
}

// canonicalHostPath is p as nodeMounts spell it: /var/run is a link to /run
// and /lib to /usr/lib on this machine (merged /usr).
func canonicalHostPath(p string) string {
	for _, l := range [][2]string{{"/var/run", "/run"}, {"/lib", "/usr/lib"}} {
		if p == l[0] || strings.HasPrefix(p, l[0]+"/") {
			return l[1] + strings.TrimPrefix(p, l[0])
		}
	}
	return p
}
