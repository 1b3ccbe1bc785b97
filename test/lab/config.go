// Package lab runs a real multi-node Kubernetes cluster on one Linux machine
// without containers: etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler on loopback; one network namespace per node, each with its
// own ovsdb-server and ovs-vswitchd and a kubelet stand-in that calls the
// node's CNI plugin through libcni; a fabric namespace joining the nodes; an
// external-host namespace standing for the internet.
//
// Everything the lab creates lives under one state directory and a few named
// network namespaces with a common prefix, so Down can remove all of it.
// See README.md for the topology and the reasons behind it.
package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"

	"github.com/seine-cni/seine/core/pipeline"
)

// CNI modes: which plugin the lab's nodes call.
const (
	// CNIPtp uses the reference ptp + host-local plugins from
	// containernetworking/plugins, with static routes between nodes.
	CNIPtp = "ptp"
	// CNISeine runs seine-agent in every node and calls seine-cni.
	CNISeine = "seine"
)

// Kubelet kinds: what runs on the lab's nodes.
const (
	// KubeletStandIn is the lab's kubelet stand-in (kubelet/): pods are
	// network namespaces with probe listeners, no container runtime. Fast;
	// it earns its keep in the tests that only need pod networking.
	KubeletStandIn = "standin"
	// KubeletReal runs a real kubelet and containerd with runc on every
	// node, in the node's own mount namespace (realnode_linux.go); pods are
	// containers of the images `make images` builds.
	KubeletReal = "real"
)

// CNINone leaves real nodes without a network plugin (NotReady) until one
// is installed, as `kubectl apply -f seine.yml` does.
const CNINone = "none"

// Config says how the lab is laid out. The zero value of a field means its
// default (see Defaults).
type Config struct {
	Nodes            int    `json:"nodes"`
	StateDir         string `json:"stateDir"`   // everything the lab writes
	NSPrefix         string `json:"nsPrefix"`   // named network namespaces are <prefix><name>
	FabricCIDR       string `json:"fabricCIDR"` // node and external-host addresses
	ClusterCIDR      string `json:"clusterCIDR"`
	ServiceCIDR      string `json:"serviceCIDR"`
	NodeCIDRMaskSize int    `json:"nodeCIDRMaskSize"`
	APIPort          int    `json:"apiPort"`  // kube-apiserver on 127.0.0.1, and in every node namespace
	EtcdPort         int    `json:"etcdPort"` // client port; peer is EtcdPort+1
	// ControllerPort is seine-controller's port on ControllerIP (CNISeine
	// only); default APIPort+1.
	ControllerPort int    `json:"controllerPort"`
	MTU            int    `json:"mtu"` // fabric MTU
	CNI            string `json:"cni"`
	// TrafficMode and TunnelType configure seine-agent (CNISeine only).
	TrafficMode string `json:"trafficMode"`
	TunnelType  string `json:"tunnelType"`
	// WindowsNodes poses the last N nodes as Windows nodes (kubernetes.io/os=windows).
	WindowsNodes int `json:"windowsNodes"`
	// UpstreamExperimental installs the upstream ClusterNetworkPolicy's
	// experimental channel CRD (its domainNames and nodes peers) instead
	// of the standard one Seine ships beside seine.yml.
	UpstreamExperimental bool `json:"upstreamExperimental,omitempty"`
	// KubeProxy runs kube-proxy on every node in that mode (iptables or
	// nftables); seine-agent then leaves Services to it (proxy mode
	// kubeProxy). Empty: no kube-proxy, Seine's own proxy.
	KubeProxy string `json:"kubeProxy,omitempty"`

	// Kubelet is KubeletStandIn (default) or KubeletReal.
	Kubelet string `json:"kubelet"`
	// RuntimeBin holds containerd, containerd-shim-runc-v2, ctr and runc
	// (KubeletReal; `make images` builds them).
	RuntimeBin string `json:"runtimeBin"`
	// ImagesDir holds the image tarballs and images.json `make images`
	// writes (KubeletReal); every node imports them.
	ImagesDir string `json:"imagesDir"`

	KubeBin string `json:"kubeBin"` // the labkube multi-call binary
	LabBin  string `json:"labBin"`  // this lab CLI (runs kubelets and the API proxy)
	CNIBin  string `json:"cniBin"`  // directory with the CNI plugins for CNIPtp
	// SeineBin is the directory with seine-agent, seine-cni and
	// seine-controller (CNISeine).
	SeineBin string `json:"seineBin"`
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defs := func(v *string, d string) {
		if *v == "" {
			*v = d
		}
	}
	def(&c.Nodes, 3)
	defs(&c.StateDir, "/run/seine-lab")
	defs(&c.NSPrefix, "seine-lab-")
	defs(&c.FabricCIDR, "172.30.0.0/24")
	defs(&c.ClusterCIDR, "10.244.0.0/16")
	defs(&c.ServiceCIDR, "10.96.0.0/16")
	def(&c.NodeCIDRMaskSize, 24)
	def(&c.APIPort, 16443)
	def(&c.EtcdPort, 12379)
	def(&c.ControllerPort, c.APIPort+1)
	def(&c.MTU, 1500)
	defs(&c.CNI, CNISeine)
	defs(&c.Kubelet, KubeletStandIn)
	if c.CNI == CNISeine {
		defs(&c.TrafficMode, "encap")
		defs(&c.TunnelType, "geneve")
	}
}

