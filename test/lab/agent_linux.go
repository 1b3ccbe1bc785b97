package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// agentConfig is seine-agent's configuration file for a lab node (the
// format core/agent reads). Nodes use the bridged-uplink topology on the
// userspace datapath: eth0 becomes a port of br-int and the node IP moves to
// the bridge's internal port.
func (c *Config) agentConfig(n Node) string {
	ovs := c.NodeOVSDir(n.Name)
	return fmt.Sprintf(`nodeName: %s
kubeconfig: %s
ovs:
  dbEndpoint: unix:%s
  runDir: %s
  bridge: br-int
  datapathType: netdev
topology: bridgedUplink
uplink: eth0
trafficMode: %s
tunnelType: %s
mtu: 0
cniSocket: %s
cniConfDir: %s
stateDir: %s
healthAddress: 127.0.0.1:10350
metricsAddress: 127.0.0.1:%d
flowSetOS: %s
hostRulesResyncPeriod: %s
policyStatsInterval: %s
policyAuditLogFile: %s
proxy:
  mode: %s
  serviceCIDRs: [%s]
`, n.Name, c.KubeconfigPath("seine-agent"),
		filepath.Join(ovs, "run", "db.sock"), filepath.Join(ovs, "run"),
		c.TrafficMode, c.TunnelType,
		filepath.Join(c.NodeSeineDir(n.Name), "cni.sock"),
		c.NodeCNIConfDir(n.Name), c.NodeSeineDir(n.Name), AgentMetricsPort, flowSetOS(n), AgentHostRulesResync, AgentPolicyStatsInterval,
		c.NodePolicyAuditLog(n.Name), c.proxyMode(), c.ServiceCIDR)
}

// proxyMode is seine-agent's proxy mode: Seine's own, or kube-proxy's when
// the lab runs kube-proxy.
func (c *Config) proxyMode() string {
	if c.KubeProxy != "" {
		return "kubeProxy"
	}
	return "seine"
}

// AgentMetricsPort is where lab agents serve /metrics over HTTPS with
// delegated authorization, on the loopback of their node's namespace
// (StartPrometheus relays to it).
const AgentMetricsPort = 10351

// AgentHostRulesResync is the lab agents' host rules resync period:
// shorter than the default, so a test that breaks a node's NAT or routes
// sees them repaired soon.
const AgentHostRulesResync = 5 * time.Second

// AgentPolicyStatsInterval is how often lab agents read their policy
// flows' counters: shorter than the default, so a test sees its traffic
// counted within seconds.
const AgentPolicyStatsInterval = 2 * time.Second

// flowSetOS is the OS the node's pipeline is built for: a node posing as a
// Windows node is configured as one. Its flows are those of every other lab
// node (the bridged-uplink flow set is the same on both OSes).
func flowSetOS(n Node) string {
	if n.OS == "windows" {
		return "windows"
	}
	return "linux"
}

// startAgent writes the node's agent configuration and starts seine-agent
// inside the node's namespace.
func (c *Config) startAgent(n Node) error {
	if err := os.MkdirAll(c.NodeSeineDir(n.Name), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(c.AgentConfigPath(n.Name), []byte(c.agentConfig(n)), 0o644); err != nil {
		return err
	}
	return c.startComponent(component{
		name:  "agent-" + n.Name,
		netns: c.NetNSPath(n.Name),
		argv:  []string{filepath.Join(c.SeineBin, "seine-agent"), "run", "--config", c.AgentConfigPath(n.Name)},
	})
}

// installCNIPlugin copies seine-cni into the lab's plugin directory under
// the name of its CNI type, "seine", as the DaemonSet's install step does
// on a real node.
func (c *Config) installCNIPlugin() error {
	src, err := os.ReadFile(filepath.Join(c.SeineBin, "seine-cni"))
	if err != nil {
		return fmt.Errorf("install seine-cni: %w", err)
	}
	if err := os.MkdirAll(c.SeineCNIBinDir(), 0o755); err != nil {
		return err
	}
	tmp := filepath.Join(c.SeineCNIBinDir(), ".seine.tmp")
	if err := os.WriteFile(tmp, src, 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(c.SeineCNIBinDir(), "seine"))
}

// StopAgent stops a node's seine-agent (SIGTERM, then SIGKILL after 20 s).
func (c *Config) StopAgent(node string) error {
	return c.stopComponent("agent-"+node, 20*time.Second)
}

// StartAgent starts a node's seine-agent again the way `lab up` does; it
// returns once the process runs, not once the agent is ready.
func (c *Config) StartAgent(node string) error {
	for _, n := range c.NodeList() {
		if n.Name == node {
			return c.startAgent(n)
		}
	}
	return fmt.Errorf("no node %q in the lab", node)
}
