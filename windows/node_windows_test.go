package windows

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/Microsoft/hcsshim/hcn"

	"github.com/seine-cni/seine/platform"
)

var nodeCfg = platform.NodeConfig{
	Topology:      platform.BridgedUplink,
	Uplink:        "Ethernet0",
	GatewayIPs:    []netip.Prefix{netip.MustParsePrefix("10.244.1.1/24")},
	EncapOverhead: 50,
}

// freshNode is a Windows node before Seine: the node address and the
// default route on the physical adapter, plus an unrelated adapter.
func freshNode() *host {
	h := newHost()
	up := h.stack.addInterface("Ethernet0", 1500, "192.168.1.11/24")
	other := h.stack.addInterface("Ethernet1", 1500, "172.16.0.5/16")
	h.stack.routes = []ipRoute{
		{Dst: netip.MustParsePrefix("0.0.0.0/0"), NextHop: netip.MustParseAddr("192.168.1.1"), IfIndex: up.Index},
		{Dst: netip.MustParsePrefix("192.168.1.0/24"), IfIndex: up.Index, Metric: 256},
		{Dst: netip.MustParsePrefix("10.9.0.0/16"), NextHop: netip.MustParseAddr("172.16.0.1"), IfIndex: other.Index},
	}
	return h
}

func TestSetupFreshNode(t *testing.T) {
	h := freshNode()
	b := h.backend(t)
	st, err := b.Setup(context.Background(), nodeCfg)
	if err != nil {
		t.Fatal(err)
	}
	diff(t, "host calls", h.Take(), `
hns CreateNetwork {"Name":"seine","Type":"Transparent","Policies":[{"Type":"NetAdapterName","Settings":{"NetworkAdapterName":"Ethernet0"}}],"MacPool":{},"Dns":{},"Ipams":[{"Type":"Static","Subnets":[{"IpAddressPrefix":"192.168.1.0/24","Routes":[{"NextHop":"192.168.1.1","DestinationPrefix":"0.0.0.0/0"}]}]}],"Health":{"Extra":{}},"SchemaVersion":{"Major":2,"Minor":0}} -> net-1
vswitch EnableExtension net-1 583CC151-73EC-4A6A-8B47-578297AD7623
stack AddAddress seine-gw0 10.244.1.1/24
stack DeleteAddress vEthernet (Ethernet0) 192.168.1.11/24
stack AddAddress br-int 192.168.1.11/24
stack AddRoute 0.0.0.0/0 via 192.168.1.1 dev br-int metric 0
stack DeleteRoute 0.0.0.0/0 via 192.168.1.1 dev vEthernet (Ethernet0) metric 0
stack EnableForwarding seine-gw0 ipv4
stack EnableForwarding br-int ipv4`)
	diff(t, "OVSDB", h.ovs.Dump(), `
bridge br-int datapath=system other_config={hwaddr=`+fakeMAC("Ethernet0").String()+`}
  port Ethernet0 ofport=2 type=system external_ids={seine-type=uplink}
  port br-int ofport=65534 type=internal external_ids={seine-node-ips=192.168.1.11/24,seine-node-routes=0.0.0.0/0 via 192.168.1.1,seine-type=host}
  port seine-gw0 ofport=1 type=internal mtu_request=1450 external_ids={seine-type=gateway}`)
	diff(t, "routes", h.stack.dumpRoutes(), `
0.0.0.0/0 via 192.168.1.1 dev br-int metric 0
10.9.0.0/16 via 172.16.0.1 dev Ethernet1 metric 0
192.168.1.0/24 on-link dev vEthernet (Ethernet0) metric 256`)
	want := platform.NodeState{
		Topology: platform.BridgedUplink, Bridge: "br-int", MTU: 1450, UplinkMTU: 1500,
		Gateway: platform.PortState{Name: "seine-gw0", OFPort: 1, MAC: fakeMAC("seine-gw0"), IPs: nodeCfg.GatewayIPs},
		Uplink:  platform.PortState{Name: "Ethernet0", OFPort: 2, MAC: fakeMAC("Ethernet0")},
		Host: platform.PortState{Name: "br-int", OFPort: platform.OFPortLocal, MAC: fakeMAC("br-int"),
			IPs: []netip.Prefix{netip.MustParsePrefix("192.168.1.11/24")}},
		NodeIPs: []netip.Prefix{netip.MustParsePrefix("192.168.1.11/24")},
	}
	diff(t, "node state", stateText(st), stateText(want))

	// The same config again: nothing to create, move or enable.
	h.ovs.ResetLog()
	st2, err := b.Setup(context.Background(), nodeCfg)
	if err != nil {
		t.Fatal(err)
	}
	diff(t, "host calls of the second Setup", h.Take(), "")
	for _, line := range strings.Split(h.ovs.Log(), "\n") {
		if !strings.HasSuffix(line, "(no change)") && !strings.HasPrefix(line, "PortOfport") {
			t.Errorf("second Setup changed OVSDB: %s", line)
		}
	}
	diff(t, "node state of the second Setup", stateText(st2), stateText(want))

	// A restarted agent (new backend) finds the same.
	if _, err := h.backend(t).Setup(context.Background(), nodeCfg); err != nil {
		t.Fatal(err)
	}
	diff(t, "host calls after a restart", h.Take(), "")
}

