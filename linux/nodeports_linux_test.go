package linux

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// SyncNodePorts DNATs the host's own connections to its node ports (on
// any of its addresses but loopback) to the target, keeps one jump from
// nat OUTPUT, rebuilds its chain on every sync and leaves other rules
// alone; with no ports the chain is empty.
func TestSyncNodePorts(t *testing.T) {
	requirePrivileges(t, "iptables", "iptables-save", "iptables-restore")
	ctx := testCtx(t)
	node := rulesNode(t)
	b := newBackend(t, node, nil, ovsdb.DatapathSystem, "")
	target := ip("169.254.0.252")
	s := platform.NodePortState{Target: target, Ports: []platform.NodePort{{Protocol: 6, Port: 30080}, {Protocol: 17, Port: 30081}},
		Forwarded: ip("169.254.0.253")}
	for i := 0; i < 2; i++ { // the second sync changes nothing
		if err := b.SyncNodePorts(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	nat := saveTable(t, node, "iptables-save", "nat")
	mustContain(t, "nat table", nat,
		`-A OUTPUT -m comment --comment "seine: host connections to node ports go to the service proxy" -j SEINE-NODEPORTS`,
		`-A SEINE-NODEPORTS ! -d 127.0.0.0/8 -p tcp -m addrtype --dst-type LOCAL -m tcp --dport 30080 -m comment --comment "seine: node port tcp/30080" -j DNAT --to-destination 169.254.0.252:30080`,
		`-A SEINE-NODEPORTS ! -d 127.0.0.0/8 -p udp -m addrtype --dst-type LOCAL -m udp --dport 30081 -m comment --comment "seine: node port udp/30081" -j DNAT --to-destination 169.254.0.252:30081`,
		`-A SEINE-NODEPORTS-MASQ -d 169.254.0.252/32 -m comment --comment "seine: node ports" -j MASQUERADE`,
		`-A SEINE-NODEPORTS-MASQ -s 169.254.0.253/32 -m comment --comment "seine: service connections to hostNetwork endpoints on other nodes" -j MASQUERADE`,
		"-A POSTROUTING -s 172.17.0.0/16 -j MASQUERADE")
	if n := strings.Count(nat, "-j SEINE-NODEPORTS\n"); n != 1 {
		t.Errorf("%d jumps to SEINE-NODEPORTS", n)
	}
	// A real connection from the host to its node IP is DNATed: the
	// SYN leaves towards the target (routed out of eth0 here) instead of
	// being refused by the host.
	sh(t, node, "ip", "route", "add", "169.254.0.252/32", "dev", "seine-gw0")
	var err error
	doIn(t, node, func() error {
		var c net.Conn
		c, err = net.DialTimeout("tcp", "192.168.1.11:30080", 300*time.Millisecond)
		if c != nil {
			c.Close()
		}
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Errorf("connection to the node port: %v, want a timeout (the SYN went to the target, nobody answers)", err)
	}
	if err := b.SyncNodePorts(ctx, platform.NodePortState{}); err != nil {
		t.Fatal(err)
	}
	mustNotContain(t, "nat table after removing every port", saveTable(t, node, "iptables-save", "nat"),
		"DNAT --to-destination 169.254.0.252", "-d 169.254.0.252/32", "-s 169.254.0.253/32")
	if err := b.SyncNodePorts(ctx, platform.NodePortState{Ports: []platform.NodePort{{Protocol: 6, Port: 1}}}); err == nil {
		t.Error("ports without a target accepted")
	}
}

// podBehindGateway moves rulesNode's gw-peer into a new network namespace,
// a pod at 10.244.1.5 whose default route is the gateway, and returns it.
func podBehindGateway(t *testing.T, node string) string {
	t.Helper()
	pod := ovsdaemon.NewNetNS(t)
	sh(t, node, "ip", "link", "set", "gw-peer", "netns", pod)
	for _, c := range [][]string{
		{"ip", "addr", "add", "10.244.1.5/24", "dev", "gw-peer"},
		{"ip", "link", "set", "gw-peer", "up"}, {"ip", "link", "set", "lo", "up"},
		{"ip", "route", "add", "default", "via", "10.244.1.1"},
	} {
		sh(t, pod, c...)
	}
	return pod
}

// udpWho answers each datagram to 10.244.1.5:8082 in the pod with "8082
// <the client's address>".
func udpWho(t *testing.T, pod string) {
	t.Helper()
	doIn(t, pod, func() error {
		u, err := net.ListenPacket("udp", "10.244.1.5:8082")
		if err != nil {
			return err
		}
		t.Cleanup(func() { u.Close() })
		go func() {
			buf := make([]byte, 100)
			for {
				_, from, err := u.ReadFrom(buf)
				if err != nil {
					return
				}
				u.WriteTo(fmt.Appendf(nil, "8082 %s", from.(*net.UDPAddr).IP), from)
			}
		}()
		return nil
	})
}

// The host's own connections to pods' host ports, with real packets: the
// upstream HostPort spec's three mappings of one port (127.0.0.1 over
// TCP, the node IP over TCP and over UDP) and one on every address reach
// a "pod" behind seine-gw0 on their own pod ports, from 127.0.0.1 and from
// the node IP, and the pod sees the gateway's address (masqueraded: a
// loopback source cannot leave the host). Without the mappings the ports
// are closed again.
func TestSyncHostPorts(t *testing.T) {
	requirePrivileges(t, "iptables", "iptables-save", "iptables-restore")
	ctx := testCtx(t)
	node := rulesNode(t)
	pod := podBehindGateway(t, node)
	sh(t, node, "sysctl", "-qw", "net.ipv4.conf.seine-gw0.route_localnet=1") // as Setup does
	podIP := ip("10.244.1.5")
	s := platform.NodePortState{HostPorts: []platform.HostPort{
		{Protocol: 6, HostIP: ip("127.0.0.1"), Port: 54323, PodIP: podIP, PodPort: 8080},
		{Protocol: 6, HostIP: ip("192.168.1.11"), Port: 54323, PodIP: podIP, PodPort: 8081},
		{Protocol: 17, HostIP: ip("192.168.1.11"), Port: 54323, PodIP: podIP, PodPort: 8082},
		{Protocol: 6, Port: 54324, PodIP: podIP, PodPort: 8083},
	}}
	// The pod: each TCP port answers its number and the client's address,
	// the UDP port the same for each datagram.
	doIn(t, pod, func() error {
		for _, port := range []string{"8080", "8081", "8083"} {
			l, err := net.Listen("tcp", "10.244.1.5:"+port)
			if err != nil {
				return err
			}
			t.Cleanup(func() { l.Close() })
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					fmt.Fprintf(c, "%s %s", port, c.RemoteAddr().(*net.TCPAddr).IP)
					c.Close()
				}
			}()
		}
		return nil
	})
	udpWho(t, pod)
	b := newBackend(t, node, nil, ovsdb.DatapathSystem, "")
	for i := 0; i < 2; i++ { // the second sync changes nothing
		if err := b.SyncNodePorts(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	nat := saveTable(t, node, "iptables-save", "nat")
	mustContain(t, "nat table", nat,
		`-A OUTPUT -m comment --comment "seine: host connections to pod host ports" -j SEINE-HOSTPORTS`,
		`-A PREROUTING -m comment --comment "seine: pod host ports" -j SEINE-HOSTPORTS`,
		`-A SEINE-HOSTPORTS -d 127.0.0.1/32 -p tcp -m tcp --dport 54323`,
		`-A SEINE-HOSTPORTS -p tcp -m addrtype --dst-type LOCAL -m tcp --dport 54324`,
		"-A POSTROUTING -s 172.17.0.0/16 -j MASQUERADE")
	if n := strings.Count(nat, "-j SEINE-HOSTPORTS\n"); n != 2 {
		t.Errorf("%d jumps to SEINE-HOSTPORTS, want 2 (OUTPUT, PREROUTING)", n)
	}
	ask := func(network, addr string) (string, error) {
		var got string
		var err error
		doIn(t, node, func() error {
			var c net.Conn
			if c, err = net.DialTimeout(network, addr, time.Second); err != nil {
				return nil
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(2 * time.Second))
			if network == "udp" {
				if _, err = c.Write([]byte("hostname")); err != nil {
					return nil
				}
			}
			buf := make([]byte, 100)
			var n int
			n, err = c.Read(buf)
			got = string(buf[:n])
			return nil
		})
		return got, err
	}
	for _, c := range []struct{ network, addr, want string }{
		{"tcp", "127.0.0.1:54323", "8080 10.244.1.1"},
		{"tcp", "192.168.1.11:54323", "8081 10.244.1.1"},
		{"udp", "192.168.1.11:54323", "8082 10.244.1.1"},
		{"tcp", "127.0.0.1:54324", "8083 10.244.1.1"},
		{"tcp", "192.168.1.11:54324", "8083 10.244.1.1"},
	} {
		if got, err := ask(c.network, c.addr); err != nil || got != c.want {
			t.Errorf("%s %s: %q, %v; want %q", c.network, c.addr, got, err, c.want)
		}
	}
	if err := b.SyncNodePorts(ctx, platform.NodePortState{}); err != nil {
		t.Fatal(err)
	}
	mustNotContain(t, "nat table without host ports", saveTable(t, node, "iptables-save", "nat"), "10.244.1.5")
	if got, err := ask("tcp", "127.0.0.1:54323"); err == nil {
		t.Errorf("127.0.0.1:54323 after the mapping went: %q, want refused", got)
	}
}

// A UDP host port that appears while the host already has a conntrack
// entry for its address and port (a client that sent before the pod was
// there, and keeps its source port: DNS, statsd) is DNATed from the next
// datagram on: the sync deletes those entries, which the NAT table would
// otherwise never see again until they time out.
func TestSyncHostPortsFlushesUDP(t *testing.T) {
	requirePrivileges(t, "iptables", "iptables-save", "iptables-restore")
	ctx := testCtx(t)
	node := rulesNode(t)
	pod := podBehindGateway(t, node)
	udpWho(t, pod)
	var client net.PacketConn
	doIn(t, node, func() error {
		var err error
		client, err = net.ListenPacket("udp", "192.168.1.11:40053")
		return err
	})
	t.Cleanup(func() { client.Close() })
	dst := &net.UDPAddr{IP: net.ParseIP("192.168.1.11"), Port: 54323}
	ask := func() string {
		buf := make([]byte, 100)
		for range 3 {
			if _, err := client.WriteTo([]byte("hostname"), dst); err != nil {
				t.Fatal(err)
			}
			client.SetReadDeadline(time.Now().Add(time.Second))
			if n, _, err := client.ReadFrom(buf); err == nil {
				return string(buf[:n])
			}
		}
		return ""
	}
	if got := ask(); got != "" {
		t.Fatalf("answer before the mapping: %q", got)
	}
	b := newBackend(t, node, nil, ovsdb.DatapathSystem, "")
	s := platform.NodePortState{HostPorts: []platform.HostPort{{Protocol: 17, HostIP: ip("192.168.1.11"), Port: 54323, PodIP: ip("10.244.1.5"), PodPort: 8082}}}
	if err := b.SyncNodePorts(ctx, s); err != nil {
		t.Fatal(err)
	}
	if got := ask(); got != "8082 10.244.1.1" {
		t.Errorf("same client port after the mapping: %q, want the pod's answer", got)
	}
}
