package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
)

// Config is seine-agent's configuration file. Its YAML keys are fixed: the
// installer and the lab write them, and an unknown key is an error.
type Config struct {
	NodeName   string    `json:"nodeName"`
	Kubeconfig string    `json:"kubeconfig"`
	OVS        OVSConfig `json:"ovs"`
	// Topology is bridgedUplink or routedHost.
	Topology string `json:"topology"`
	Uplink   string `json:"uplink"`
	// TrafficMode is encap, noEncap or hybrid.
	TrafficMode string `json:"trafficMode"`
	// TunnelType is geneve, vxlan or gre (encap and hybrid).
	TunnelType string `json:"tunnelType"`
	// MTU is the pod MTU; 0 means the uplink MTU minus the encap overhead.
	MTU       int    `json:"mtu"`
	CNISocket string `json:"cniSocket"`
	// CNIConfDir, when set, receives 10-seine.conflist once the node is ready.
	CNIConfDir    string `json:"cniConfDir"`
	StateDir      string `json:"stateDir"`
	HealthAddress string `json:"healthAddress"`
	// MetricsAddress, when set (ip:port), serves /metrics over HTTPS to
	// clients the kube-apiserver authenticates (TokenReview) and
	// authorizes for get on /metrics (SubjectAccessReview), as
	// seine-controller's API does; the agent's identity needs the
	// system:auth-delegator ClusterRole. The certificate is
	// MetricsTLSCertFile/MetricsTLSKeyFile, or one the agent signs itself.
	MetricsAddress     string `json:"metricsAddress"`
	MetricsTLSCertFile string `json:"metricsTLSCertFile"`
	MetricsTLSKeyFile  string `json:"metricsTLSKeyFile"`
	// FlowSetOS, when set (linux or windows), builds the OpenFlow pipeline
	// for that OS instead of the one the agent runs on. The lab sets it on
	// the nodes that pose as Windows nodes. The flows are the same for both
	// OSes in the bridged-uplink topology (the OS only rules out the routed
	// host), so this poses the configuration, not a different flow set.
	FlowSetOS string `json:"flowSetOS,omitempty"`
	// HostRulesResyncPeriod is how often the host rules (routes, SNAT) are
	// re-applied with the state unchanged, so a rule someone else removed
	// comes back; 0 means DefaultHostRulesResyncPeriod. Where the backend
	// reports host changes (platform.HostRulesWatcher), a removed route comes
	// back at once.
	HostRulesResyncPeriod metav1.Duration `json:"hostRulesResyncPeriod,omitempty"`
	// KubeAPIServer, when set (https://host:port), is the API server the
	// agent talks to instead of the one its kubeconfig or the in-cluster
	// environment names. A cluster without kube-proxy needs it: the
	// in-cluster address is the kubernetes Service's cluster IP, which
	// Seine itself serves once the agent runs.
	KubeAPIServer string `json:"kubeAPIServer,omitempty"`
	// Proxy configures the service proxy.
	Proxy ProxyConfig `json:"proxy,omitempty"`
	// FlowExport, when it names a collector, exports the node's
	// connections as IPFIX (core/flowexport).
	FlowExport *FlowExportConfig `json:"flowExport,omitempty"`
	// PolicyAuditLogFile is the policy audit log (core/auditlog: one line
	// per connection a rule with enableLogging decides, rotated by size).
	// Empty: auditlog.DefaultPath (/var/log/seine/networkpolicy/np.log on
	// Linux, C:\ProgramData\Seine\logs\networkpolicy\np.log on Windows).
	PolicyAuditLogFile string `json:"policyAuditLogFile,omitempty"`
	// PolicyStatsInterval is how often the agent reads its policy flows'
	// counters for policy stats; 0 means DefaultPolicyStatsInterval.
	PolicyStatsInterval metav1.Duration `json:"policyStatsInterval,omitempty"`
	// GCPercent is the Go garbage collector's target (GOGC) seine-agent
	// runs with when its environment has no GOGC: 0 means
	// DefaultGCPercent. The agent holds long-lived state (Services,
	// endpoints, flows) and allocates little between changes, so a
	// collection at half again its live heap instead of Go's doubling
	// costs little CPU and keeps its resident memory near what it holds.
	GCPercent int `json:"gcPercent,omitempty"`
}

// DefaultGCPercent is the agent's GOGC when neither the configuration nor
// the environment sets one. At 10,000 Services and 100,000 endpoints it
// holds ~60 MB of live heap; with Go's default of 100 its RSS was 2.7
// times that (test/bench/README.md, the 10k kube-proxy comparison).
const DefaultGCPercent = 50