func stateText(s platform.NodeState) string {
	var b strings.Builder
	port := func(what string, p platform.PortState) {
		b.WriteString(what + " " + p.Name + " ofport=" + strconv.Itoa(p.OFPort) + " mac=" + p.MAC.String())
		for _, ip := range p.IPs {
			b.WriteString(" " + ip.String())
		}
		b.WriteString("\n")
	}
	b.WriteString(string(s.Topology) + " bridge=" + s.Bridge + " mtu=" + strconv.Itoa(s.MTU) + " uplink_mtu=" + strconv.Itoa(s.UplinkMTU) + "\n")
	port("gateway", s.Gateway)
	port("uplink", s.Uplink)
	port("host", s.Host)
	for _, ip := range s.NodeIPs {
		b.WriteString("node ip " + ip.String() + "\n")
	}
	return b.String()
}

func TestSetupAfterReboot(t *testing.T) {
	ctx := context.Background()
	h := freshNode()
	if _, err := h.backend(t).Setup(ctx, nodeCfg); err != nil {
		t.Fatal(err)
	}
	h.Take()
	// The reboot: the bridge's port comes back bare, its routes are gone.
	h.stack.mu.Lock()
	br := h.stack.byIndex(14)
	if br.Name != "br-int" {
		t.Fatalf("interface 14 is %s", br.Name)
	}
	br.IPs = nil
	var kept []ipRoute
	for _, r := range h.stack.routes {
		if r.IfIndex != br.Index {
			kept = append(kept, r)
		}
	}
	h.stack.routes = kept
	h.stack.forward = nil
	h.stack.mu.Unlock()

	st, err := h.backend(t).Setup(ctx, nodeCfg)
	if err != nil {
		t.Fatal(err)
	}
	diff(t, "host calls", h.Take(), `
stack AddAddress br-int 192.168.1.11/24
stack AddRoute 0.0.0.0/0 via 192.168.1.1 dev br-int metric 0
stack EnableForwarding seine-gw0 ipv4
stack EnableForwarding br-int ipv4`)
	if len(st.NodeIPs) != 1 || st.NodeIPs[0].String() != "192.168.1.11/24" {
		t.Errorf("node IPs %v", st.NodeIPs)
	}

	// DHCP renewed the node's address on the host vNIC as well.
	h.stack.mu.Lock()
	vnic := h.stack.byIndex(13)
	vnic.IPs = append(vnic.IPs, netip.MustParsePrefix("192.168.1.11/24"))
	h.stack.mu.Unlock()
	if _, err := h.backend(t).Setup(ctx, nodeCfg); err != nil {
		t.Fatal(err)
	}
	diff(t, "host calls with a duplicate on the host vNIC", h.Take(), "stack DeleteAddress vEthernet (Ethernet0) 192.168.1.11/24")

	t.Run("nothing recorded", func(t *testing.T) {
		h := newHost()
		h.stack.addInterface("Ethernet0", 1500)
		_, err := h.backend(t).Setup(ctx, nodeCfg)
		if err == nil || !strings.Contains(err.Error(), "no node address") || !strings.Contains(err.Error(), "restoring the recorded ones") {
			t.Errorf("Setup: %v", err)
		}
	})
}

