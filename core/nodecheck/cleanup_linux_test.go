package nodecheck

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCleanupRefusesWhileTheAgentRuns: something answering on the agent's
// CNI socket stops the cleanup before anything is changed (the agent would
// rebuild what is removed).
func TestCleanupRefusesWhileTheAgentRuns(t *testing.T) {
	n := newCleanupNode(t)
	ln, err := net.Listen("unix", filepath.Join(n.root, "/run/seine/cni.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	r := Cleanup(context.Background(), CleanupOptions{ConfigPath: n.config, HostRoot: n.root, CNIBinDir: n.cniBin, OpenBackend: noBackend})
	last := r.Results[len(r.Results)-1]
	if !r.Failed() || last.Name != "agent stopped" || !strings.Contains(last.Detail, "still answers") {
		t.Errorf("report: %+v", r.Results)
	}
	n.untouched(t)
}

// TestInRoot: node paths under a root follow the root's links as the node
// would, absolute ones from the root, never above it.
func TestInRoot(t *testing.T) {
	root := t.TempDir()
	for _, l := range [][2]string{{"/run", "var/run"}, {"../../etc", "opt/etc"}, {"loop", "loop"}} {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(l[1])), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(l[0], filepath.Join(root, l[1])); err != nil {
			t.Fatal(err)
		}
	}
	for p, want := range map[string]string{
		"/var/run/seine/cni.sock": root + "/run/seine/cni.sock",
		"/var/lib/seine":          root + "/var/lib/seine",
		"/opt/etc/cni":            root + "/etc/cni",
		"/../../../var/run":       root + "/run",
	} {
		if got, err := inRoot(root, p); err != nil || got != want {
			t.Errorf("inRoot(%s): %s, %v, want %s", p, got, err, want)
		}
	}
	if got, err := inRoot(root, "/loop/x"); err == nil {
		t.Errorf("a link to itself: %s, want an error", got)
	}
	if got, _ := inRoot("", "/var/run/x"); got != "/var/run/x" {
		t.Errorf("no root: %s", got)
	}
}
