package lab

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeMachine is a machine in a temporary directory: an empty root, the
// kubelet's sysctls at "0" and the record's directory.
func fakeMachine(t *testing.T) (hostPaths, string) {
	dir := t.TempDir()
	h := hostPaths{record: filepath.Join(dir, "run", "shared.json"), root: filepath.Join(dir, "root"), sysctl: filepath.Join(dir, "sys")}
	for _, d := range []string{filepath.Dir(h.record), h.root} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range kubeletSysctls {
		writeFile(t, filepath.Join(h.sysctl, k), "0\n")
	}
	return h, dir
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readTrim(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestSharedHostSettings: two real-node labs up at once share the mount
// points and sysctls they changed on the machine. The first down leaves
// them (the other's nodes still mount there; the kubelet's values stay),
// the last down removes every created path and writes back the values from
// before the first lab, and the record goes with it.
func TestSharedHostSettings(t *testing.T) {
	h, dir := fakeMachine(t)
	labA, labB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, d := range []string{labA, labB} {
		os.Mkdir(d, 0o755)
	}
	cni := filepath.Join(h.root, "etc/cni/net.d")
	overcommit := filepath.Join(h.sysctl, "vm/overcommit_memory")

	if err := h.join(labA); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cni); err != nil {
		t.Fatalf("the first lab did not create its mount point: %v", err)
	}
	writeFile(t, overcommit, "1\n") // lab A's kubelet
	if err := h.join(labB); err != nil {
		t.Fatal(err)
	}
	if err := h.leave(labA); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cni); err != nil {
		t.Errorf("the first lab down removed a mount point the other lab's nodes use: %v", err)
	}
	if v := readTrim(t, overcommit); v != "1" {
		t.Errorf("the first lab down wrote vm/overcommit_memory=%s under the other lab's kubelets", v)
	}
	if err := h.leave(labB); err != nil {
		t.Fatal(err)
	}
	if v := readTrim(t, overcommit); v != "0" {
		t.Errorf("after the last lab down vm/overcommit_memory=%s, want 0 (before the first lab)", v)
	}
	checkPutBack(t, h)
}

// checkPutBack fails t unless the fake machine's root is as empty as it
// was and the record is gone.
func checkPutBack(t *testing.T, h hostPaths) {
	t.Helper()
	if left, _ := os.ReadDir(h.root); len(left) != 0 {
		t.Errorf("the machine's root holds %v", left)
	}
	if _, err := os.Stat(h.record); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the record outlived the last lab: %v", err)
	}
}

// TestSharedHostSettingsRecovers: a lab whose state directory was removed
// by hand no longer holds the machine's settings, and what the last lab
// down could not remove stays recorded until a later down can.
func TestSharedHostSettingsRecovers(t *testing.T) {
	h, dir := fakeMachine(t)
	labA, labB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, d := range []string{labA, labB} {
		os.Mkdir(d, 0o755)
	}
	for _, d := range []string{labA, labB} {
		if err := h.join(d); err != nil {
			t.Fatal(err)
		}
	}
	os.RemoveAll(labB)
	stray := filepath.Join(h.root, "etc/cni/net.d/10-other.conflist")
	writeFile(t, stray, "{}")
	if err := h.leave(labA); err == nil || !strings.Contains(err.Error(), "/etc/cni/net.d") {
		t.Errorf("leave with a filled mount point = %v, want an error naming /etc/cni/net.d", err)
	}
	if _, err := os.Stat(filepath.Join(h.root, "var/lib/kubelet")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the last lab up (the other was removed by hand) left /var/lib/kubelet: %v", err)
	}
	if b, err := os.ReadFile(h.record); err != nil || !strings.Contains(string(b), "/etc/cni/net.d") {
		t.Errorf("the record does not keep what is left to remove: %q, %v", b, err)
	}
	os.Remove(stray)
	if err := h.leave(labA); err != nil {
		t.Fatalf("a second down: %v", err)
	}
	checkPutBack(t, h)
}

// TestDownWithAnExpiredContext: `lab down` is what cleans up after a run
// that ran out of time, so a context that already expired must not stop
// it: the lab's network namespaces go, and so does its state directory.
func TestDownWithAnExpiredContext(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root")
		}
		t.Skip("needs root")
	}
	c := &Config{StateDir: "/run/seine-downctx-" + randomHex(3), NSPrefix: "seine-downctx-" + randomHex(2) + "-", Nodes: 1}
	c.Defaults()
	if err := os.MkdirAll(c.StateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	t.Cleanup(func() { Down(context.Background(), log, c.StateDir) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	if err := c.createTopology(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := Down(ctx, log, c.StateDir); err != nil {
		t.Errorf("lab down with an expired context: %v", err)
	}
	out, _ := exec.Command("ip", "netns", "list").CombinedOutput()
	if strings.Contains(string(out), c.NSPrefix) {
		t.Errorf("lab down with an expired context left namespaces:\n%s", out)
	}
	if _, err := os.Stat(c.StateDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state directory: %v", err)
	}
}