func TestSetupRepairsNetwork(t *testing.T) {
	t.Run("wrong network is recreated", func(t *testing.T) {
		h := freshNode()
		h.hns.networks = []hcn.HostComputeNetwork{{Id: "old", Name: NetworkName, Type: hcn.L2Bridge}}
		if _, err := h.backend(t).Setup(context.Background(), nodeCfg); err != nil {
			t.Fatal(err)
		}
		log := h.Take()
		if !strings.HasPrefix(log, "hns DeleteNetwork old\nhns CreateNetwork {\"Name\":\"seine\",\"Type\":\"Transparent\"") {
			t.Errorf("want the L2Bridge network deleted and a Transparent one created, got:\n%s", log)
		}
	})
	t.Run("extension turned off is enabled again", func(t *testing.T) {
		h := freshNode()
		b := h.backend(t)
		if _, err := b.Setup(context.Background(), nodeCfg); err != nil {
			t.Fatal(err)
		}
		h.Take()
		h.vswt.enabled = map[string]bool{}
		if _, err := b.Setup(context.Background(), nodeCfg); err != nil {
			t.Fatal(err)
		}
		diff(t, "host calls", h.Take(), "vswitch EnableExtension net-1 "+OVSExtensionID)
	})
	t.Run("network on another adapter", func(t *testing.T) {
		n := networkRequest("Ethernet1", nil, nil)
		n.Id = "x"
		got := networkProblems(n, "Ethernet0")
		want := []string{`adapter "Ethernet1", want "Ethernet0"`}
		if strings.Join(got, ";") != strings.Join(want, ";") {
			t.Errorf("problems %q, want %q", got, want)
		}
		if p := networkProblems(n, "ethernet1"); len(p) != 0 {
			t.Errorf("adapter names compare without case, got %q", p)
		}
	})
}

