package manifest

import (
	"bytes"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestCheckedInCleanupManifestIsGenerated(t *testing.T) {
	want, err := CleanupYAML(Options{})
	if err != nil {
		t.Fatal(err)
	}
	have, err := os.ReadFile("../seine-cleanup.yml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(have, want) {
		t.Fatal("../seine-cleanup.yml differs from the generator's output: run `go generate ./installer/kubernetes/manifest` and commit the result")
	}
}

// TestCleanupRunsWhereTheAgentRan: the cleanup DaemonSet runs on every
// node the agent runs on, with the node's network, privileged, with the
// node's root where --host-root says, reading the configuration node-prep
// renders for the agent, in Seine's image.
func TestCleanupRunsWhereTheAgentRan(t *testing.T) {
	ds, agent := cleanupDaemonSet(Options{Image: "example/seine:1"}), agentDaemonSet(Options{Image: "example/seine:1"})
	spec, agentSpec := ds.Spec.Template.Spec, agent.Spec.Template.Spec
	if !spec.HostNetwork || !slices.Equal(spec.Tolerations, agentSpec.Tolerations) || spec.NodeSelector[`kubernetes.io/os`] != agentSpec.NodeSelector[`kubernetes.io/os`] {
		t.Errorf("cleanup pods do not run where agents do: hostNetwork %v, tolerations %v, nodeSelector %v", spec.HostNetwork, spec.Tolerations, spec.NodeSelector)
	}
	c := spec.InitContainers[0]
	if c.Image != "example/seine:1" || c.SecurityContext == nil || !*c.SecurityContext.Privileged {
		t.Errorf("node-cleanup container: image %s, security %v", c.Image, c.SecurityContext)
	}
	args := strings.Join(c.Command, " ")
	if !strings.Contains(args, "--config="+renderedConfig) || !slices.Contains(NodePrepArgs, "--config="+renderedConfig) {
		t.Errorf("node-cleanup does not read the configuration node-prep writes: %s", args)
	}
	var root bool
	for _, m := range c.VolumeMounts {
		for _, v := range spec.Volumes {
			if v.Name == m.Name && v.HostPath != nil && v.HostPath.Path == "/" && m.MountPath == hostRootPath && !m.ReadOnly {
				root = true
			}
		}
	}
	if !root || !strings.Contains(args, "--host-root="+hostRootPath) {
		t.Errorf("the node's root is not mounted writable where --host-root says: %s %+v", args, c.VolumeMounts)
	}
}