// gcPercent is the GOGC the agent sets: -1 (leave it) when the environment
// has GOGC, else the configured one or DefaultGCPercent.
func (c *Config) gcPercent(getenv func(string) string) int {
	if getenv("GOGC") != "" {
		return -1
	}
	if c.GCPercent > 0 {
		return c.GCPercent
	}
	return DefaultGCPercent
}

// DefaultHostRulesResyncPeriod is the host rules' resync period when the
// configuration has none. A resync that finds the host right only reads
// (one iptables-save per IP family on Linux).
const DefaultHostRulesResyncPeriod = 30 * time.Second

// hostRulesResyncPeriod is the configured period or the default.
func (c *Config) hostRulesResyncPeriod() time.Duration {
	if c.HostRulesResyncPeriod.Duration > 0 {
		return c.HostRulesResyncPeriod.Duration
	}
	return DefaultHostRulesResyncPeriod
}

// ProxyConfig configures the service proxy.
type ProxyConfig struct {
	// Mode is seine (Seine's proxy in OVS; the default) or kubeProxy
	// (Services are left to a kube-proxy on the node: Service traffic is
	// handed to the host).
	Mode string `json:"mode,omitempty"`
	// ServiceCIDRs are routed from the host into OVS, so the node itself
	// reaches cluster IPs through Seine's proxy. Empty: the cluster's
	// ServiceCIDR objects (networking.k8s.io/v1) say.
	ServiceCIDRs []string `json:"serviceCIDRs,omitempty"`
	// ServiceProxyName also takes the Services labelled
	// service.kubernetes.io/service-proxy-name=<ServiceProxyName>.
	ServiceProxyName string `json:"serviceProxyName,omitempty"`
}

// Proxy modes.
const (
	ProxyModeSeine     = "seine"
	ProxyModeKubeProxy = "kubeProxy"
)

// proxyMode is the configured proxy mode with its default.
func (c *Config) proxyMode() string {
	if c.Proxy.Mode == "" {
		return ProxyModeSeine
	}
	return c.Proxy.Mode
}

// serviceCIDRs parses the configured service CIDRs.
func (c *Config) serviceCIDRs() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range c.Proxy.ServiceCIDRs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("proxy.serviceCIDRs %q: %w", s, err)
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("proxy.serviceCIDRs %q: host bits set", s)
		}
		out = append(out, p)
	}
	return out, nil
}

// OVSConfig says where the node's Open vSwitch is.
type OVSConfig struct {
	DBEndpoint string `json:"dbEndpoint"`
	// RunDir holds <bridge>.mgmt and ovs-vswitchd's unixctl socket.
	RunDir       string `json:"runDir"`
	Bridge       string `json:"bridge"`
	DatapathType string `json:"datapathType"`
}