func TestSetupFailures(t *testing.T) {
	ctx := context.Background()
	t.Run("address refused by the bridge port goes back", func(t *testing.T) {
		h := freshNode()
		b := h.backend(t)
		// The first AddAddress is the gateway's; fail the second, the
		// node address on br-int.
		calls := 0
		orig := b.stack
		b.stack = failingNth{ipStack: orig, method: "AddAddress", n: 2, calls: &calls}
		_, err := b.Setup(ctx, nodeCfg)
		if err == nil || !strings.Contains(err.Error(), "addresses given back to vEthernet (Ethernet0)") {
			t.Fatalf("Setup: %v, want the address given back", err)
		}
		ifs, _ := h.stack.Interfaces(ctx)
		vnic, _ := findInterface(ifs, hostVNICName("Ethernet0"))
		if len(vnic.IPs) != 1 || vnic.IPs[0].String() != "192.168.1.11/24" {
			t.Errorf("host vNIC addresses after the failure: %v", vnic.IPs)
		}
	})
	t.Run("routed host", func(t *testing.T) {
		cfg := nodeCfg
		cfg.Topology = platform.RoutedHost
		_, err := freshNode().backend(t).Setup(ctx, cfg)
		if !errors.Is(err, platform.ErrNotSupported) {
			t.Errorf("Setup(RoutedHost): %v, want ErrNotSupported", err)
		}
	})
	t.Run("no uplink", func(t *testing.T) {
		cfg := nodeCfg
		cfg.Uplink = "Ethernet9"
		_, err := freshNode().backend(t).Setup(ctx, cfg)
		if err == nil || !strings.Contains(err.Error(), `uplink "Ethernet9": no such interface`) {
			t.Errorf("Setup: %v", err)
		}
	})
	t.Run("HNS refuses the network", func(t *testing.T) {
		h := freshNode()
		h.FailNext("CreateNetwork", errors.New("access denied"))
		_, err := h.backend(t).Setup(ctx, nodeCfg)
		if err == nil || !strings.Contains(err.Error(), "create HNS network seine on Ethernet0: access denied") {
			t.Errorf("Setup: %v", err)
		}
		if d := h.ovs.Dump(); d != "" {
			t.Errorf("OVSDB touched after HNS failed:\n%s", d)
		}
	})
	t.Run("gateway MAC the stack cannot set", func(t *testing.T) {
		h := freshNode()
		b := h.backend(t)
		b.stack = noSetMAC{b.stack}
		cfg := nodeCfg
		cfg.GatewayMAC = fakeMAC("wanted")
		st, err := b.Setup(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if st.Gateway.MAC.String() != fakeMAC("seine-gw0").String() {
			t.Errorf("gateway MAC %s, want the one it has (%s)", st.Gateway.MAC, fakeMAC("seine-gw0"))
		}
	})
	t.Run("gateway MAC set", func(t *testing.T) {
		h := freshNode()
		cfg := nodeCfg
		cfg.GatewayMAC = fakeMAC("wanted")
		st, err := h.backend(t).Setup(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if st.Gateway.MAC.String() != cfg.GatewayMAC.String() {
			t.Errorf("gateway MAC %s, want %s", st.Gateway.MAC, cfg.GatewayMAC)
		}
		if log := h.Take(); !strings.Contains(log, "stack SetMAC seine-gw0 "+cfg.GatewayMAC.String()) {
			t.Errorf("no SetMAC in:\n%s", log)
		}
	})
}

// failingNth fails the n-th call of method.
type failingNth struct {
	ipStack
	method string
	n      int
	calls  *int
}

func (f failingNth) AddAddress(ctx context.Context, idx uint32, p netip.Prefix) error {
	if f.method == "AddAddress" {
		*f.calls++
		if *f.calls == f.n {
			return errors.New("the address is a duplicate")
		}
	}
	return f.ipStack.AddAddress(ctx, idx, p)
}

type noSetMAC struct{ ipStack }

func (noSetMAC) SetMAC(context.Context, uint32, net.HardwareAddr) error {
	return platform.NotSupported("setting a MAC")
}

func TestParseRecord(t *testing.T) {
	ips, routes, err := parseRecord(map[string]string{
		ExternalIDNodeIPs:    "192.168.1.11/24,fd00::11/64",
		ExternalIDNodeRoutes: "0.0.0.0/0 via 192.168.1.1,::/0 via fd00::1",
	})
	if err != nil || len(ips) != 2 || len(routes) != 2 || routes[1].NextHop.String() != "fd00::1" {
		t.Errorf("parseRecord = %v, %v, %v", ips, routes, err)
	}
	_, _, err = parseRecord(map[string]string{ExternalIDNodeIPs: "192.168.1.11", ExternalIDNodeRoutes: "0.0.0.0/0 192.168.1.1"})
	if err == nil || !strings.Contains(err.Error(), ExternalIDNodeIPs) || !strings.Contains(err.Error(), ExternalIDNodeRoutes) {
		t.Errorf("parseRecord of garbage: %v", err)
	}
}

func TestTeardown(t *testing.T) {
	ctx := context.Background()
	h := freshNode()
	b := h.backend(t)
	if _, err := b.Setup(ctx, nodeCfg); err != nil {
		t.Fatal(err)
	}
	h.Take()
	h.ovs.ResetLog()
	if err := b.Teardown(ctx, nodeCfg); err != nil {
		t.Fatal(err)
	}
	diff(t, "host calls", h.Take(), `
stack DeleteAddress br-int 192.168.1.11/24
stack AddAddress vEthernet (Ethernet0) 192.168.1.11/24
stack AddRoute 0.0.0.0/0 via 192.168.1.1 dev vEthernet (Ethernet0) metric 0
stack DeleteRoute 0.0.0.0/0 via 192.168.1.1 dev br-int metric 0
hns DeleteNetwork net-1`)
	diff(t, "OVSDB", h.ovs.Dump(), `
bridge br-int datapath=system other_config={hwaddr=`+fakeMAC("Ethernet0").String()+`}
  port br-int ofport=65534 type=internal external_ids={seine-node-ips=,seine-node-routes=,seine-type=host}`)
	if err := b.Teardown(ctx, nodeCfg); err != nil {
		t.Fatalf("second Teardown: %v", err)
	}
	diff(t, "host calls of the second Teardown", h.Take(), "")
	if _, err := b.Attach(ctx, podNet("c1", nsA)); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("Attach after Teardown: %v", err)
	}
}
