package lab

import (
	"strings"
	"testing"
)

func TestNodeList(t *testing.T) {
	c := &Config{Nodes: 3, WindowsNodes: 1, SeineBin: "/opt/seine"}
	c.Defaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	got := c.NodeList()
	want := []Node{
		{Name: "node-1", IP: "172.30.0.11", OS: "linux"},
		{Name: "node-2", IP: "172.30.0.12", OS: "linux"},
		{Name: "node-3", IP: "172.30.0.13", OS: "windows"},
	}
	if len(got) != len(want) {
		t.Fatalf("NodeList() = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("node %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if ip := c.ExternalIP(); ip != "172.30.0.254" {
		t.Errorf("ExternalIP() = %s", ip)
	}
	if p := c.NetNSPath("node-1"); p != "/run/netns/seine-lab-node-1" {
		t.Errorf("NetNSPath = %s", p)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		mutate func(*Config)
		want   string
	}{
		{func(c *Config) { c.Nodes = 51 }, "nodes"},
		{func(c *Config) { c.WindowsNodes = 4 }, "windows nodes"},
		{func(c *Config) { c.FabricCIDR = "10.0.0.0/28" }, "fabric CIDR"},
		{func(c *Config) { c.FabricCIDR = "fd00::/64" }, "fabric CIDR"},
		{func(c *Config) { c.ServiceCIDR = "10.96/12" }, "CIDR"},
		{func(c *Config) { c.ServiceCIDR = "10.96.0.0/28" }, "service CIDR"},
		{func(c *Config) { c.ServiceCIDR = "fd00:96::/108" }, "service CIDR"},
		{func(c *Config) { c.CNI = "flannel" }, "cni"},
		{func(c *Config) { c.SeineBin = "" }, "seine-agent, seine-cni and seine-controller"},
		{func(c *Config) { c.TrafficMode = "overlay" }, "traffic mode"},
		{func(c *Config) { c.TunnelType = "stt" }, "tunnel type"},
		{func(c *Config) { c.KubeProxy = "ipvs" }, "kubeProxy"},
	} {
		c := &Config{Nodes: 3, SeineBin: "/opt/seine"}
		c.Defaults()
		tc.mutate(c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want an error about %q", err, tc.want)
		}
	}
}

func TestKubeconfigHasEmbeddedCA(t *testing.T) {
	c := &Config{StateDir: t.TempDir(), Nodes: 2}
	c.Defaults()
	if err := c.writePKI(); err != nil {
		t.Fatal(err)
	}
	for _, who := range []string{"admin", "kube-controller-manager", "kube-scheduler", "node-1", "node-2"} {
		rc, err := c.restConfig(who)
		if err != nil {
			t.Fatalf("%s: %v", who, err)
		}
		if rc.Host != "https://127.0.0.1:16443" || rc.BearerToken == "" || len(rc.TLSClientConfig.CAData) == 0 {
			t.Errorf("%s: kubeconfig gives host %q, token set %v, CA %d bytes", who, rc.Host, rc.BearerToken != "", len(rc.TLSClientConfig.CAData))
		}
	}
}