// LoadConfig reads and validates a configuration file.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig decodes YAML (or JSON) strictly and validates it.
func ParseConfig(b []byte) (*Config, error) {
	js, err := yaml.YAMLToJSON(b)
	if err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	var cfg Config
	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// Validate reports every problem of the configuration at once.
func (c *Config) Validate() error {
	var errs []error
	req := func(key, v string) {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s is required", key))
		}
	}
	abs := func(key, v string) {
		if v != "" && !filepath.IsAbs(v) {
			errs = append(errs, fmt.Errorf("%s %q: want an absolute path", key, v))
		}
	}
	req("nodeName", c.NodeName)
	req("ovs.dbEndpoint", c.OVS.DBEndpoint)
	req("ovs.runDir", c.OVS.RunDir)
	req("ovs.bridge", c.OVS.Bridge)
	req("cniSocket", c.CNISocket)
	req("stateDir", c.StateDir)
	abs("kubeconfig", c.Kubeconfig)
	abs("ovs.runDir", c.OVS.RunDir)
	abs("cniSocket", c.CNISocket)
	abs("cniConfDir", c.CNIConfDir)
	abs("stateDir", c.StateDir)
	if c.OVS.DBEndpoint != "" {
		if _, err := ovsdb.ParseEndpoint(c.OVS.DBEndpoint); err != nil {
			errs = append(errs, fmt.Errorf("ovs.dbEndpoint: %w", err))
		}
	}
	switch c.OVS.DatapathType {
	case "", "system", "netdev":
	default:
		errs = append(errs, fmt.Errorf("ovs.datapathType %q: want system or netdev", c.OVS.DatapathType))
	}
	if _, err := c.topology(); err != nil {
		errs = append(errs, err)
	}
	if c.Topology == "bridgedUplink" && c.Uplink == "" {
		errs = append(errs, errors.New("uplink is required with topology bridgedUplink"))
	}
	mode, err := c.trafficMode()
	if err != nil {
		errs = append(errs, err)
	}
	if _, err := c.tunnelType(); err != nil && mode != pipeline.NoEncap {
		errs = append(errs, err)
	}
	if c.MTU < 0 || (c.MTU > 0 && c.MTU < 576) {
		errs = append(errs, fmt.Errorf("mtu %d: want 0 (derived) or at least 576", c.MTU))
	}
	if c.GCPercent < 0 {
		errs = append(errs, fmt.Errorf("gcPercent %d: want 0 (the default, %d) or more", c.GCPercent, DefaultGCPercent))
	}
	if c.HealthAddress != "" {
		if _, err := netip.ParseAddrPort(c.HealthAddress); err != nil {
			errs = append(errs, fmt.Errorf("healthAddress %q: want ip:port: %w", c.HealthAddress, err))
		}
	}
	if c.MetricsAddress != "" {
		if _, err := netip.ParseAddrPort(c.MetricsAddress); err != nil {
			errs = append(errs, fmt.Errorf("metricsAddress %q: want ip:port: %w", c.MetricsAddress, err))
		}
	}
	if (c.MetricsTLSCertFile == "") != (c.MetricsTLSKeyFile == "") {
		errs = append(errs, errors.New("metricsTLSCertFile and metricsTLSKeyFile go together"))
	}
	if c.FlowExport != nil && c.FlowExport.Collector != "" {
		if _, err := c.FlowExport.exporterConfig(c.NodeName, false); err != nil {
			errs = append(errs, err)
		}
	}
	switch pipeline.OS(c.FlowSetOS) {
	case "", pipeline.OSLinux, pipeline.OSWindows:
	default:
		errs = append(errs, fmt.Errorf("flowSetOS %q: want linux or windows", c.FlowSetOS))
	}
	if pipeline.OS(c.FlowSetOS) == pipeline.OSWindows && c.Topology != "bridgedUplink" {
		errs = append(errs, errors.New("flowSetOS windows needs topology bridgedUplink (a Windows node has no routed host)"))
	}
	if d := c.HostRulesResyncPeriod.Duration; d != 0 && d < time.Second {
		errs = append(errs, fmt.Errorf("hostRulesResyncPeriod %s: want at least 1s (or 0 for %s)", d, DefaultHostRulesResyncPeriod))
	}
	switch c.Proxy.Mode {
	case "", ProxyModeSeine, ProxyModeKubeProxy:
	default:
		errs = append(errs, fmt.Errorf("proxy.mode %q: want %s or %s", c.Proxy.Mode, ProxyModeSeine, ProxyModeKubeProxy))
	}
	if _, err := c.serviceCIDRs(); err != nil {
		errs = append(errs, err)
	}
	if c.KubeAPIServer != "" {
		if u, err := url.Parse(c.KubeAPIServer); err != nil || u.Scheme != "https" || u.Host == "" {
			errs = append(errs, fmt.Errorf("kubeAPIServer %q: want https://host:port", c.KubeAPIServer))
		}
	}
	if c.OVS.Bridge != "" && c.OVS.Bridge == c.Uplink {
		errs = append(errs, fmt.Errorf("ovs.bridge and uplink are both %q", c.Uplink))
	}
	return errors.Join(errs...)
}

func (c *Config) topology() (platform.Topology, error) {
	switch c.Topology {
	case "bridgedUplink":
		return platform.BridgedUplink, nil
	case "routedHost":
		return platform.RoutedHost, nil
	}
	return "", fmt.Errorf("topology %q: want bridgedUplink or routedHost", c.Topology)
}

func (c *Config) trafficMode() (pipeline.TrafficMode, error) {
	m, err := pipeline.ParseTrafficMode(c.TrafficMode)
	if err != nil {
		return 0, fmt.Errorf("trafficMode %w", err)
	}
	return m, nil
}

func (c *Config) tunnelType() (pipeline.TunnelType, error) {
	t, err := pipeline.ParseTunnelType(c.TunnelType)
	if err != nil {
		return 0, fmt.Errorf("tunnelType %w", err)
	}
	return t, nil
}

func (c *Config) datapath() ovsdb.DatapathType {
	if c.OVS.DatapathType == "netdev" {
		return ovsdb.DatapathNetdev
	}
	return ovsdb.DatapathSystem
}
