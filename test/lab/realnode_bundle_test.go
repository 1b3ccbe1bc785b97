//go:build linux

package lab

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/seine-cni/seine/core/bundle"
)

// supportBundle runs `seinectl supportbundle` as an operator on node-1
// would, with nothing but the admin kubeconfig: seinectl finds each agent
// at its node's InternalIP and port 10351 (seine.yml's metricsAddress) and
// the controller through its pod, collects as seine.yml's
// seine-supportbundle ServiceAccount, and reads the DaemonSet's pod logs
// through the kube-apiserver. Every node's part comes whole.
func supportBundle(t *testing.T, ctx context.Context, c *Config) {
	bin := os.Getenv("SEINE_LAB_SEINE_BIN")
	if bin == "" {
		t.Fatal("SEINE_LAB_SEINE_BIN is not set: seinectl comes from there (go tool mage labBin builds it; make test sets it)")
	}
	dir := t.TempDir()
	// node-1's namespace reaches the kube-apiserver at the kubeconfig's
	// address (the lab's api proxy) and every node on the fabric.
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+c.NetNSPath(c.NodeList()[0].Name), "--",
		filepath.Join(bin, "seinectl"), "supportbundle", "--kubeconfig", c.AdminKubeconfig(), "-d", dir, "--since", "1h", "--timeout", "60s")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("seinectl supportbundle (%s): %v\n%s%s", time.Since(start).Round(time.Millisecond), err, stdout.String(), stderr.String())
	if err != nil {
		t.Errorf("seinectl supportbundle on real nodes: %v", err)
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "seine-supportbundle-*.tar.gz"))
	if len(matches) != 1 {
		t.Fatalf("archives in %s: %v", dir, matches)
	}
	f, err := os.Open(matches[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string]string{}
	if err := bundle.Unpack(f, func(name string, body []byte) error {
		files[name] = string(body)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if s := files["summary.txt"]; strings.Contains(s, "FAIL") {
		t.Errorf("summary.txt:\n%s", s)
	}
	for _, n := range c.NodeList() {
		d := "nodes/" + n.Name + "/"
		for name, want := range map[string]string{
			d + "agent/config.yaml":    "nodeName: " + n.Name,
			d + "agent/log.txt":        "msg=",
			d + "agent-pod.log":        "container seine-agent",
			d + "ovs/flows.txt":        " flows\n",
			d + "ovs/ovsdb.txt":        "Bridge br-int",
			d + "host/diagnostics.txt": "== rules ==",
			d + "pprof/goroutine.txt":  "goroutine ",
			d + "agentinfo.yaml":       "name: " + n.Name,
		} {
			if !strings.Contains(files[name], want) {
				t.Errorf("%s: want %q in:\n%.600s", name, want, files[name])
			}
		}
	}
	for name, want := range map[string]string{
		"controller/log.txt":      "msg=",
		"controller/pod.log":      "container seine-controller",
		"cluster/configmaps.yaml": "seine-config",
	} {
		if !strings.Contains(files[name], want) {
			t.Errorf("%s: want %q in:\n%.600s", name, want, files[name])
		}
	}
}
