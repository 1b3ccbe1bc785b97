package linux

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/seine-cni/seine/ovs/ovsdb"
	"github.com/seine-cni/seine/platform"
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
