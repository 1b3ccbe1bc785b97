package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
)

// writeCNITemplate writes the CNI config list template every kubelet renders
// once its node has a podCIDR. In ptp mode: the reference ptp plugin with
// host-local IPAM on the node's podCIDR, its state kept inside the lab.
func (c *Config) writeCNITemplate() error {
	tmpl := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "lab-ptp",
  "plugins": [
    {
      "type": "ptp",
      "ipMasq": false,
      "mtu": %d,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "{{.PodCIDR}}"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "%s/nodes/{{.NodeName}}/cni/ipam"
      }
    }
  ]
}
`, c.MTU, c.StateDir)
	if err := os.MkdirAll(filepath.Dir(c.CNITemplatePath()), 0o755); err != nil {
		return err
	}
	return os.WriteFile(c.CNITemplatePath(), []byte(tmpl), 0o644)
}

// routePodCIDRs gives every node a route to every other node's podCIDR
// through that node's IP (a host-gateway network), so ptp pods on different
// nodes reach each other. Seine's agent does this (or tunnels) itself.
func (c *Config) routePodCIDRs(ctx context.Context, nodes []corev1.Node) error {
	if c.CNI != CNIPtp {
		return nil
	}
	ipOf := map[string]string{}
	for _, n := range c.NodeList() {
		ipOf[n.Name] = n.IP
	}
	for _, from := range nodes {
		for _, to := range nodes {
			if from.Name == to.Name {
				continue
			}
			if _, err := sh(ctx, "ip", "-n", c.NetNS(from.Name), "route", "replace", to.Spec.PodCIDR, "via", ipOf[to.Name]); err != nil {
				return err
			}
		}
	}
	return nil
}

// cniBinDir is where the kubelets look for plugins.
func (c *Config) cniBinDir() string {
	if c.CNIBin != "" {
		return c.CNIBin
	}
	return filepath.Join(filepath.Dir(c.LabBin), "cni")
}
