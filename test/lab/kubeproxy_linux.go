package lab

import (
	"fmt"
	"os"
	"path/filepath"
)

// kubeProxyConfig is the KubeProxyConfiguration of one node: the mode,
// the node's name and the cluster CIDR; no conntrack sysctls (the
// table size is the machine's, shared by every lab node).
func (c *Config) kubeProxyConfig(n Node) string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %s
mode: %s
hostnameOverride: %s
clusterCIDR: %s
bindAddress: 0.0.0.0
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, c.KubeconfigPath("kube-proxy"), c.KubeProxy, n.Name, c.ClusterCIDR)
}

func (c *Config) kubeProxyConfigPath(node string) string {
	return c.path("nodes", node, "kube-proxy.yaml")
}

// startKubeProxy starts kube-proxy (from the lab's control-plane binary,
// the same Kubernetes release) inside the node's namespace.
func (c *Config) startKubeProxy(n Node) error {
	if err := os.MkdirAll(filepath.Dir(c.kubeProxyConfigPath(n.Name)), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(c.kubeProxyConfigPath(n.Name), []byte(c.kubeProxyConfig(n)), 0o644); err != nil {
		return err
	}
	return c.startComponent(component{
		name:  "kube-proxy-" + n.Name,
		netns: c.NetNSPath(n.Name),
		argv:  []string{c.KubeBin, "kube-proxy", "--config", c.kubeProxyConfigPath(n.Name)},
	})
}
