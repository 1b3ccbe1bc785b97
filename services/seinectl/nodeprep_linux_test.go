package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/seine-cni/seine/core/agent"
	"github.com/seine-cni/seine/installer/kubernetes/manifest"
)

// TestNodePrepAsTheDaemonSetRunsIt runs the DaemonSet's init container
// command line (manifest.NodePrepArgs) on the ConfigMap's template, with
// every path moved under a temporary root: what the manifest asks of
// seinectl, seinectl does.
func TestNodePrepAsTheDaemonSetRunsIt(t *testing.T) {
	root := t.TempDir()
	rebase := strings.NewReplacer(
		"/etc/seine/", root+"/etc/seine/",
		"/var/run/", root+"/var/run/",
		"/var/lib/", root+"/var/lib/",
		"/host/", root+"/host/",
		"/usr/local/bin/", root+"/usr/local/bin/",
	)
	mustWrite(t, filepath.Join(root, "etc/seine/seine-agent.yaml"), rebase.Replace(manifest.AgentConfigTemplate), 0o644)
	mustWrite(t, filepath.Join(root, "usr/local/bin/seine-cni"), "#!/bin/sh\n", 0o755)
	if err := os.MkdirAll(filepath.Join(root, "var/run/openvswitch"), 0o755); err != nil {
		t.Fatal(err)
	}
	if filepath.Base(manifest.NodePrepArgs[0]) != "seinectl" {
		t.Fatalf("the init container runs %s", manifest.NodePrepArgs[0])
	}
	var args []string
	for _, a := range manifest.NodePrepArgs[1:] {
		// The kubelet expands $(NODE_NAME) from the downward API.
		args = append(args, rebase.Replace(strings.ReplaceAll(a, "$(NODE_NAME)", "node-1")))
	}
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), args, &stdout, &stderr, nil); err != nil {
		t.Fatalf("node-prep %v: %v\n%s%s", args, err, stdout.String(), stderr.String())
	}
	cfg, err := agent.LoadConfig(filepath.Join(root, "var/run/seine/seine-agent.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NodeName != "node-1" {
		t.Errorf("nodeName %q", cfg.NodeName)
	}
	for _, p := range []string{cfg.StateDir, cfg.CNIConfDir, filepath.Join(root, "host/opt/cni/bin/seine")} {
		if _, err := os.Stat(p); err != nil {
			t.Error(err)
		}
	}
	// The same command with --check passes on the prepared node.
	stdout.Reset()
	if err := run(t.Context(), append(args, "--check"), &stdout, &stderr, nil); err != nil {
		t.Errorf("node-prep --check: %v\n%s", err, stdout.String())
	}
}
