package linux

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// With kube-proxy on the node, a pod's connection to a Service without
// endpoints crosses the host undNATed and kube-proxy's FORWARD rules reject
// it (ICMP port unreachable): the pod is refused at once. Seine's FORWARD
// jump comes first and accepted every packet from the gateway, so the
// REJECT never ran and the pod timed out (the lab's TestServicesKubeProxy
// found it). With the service CIDR in KubeProxyCIDRs such traffic goes on
// to kube-proxy's rules; DNATed traffic (to an endpoint) is still Seine's.
// Real packets: a pod netns behind the gateway veth, kube-proxy's rules as
// it writes them (its jumps after Seine's, as the lab showed).
func TestSyncLeavesServicesKubeProxyDidNotTranslate(t *testing.T) {
	requirePrivileges(t, "iptables", "iptables-save", "ip6tables-save")
	ctx := testCtx(t)
	node := rulesNode(t)
	pod := ovsdaemon.NewNetNS(t)
	for _, c := range [][]string{
		{"ip", "link", "set", "gw-peer", "netns", pod},
		// As the node's Setup leaves them (TestSetup...): forwarding on,
		// no redirects (which would also rate-limit the REJECT's ICMP
		// error: without these two the refused dial below times out).
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"sysctl", "-qw", "net.ipv4.conf.all.send_redirects=0"},
		{"sysctl", "-qw", "net.ipv4.conf.seine-gw0.send_redirects=0"},
		{"ip", "link", "set", "lo", "up"},
	} {
		sh(t, node, c...)
	}
	for _, c := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "addr", "add", "10.244.1.2/24", "dev", "gw-peer"},
		{"ip", "link", "set", "gw-peer", "up"},
		{"ip", "route", "add", "default", "via", "10.244.1.1"},
	} {
		sh(t, pod, c...)
	}
	b := newBackend(t, node, nil, ovsdb.DatapathNetdev, "")
	state := platform.HostState{
		Gateway:           "seine-gw0",
		PodCIDRs:          []netip.Prefix{pfx("10.244.1.0/24")},
		ClusterCIDRs:      []netip.Prefix{pfx("10.244.0.0/16")},
		ServiceRoutes:     []platform.ServiceRoute{{CIDR: pfx("10.96.0.0/16"), NextHop: ip("169.254.0.253")}},
		ServiceNextHopMAC: net.HardwareAddr{0x02, 0x53, 0x45, 0x49, 0x4e, 0x53},
	}
	if err := b.Sync(ctx, state); err != nil {
		t.Fatal(err)
	}
	// kube-proxy (iptables mode): a Service without endpoints, and one
	// DNATed to an endpoint that is the node itself (a listener on the
	// gateway address stands in for a pod behind another port).
	for _, c := range [][]string{
		{"iptables", "-N", "KUBE-SERVICES"},
		{"iptables", "-A", "KUBE-SERVICES", "-d", "10.96.0.10/32", "-p", "tcp", "--dport", "80",
			"-m", "comment", "--comment", "default/empty:tcp has no endpoints", "-j", "REJECT", "--reject-with", "icmp-port-unreachable"},
		{"iptables", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"},
	} {
		sh(t, node, c...)
	}
	dial := func() error {
		var err error
		doIn(t, pod, func() error {
			var c net.Conn
			c, err = net.DialTimeout("tcp", "10.96.0.10:80", 2*time.Second)
			if err == nil {
				c.Close()
			}
			return nil
		})
		return err
	}
	// Without KubeProxyCIDRs Seine's FORWARD chain accepts the SYN: the
	// host routes it back out of the gateway and the pod times out.
	if err := dial(); !isTimeout(err) {
		t.Fatalf("before: dial = %v, want a timeout (the test no longer shows the defect)", err)
	}
	state.KubeProxyCIDRs = []netip.Prefix{pfx("10.96.0.0/16")}
	if err := b.Sync(ctx, state); err != nil {
		t.Fatal(err)
	}
	if err := dial(); !errors.Is(err, unix.ECONNREFUSED) {
		t.Errorf("with KubeProxyCIDRs: dial = %v, want connection refused (kube-proxy's REJECT)\n%s", err, sh(t, node, "iptables", "-L", "-v", "-n"))
	}
	want := `-A SEINE-FORWARD -d 10.96.0.0/16 -m comment --comment "seine: service traffic kube-proxy did not translate" -j RETURN`
	if got := saveTable(t, node, "iptables-save", "filter"); !strings.Contains(got, want+"\n"+`-A SEINE-FORWARD -i seine-gw0`) {
		t.Errorf("filter table:\n%s\nwant first in SEINE-FORWARD: %s", got, want)
	}
	if got := saveTable(t, node, "ip6tables-save", "filter"); strings.Contains(got, "10.96.0.0/16") {
		t.Errorf("an IPv4 CIDR in ip6tables:\n%s", got)
	}
	// A resync of the same state changes nothing.
	if !upToDate(state, false, sh(t, node, "iptables-save")) {
		t.Error("the next Sync would rewrite the IPv4 rules")
	}
	// Out of the kube-proxy mode the rule goes.
	state.KubeProxyCIDRs = nil
	if err := b.Sync(ctx, state); err != nil {
		t.Fatal(err)
	}
	if got := saveTable(t, node, "iptables-save", "filter"); strings.Contains(got, "did not translate") {
		t.Errorf("filter table after the mode ended:\n%s", got)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