// kube-proxy modes the lab can run on every node (Config.KubeProxy).
const (
	KubeProxyIPTables = "iptables"
	KubeProxyNFTables = "nftables"
)

// Validate reports a configuration the lab cannot build.
func (c *Config) Validate() error {
	switch c.KubeProxy {
	case "", KubeProxyIPTables, KubeProxyNFTables:
	default:
		return fmt.Errorf("kubeProxy %q: want %s or %s", c.KubeProxy, KubeProxyIPTables, KubeProxyNFTables)
	}
	if c.Nodes < 1 || c.Nodes > 50 {
		return fmt.Errorf("nodes: %d is outside 1..50", c.Nodes)
	}
	if c.WindowsNodes < 0 || c.WindowsNodes > c.Nodes {
		return fmt.Errorf("windows nodes: %d is outside 0..%d", c.WindowsNodes, c.Nodes)
	}
	p, err := netip.ParsePrefix(c.FabricCIDR)
	if err != nil || !p.Addr().Is4() || p.Bits() > 24 {
		return fmt.Errorf("fabric CIDR %q: want an IPv4 prefix of /24 or larger", c.FabricCIDR)
	}
	for _, s := range []string{c.ClusterCIDR, c.ServiceCIDR} {
		if _, err := netip.ParsePrefix(s); err != nil {
			return fmt.Errorf("CIDR %q: %w", s, err)
		}
	}
	if p := netip.MustParsePrefix(c.ServiceCIDR); !p.Addr().Is4() || p.Bits() > 24 {
		return fmt.Errorf("service CIDR %q: want an IPv4 prefix of /24 or larger (kube-dns takes its tenth address)", c.ServiceCIDR)
	}
	switch c.Kubelet {
	case KubeletStandIn:
		if c.CNI == CNINone {
			return fmt.Errorf("cni %q: the kubelet stand-in needs a plugin", c.CNI)
		}
	case KubeletReal:
		if c.RuntimeBin == "" || c.ImagesDir == "" {
			return errors.New("real nodes: the container runtime's directory and the images' directory must be given (make images builds both)")
		}
		if c.WindowsNodes > 0 {
			return errors.New("real nodes: a real kubelet labels its node kubernetes.io/os=linux; windows nodes need the stand-in")
		}
		if c.CNI == CNISeine {
			return fmt.Errorf("real nodes: cni %q is installed from seine.yml; bring the lab up with cni %q", c.CNI, CNINone)
		}
	default:
		return fmt.Errorf("kubelet %q: the lab knows %q and %q", c.Kubelet, KubeletStandIn, KubeletReal)
	}
	switch c.CNI {
	case CNIPtp, CNINone:
	case CNISeine:
		if c.SeineBin == "" {
			return errors.New("cni seine: the directory with seine-agent, seine-cni and seine-controller must be given")
		}
		if _, err := pipeline.ParseTrafficMode(c.TrafficMode); err != nil {
			return fmt.Errorf("traffic mode %w", err)
		}
		if _, err := pipeline.ParseTunnelType(c.TunnelType); err != nil {
			return fmt.Errorf("tunnel type %w", err)
		}
	default:
		return fmt.Errorf("cni %q: the lab knows %q, %q and %q", c.CNI, CNIPtp, CNISeine, CNINone)
	}
	return nil
}

// Node is one simulated node.
type Node struct {
	Name string `json:"name"`
	IP   string `json:"ip"` // on eth0 in the node's namespace
	OS   string `json:"os"`
}

// APIAdvertiseIP is the address kube-apiserver advertises, the endpoint of
// the "kubernetes" Service: node-1's, where the lab's api proxy serves the
// apiserver (APIListens). Node-1 stands for a control-plane node.
func (c *Config) APIAdvertiseIP() string { return c.NodeList()[0].IP }

// ClusterDomain is the lab's DNS domain (kubelets' clusterDomain, CoreDNS's
// zone).
const ClusterDomain = "cluster.local"

// ClusterDNSIP is the kube-dns Service's ClusterIP, the kubelets'
// clusterDNS: the service range's tenth address, as kubeadm picks it.
func (c *Config) ClusterDNSIP() string {
	base := netip.MustParsePrefix(c.ServiceCIDR).Masked().Addr().As4()
	base[3] += 10
	return netip.AddrFrom4(base).String()
}

// NodeList returns the nodes the configuration describes.
func (c *Config) NodeList() []Node {
	base := netip.MustParsePrefix(c.FabricCIDR).Masked().Addr().As4()
	nodes := make([]Node, c.Nodes)
	for i := range nodes {
		ip := base
		ip[3] = byte(10 + i + 1)
		os := "linux"
		if i >= c.Nodes-c.WindowsNodes {
			os = "windows"
		}
		nodes[i] = Node{Name: "node-" + strconv.Itoa(i+1), IP: netip.AddrFrom4(ip).String(), OS: os}
	}
	return nodes
}

// ExternalIP is the external host's address on the fabric.
func (c *Config) ExternalIP() string {
	a := netip.MustParsePrefix(c.FabricCIDR).Masked().Addr().As4()
	a[3] = 254
	return netip.AddrFrom4(a).String()
}

// FabricBits is the prefix length of the fabric.
func (c *Config) FabricBits() int { return netip.MustParsePrefix(c.FabricCIDR).Bits() }

// Paths below the state directory.

func (c *Config) path(p ...string) string {
	return filepath.Join(append([]string{c.StateDir}, p...)...)
}
func (c *Config) PKIDir() string { return c.path("pki") }
func (c *Config) LogDir() string { return c.path("logs") }
func (c *Config) PIDDir() string { return c.path("pids") }
func (c *Config) KubeconfigPath(who string) string {
	return c.path("kubeconfig", who+".conf")
}
func (c *Config) AdminKubeconfig() string    { return c.KubeconfigPath("admin") }
func (c *Config) NodeDir(node string) string { return c.path("nodes", node) }
func (c *Config) NodeOVSDir(node string) string {
	return c.path("nodes", node, "ovs")
}
func (c *Config) NodeCNIConfDir(node string) string {
	return c.path("nodes", node, "cni", "net.d")
}
func (c *Config) NodePodNetNSDir(node string) string {
	return c.path("nodes", node, "netns")
}
func (c *Config) NodeKubeletDir(node string) string {
	return c.path("nodes", node, "kubelet")
}
func (c *Config) CNITemplatePath() string { return c.path("cni", "template.conflist") }
func (c *Config) SeineCNIBinDir() string  { return c.path("cni", "bin") }
func (c *Config) NodeSeineDir(node string) string {
	return c.path("nodes", node, "seine")
}

// NodePolicyAuditLog is the node agent's policy audit log (core/auditlog).
func (c *Config) NodePolicyAuditLog(node string) string {
	return filepath.Join(c.NodeSeineDir(node), "networkpolicy", "np.log")
}

func (c *Config) AgentConfigPath(node string) string {
	return c.path("nodes", node, "seine-agent.yaml")
}

// NetNS returns the name of a lab network namespace ("fabric", "ext" or a node name).
func (c *Config) NetNS(name string) string { return c.NSPrefix + name }

// NetNSPath returns the bind-mount path of a named lab namespace.
func (c *Config) NetNSPath(name string) string { return "/run/netns/" + c.NetNS(name) }

// APIServerURL is where kube-apiserver listens, both on the machine and,
// through the lab's API proxy, inside every node namespace.
func (c *Config) APIServerURL() string { return fmt.Sprintf("https://127.0.0.1:%d", c.APIPort) }

func (c *Config) stateFile() string { return c.path("lab.json") }

// Save records the configuration the lab was brought up with, so that later
// commands (status, exec, down) need no flags.
func (c *Config) Save() error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(c.stateFile(), b, 0o644)
}

// Load reads the configuration of the running lab in stateDir.
func Load(stateDir string) (*Config, error) {
	c := &Config{StateDir: stateDir}
	c.Defaults()
	b, err := os.ReadFile(c.stateFile())
	if err != nil {
		return nil, fmt.Errorf("no lab in %s (is it up?): %w", c.StateDir, err)
	}
	if err := json.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("read %s: %w", c.stateFile(), err)
	}
	return c, nil
}

// ControllerIP is where seine-controller listens: an address of the
// benchmarking range 198.18.0.0/15 (RFC 2544, never routed) derived from
// APIPort, so that labs with different ports do not collide, on a link of
// the machine's namespace (ControllerLink) that `lab down` removes.
// The kube-apiserver's aggregator reaches the controller there; Endpoints
// may not hold loopback addresses.
func (c *Config) ControllerIP() string {
	return netip.AddrFrom4([4]byte{198, 18, byte(c.APIPort >> 8), byte(c.APIPort)}).String()
}

// ControllerLink is the name of the link holding ControllerIP.
func (c *Config) ControllerLink() string { return "seinectl" + strconv.Itoa(c.APIPort) }

// ControllerURL is seine-controller's address.
func (c *Config) ControllerURL() string {
	return "https://" + net.JoinHostPort(c.ControllerIP(), strconv.Itoa(c.ControllerPort))
}

// API aggregation: the front proxy's client certificate name, and the
// Service the controlplane.seine.io APIService points at.
const (
	frontProxyClient    = "front-proxy-client"
	controllerService   = "seine-controller"
	controllerNamespace = "kube-system"
)

// Slot lets several test runs share one machine: SEINE_LAB_SLOT=n (1..9)
// moves every test lab's ports by 100*n and suffixes its names with "s<n>",
// so two runs of the same package never collide. Unset or 0: no change.
func Slot() (portOffset int, suffix string) {
	n, err := strconv.Atoi(os.Getenv("SEINE_LAB_SLOT"))
	if err != nil || n <= 0 || n > 9 {
		return 0, ""
	}
	return 100 * n, "s" + strconv.Itoa(n)
}
