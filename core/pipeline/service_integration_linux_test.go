package pipeline

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/seine-cni/seine/core/proxy"
	"github.com/seine-cni/seine/ovs/openflow"
	"github.com/seine-cni/seine/test/lab/netns"
	"github.com/seine-cni/seine/test/lab/probe"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// installMeters adds the service meters (outside bundles: OVS refuses
// meter mods in them).
func installMeters(ctx context.Context, c *openflow.Conn) error {
	var ms []openflow.Message
	for _, m := range ServiceMeters() {
		ms = append(ms, openflow.AddMeter(m))
	}
	if err := c.Apply(ctx, ms...); err != nil {
		return fmt.Errorf("meters: %w", err)
	}
	return nil
}

// installServices installs groups (split in messages that fit) and flows
// in one bundle: groups first, then the flows that use them.
func installServices(ctx context.Context, c *openflow.Conn, flows []*openflow.Flow, groups []*openflow.GroupEntry) error {
	var msgs []openflow.Message
	for _, g := range groups {
		mods, err := openflow.GroupMods(openflow.GroupAdd, g)
		if err != nil {
			return err
		}
		msgs = append(msgs, mods...)
	}
	for _, f := range flows {
		msgs = append(msgs, &openflow.FlowMod{Command: openflow.FlowAdd, Flow: f,
			OutPort: openflow.PortAny, OutGroup: openflow.GroupAny, BufferID: openflow.NoBuffer})
	}
	return c.Bundle(ctx, msgs...)
}

// TestOVSHoldsServiceFlows installs the service golden node's flows,
// groups and meters into ovs-vswitchd in one bundle and checks that
// ovs-ofctl dumps exactly the golden file.
func TestOVSHoldsServiceFlows(t *testing.T) {
	d, ac, ctx := startOVS(t)
	st := serviceState()
	o := newBridge(t, d, ac, ctx, st)
	flows, groups := serviceFlowsOf(t)
	if err := installMeters(ctx, o.conn); err != nil {
		t.Fatal(err)
	}
	if err := installServices(ctx, o.conn, flows, groups); err != nil {
		t.Fatalf("install: %v", err)
	}
	want, err := os.ReadFile(goldenPath("services-bridged-geneve"))
	if err != nil {
		t.Fatal(err)
	}
	var wantFlows, wantGroups []string
	for _, l := range textLines(string(want)) {
		if strings.HasPrefix(l, "group_id=") {
			wantGroups = append(wantGroups, l)
		} else {
			wantFlows = append(wantFlows, l)
		}
	}
	if got := o.dump(t); !slices.Equal(got, sortedLines(wantFlows)) {
		t.Errorf("OVS holds other flows than the golden file:\n%s", lineDiff(strings.Join(sortedLines(wantFlows), "\n"), strings.Join(got, "\n")))
	}
	out, err := d.Ofctl(ctx, "-O", "OpenFlow15", "dump-groups", testBridge)
	if err != nil {
		t.Fatal(err)
	}
	var gotGroups []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "group_id=") {
			gotGroups = append(gotGroups, l)
		}
	}
	slices.Sort(gotGroups)
	slices.Sort(wantGroups)
	if !slices.Equal(gotGroups, wantGroups) {
		t.Errorf("OVS holds other groups than the golden file:\n%s", lineDiff(strings.Join(wantGroups, "\n"), strings.Join(gotGroups, "\n")))
	}
}

// TestOVSTakesLargeGroups: Services of 1,000 and 5,000 endpoints need
// more than one OpenFlow message for their group; the add and its
// insert_buckets go in one bundle, and OVS holds every bucket.
func TestOVSTakesLargeGroups(t *testing.T) {
	d, ac, ctx := startOVS(t)
	st := serviceState()
	o := newBridge(t, d, ac, ctx, st)
	if err := o.conn.AddFlows(ctx, buildOrFail(t, st, 1)...); err != nil {
		t.Fatal(err)
	}
	if err := installMeters(ctx, o.conn); err != nil {
		t.Fatal(err)
	}
	for i, n := range []int{1000, 5000} {
		p := proxy.Port{Protocol: proxy.ProtoTCP, Port: 80, ClusterIP: netip.AddrFrom4([4]byte{10, 96, 1, byte(i)}), HasEndpoints: true}
		for j := 0; j < n; j++ {
			p.ClusterEndpoints = append(p.ClusterEndpoints, ep(netip.AddrFrom4([4]byte{10, 245, byte(j >> 8), byte(j)}), 8080, false))
		}
		s := &proxy.Service{Namespace: "scale", Name: strconv.Itoa(n), Ports: []proxy.Port{p}}
		set, err := ServiceFlows(st.Node, s, map[string]uint32{"/TCP": uint32(10 + i)}, 1)
		if err != nil {
			t.Fatal(err)
		}
		mods, err := openflow.GroupMods(openflow.GroupAdd, set.Groups[0])
		if err != nil {
			t.Fatal(err)
		}
		if len(mods) < 2 {
			t.Fatalf("%d endpoints fit in one message: the test needs more", n)
		}
		if err := installServices(ctx, o.conn, set.Flows, set.Groups); err != nil {
			t.Fatalf("%d endpoints: %v", n, err)
		}
		// OVS cuts a group's description short when it does not fit in one
		// reply (dump-groups shows the first message's buckets), and its
		// stats reply for more than ~4,090 buckets is malformed (it closes
		// our connection): inserting a bucket with the last bucket's ID
		// again must fail because it is there.
		if n*16 < 60000 {
			gs, err := o.conn.GroupStats(ctx, set.Groups[0].ID)
			if err != nil {
				t.Fatal(err)
			}
			if len(gs) != 1 || len(gs[0].Buckets) != n {
				t.Fatalf("OVS holds %d groups, want one of %d buckets", len(gs), n)
			}
		}
		dup := set.Groups[0].Buckets[0]
		dup.ID = uint32(n - 1)
		err = o.conn.Apply(ctx, openflow.InsertBuckets(&openflow.GroupEntry{ID: set.Groups[0].ID, Type: openflow.GroupTypeSelect,
			Buckets: []openflow.Bucket{dup}}, openflow.BucketLast))
		if !errors.Is(err, openflow.ErrorCode(openflow.ErrTypeGroupModFailed, 0x10)) {
			t.Errorf("%d endpoints: inserting bucket %d again: %v, want OFPGMFC_BUCKET_EXISTS", n, n-1, err)
		}
		dup.ID = uint32(n)
		if err := o.conn.Apply(ctx, openflow.InsertBuckets(&openflow.GroupEntry{ID: set.Groups[0].ID, Type: openflow.GroupTypeSelect,
			Buckets: []openflow.Bucket{dup}}, openflow.BucketLast)); err != nil {
			t.Errorf("%d endpoints: inserting bucket %d: %v", n, n, err)
		}
		t.Logf("%d endpoints: %d messages", n, len(mods))
	}
}

// realNode is ovs-vswitchd with the service node's flows and real network
// namespaces on its ports: pods (web-0, db-0, cli-0 on port 12), an
// external client on the uplink, and the host (the daemon's own netns,
// node IP on LOCAL, gateway IP on gw0).
type realNode struct {
	*ovsNode
	pods map[string]string // pod name -> netns path
	ext  string
}

var cliIP, cliMAC = netip.MustParseAddr("10.244.1.12"), mustMAC("0a:00:00:00:01:0c")

const portCli = 12

func startRealNode(t *testing.T, services []*proxy.Service, ids map[string]map[string]uint32) *realNode {
	t.Helper()
	ovsdaemon.SkipUnlessCanRun(t)
	d, ac, ctx := startOVS(t)
	st := serviceState()
	st.Pods = append(st.Pods, Pod{Namespace: "default", Name: "cli-0", Port: portCli, IPs: []netip.Addr{cliIP}, MAC: cliMAC})
	// The bridge without the pods' internal ports: veths into their netns.
	pods := st.Pods
	st.Pods = nil
	o := newBridge(t, d, ac, ctx, st)
	st.Pods = pods
	run := func(prog string, args ...string) {
		t.Helper()
		if out, err := d.Command(ctx, prog, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", prog, args, err, out)
		}
	}
	pid, err := os.ReadFile(d.PidfilePath("ovs-vswitchd"))
	if err != nil {
		t.Fatal(err)
	}
	// attach makes a netns with eth0 (ip/prefix, mac, default route via gw)
	// whose veth peer is port ofport of the bridge.
	attach := func(name string, ofport uint32, ip netip.Prefix, mac net.HardwareAddr, gw netip.Addr) string {
		ns := ovsdaemon.NewNetNS(t)
		in := func(args ...string) {
			t.Helper()
			cmd := d.Command(ctx, "nsenter", append([]string{"--net=" + ns}, args...)...)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%v: %v\n%s", args, err, out)
			}
		}
		host := "v" + name
		in("ip", "link", "add", "eth0", "type", "veth", "peer", "name", host)
		in("ip", "link", "set", host, "netns", strings.TrimSpace(string(pid)))
		in("ip", "link", "set", "eth0", "address", mac.String())
		in("ip", "addr", "add", ip.String(), "dev", "eth0")
		in("ip", "link", "set", "eth0", "up")
		in("ethtool", "-K", "eth0", "tx", "off")
		if gw.IsValid() {
			in("ip", "route", "add", "default", "via", gw.String())
		}
		run("ip", "link", "set", host, "arp", "off", "up")
		if out, err := d.Vsctl(ctx, "add-port", testBridge, host, "--", "set", "interface", host,
			"ofport_request="+strconv.Itoa(int(ofport))); err != nil {
			t.Fatalf("add-port %s: %v\n%s", host, err, out)
		}
		return ns
	}
	r := &realNode{ovsNode: o, pods: map[string]string{}}
	for _, p := range st.Pods {
		r.pods[p.Name] = attach(p.Name, p.Port, netip.PrefixFrom(p.IPs[0], 24), p.MAC, gatewayIP)
	}
	// The uplink: an external client on the node's subnet.
	if _, err := d.Vsctl(ctx, "del-port", testBridge, "uplink"); err != nil {
		t.Fatal(err)
	}
	r.ext = attach("ext", portUplink, netip.MustParsePrefix("192.168.10.99/24"), clientMAC, netip.Addr{})
	// The host: node IP on LOCAL, gateway IP on gw0, service routes via
	// the next hop.
	run("ip", "addr", "add", nodeIP.String()+"/24", "dev", testBridge)
	run("ip", "link", "set", testBridge, "up")
	run("ip", "link", "set", "gw0", "address", gatewayMAC.String())
	run("ip", "addr", "add", gatewayIP.String()+"/24", "dev", "gw0")
	run("ip", "link", "set", "gw0", "up")
	run("ethtool", "-K", "gw0", "tx", "off")
	run("ip", "route", "add", "10.96.0.0/16", "via", ServiceNextHopIP.String(), "dev", "gw0", "onlink")
	run("ip", "neigh", "replace", ServiceNextHopIP.String(), "lladdr", ServiceNextHopMAC.String(), "dev", "gw0", "nud", "permanent")

	flows := buildOrFail(t, st, 1)
	var groups []*openflow.GroupEntry
	for _, s := range services {
		set, err := ServiceFlows(st.Node, s, ids[s.Key()], 1)
		if err != nil {
			t.Fatal(err)
		}
		flows, groups = append(flows, set.Flows...), append(groups, set.Groups...)
	}
	if err := installMeters(ctx, o.conn); err != nil {
		t.Fatal(err)
	}
	if err := installServices(ctx, o.conn, flows, groups); err != nil {
		t.Fatalf("install: %v", err)
	}
	return r
}

// serve answers every line on TCP port in ns with "<name> saw <client IP>".
func serve(t *testing.T, ns, name string, port int) {
	t.Helper()
	ln, err := probe.ServeWho(ns, name, port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
}

// ask connects from ns ("" = the host) to addr and sends lines; it returns
// the answers.
func ask(ctx context.Context, ns, addr string, lines int) ([]string, error) {
	var out []string
	dial := func() error {
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		rd := bufio.NewReader(c)
		for i := 0; i < lines; i++ {
			if _, err := fmt.Fprintf(c, "line %d\n", i); err != nil {
				return err
			}
			l, err := rd.ReadString('\n')
			if err != nil {
				return err
			}
			out = append(out, strings.TrimSpace(l))
		}
		return nil
	}
	if ns == "" {
		return out, dial()
	}
	return out, netns.Do(ns, dial)
}

func firstKey(m map[string]int) string {
	for k := range m {
		return k
	}
	return ""
}

// TestServicesWithRealPackets sends real TCP connections through
// ovs-vswitchd's conntrack, NAT, groups and learned flows: a pod to a
// ClusterIP, a pod to itself through it (hairpin), an external client to a
// node port, the host to a ClusterIP, and ClientIP affinity.
func TestServicesWithRealPackets(t *testing.T) {
	web := &proxy.Service{Namespace: "default", Name: "web", Ports: []proxy.Port{{
		Name: "http", Protocol: proxy.ProtoTCP, Port: 80, ClusterIP: webVIP, NodePort: 30081, HasEndpoints: true,
		ClusterEndpoints: []proxy.Endpoint{ep(webIP, 8080, true)},
	}}}
	both := []proxy.Endpoint{ep(webIP, 8080, true), ep(dbIP, 8080, true)}
	spread := &proxy.Service{Namespace: "default", Name: "spread", Ports: []proxy.Port{{
		Protocol: proxy.ProtoTCP, Port: 80, ClusterIP: npVIP, HasEndpoints: true, ClusterEndpoints: both,
	}}}
	sticky := &proxy.Service{Namespace: "default", Name: "sticky", Ports: []proxy.Port{{
		Protocol: proxy.ProtoTCP, Port: 80, ClusterIP: stickyVIP, AffinitySeconds: 60, HasEndpoints: true, ClusterEndpoints: both,
	}}}
	day := &proxy.Service{Namespace: "default", Name: "day", Ports: []proxy.Port{{
		Protocol: proxy.ProtoTCP, Port: 80, ClusterIP: dayVIP, AffinitySeconds: 86400, HasEndpoints: true, ClusterEndpoints: both,
	}}}
	udpBoth := []proxy.Endpoint{ep(webIP, 5353, true), ep(dbIP, 5353, true)}
	udpSpread := &proxy.Service{Namespace: "default", Name: "udp", Ports: []proxy.Port{{
		Protocol: proxy.ProtoUDP, Port: 53, ClusterIP: udpVIP, HasEndpoints: true, ClusterEndpoints: udpBoth,
	}}}
	ids := map[string]map[string]uint32{
		"default/web": {"http/TCP": 1}, "default/spread": {"/TCP": 2}, "default/sticky": {"/TCP": 3}, "default/day": {"/TCP": 4},
		"default/udp": {"/UDP": 5},
	}
	r := startRealNode(t, []*proxy.Service{web, spread, sticky, day, udpSpread}, ids)
	serve(t, r.pods["web-0"], "web-0", 8080)
	serve(t, r.pods["db-0"], "db-0", 8080)
	for _, name := range []string{"web-0", "db-0"} {
		stop, err := probe.Serve(r.ctx, r.pods[name], name, []corev1.ContainerPort{{Protocol: corev1.ProtocolUDP, ContainerPort: 5353}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(stop)
	}
	ctx := r.ctx

	check := func(name, ns, addr string, lines int, want string) {
		t.Helper()
		var got []string
		var err error
		for try := 0; try < 3; try++ { // the first packets wait for ARP
			if got, err = ask(ctx, ns, addr, lines); err == nil {
				break
			}
		}
		if err != nil {
			t.Errorf("%s: %v", name, err)
			return
		}
		for _, l := range got {
			if l != want {
				t.Errorf("%s: answers %q, want %q each", name, got, want)
				return
			}
		}
	}
	check("pod to ClusterIP", r.pods["db-0"], "10.96.0.10:80", 3, "web-0 saw 10.244.1.11")
	check("hairpin", r.pods["web-0"], "10.96.0.10:80", 3, "web-0 saw 10.244.1.1")
	check("external client to node port", r.ext, "192.168.10.11:30081", 3, "web-0 saw 192.168.10.99")
	check("host to ClusterIP", r.d.NetNS(), "10.96.0.10:80", 3, "web-0 saw 10.244.1.1")

	seen := func(addr string, n int) map[string]int {
		t.Helper()
		m := map[string]int{}
		for i := 0; i < n; i++ {
			got, err := ask(ctx, r.pods["cli-0"], addr, 1)
			if err != nil {
				t.Fatalf("%s: %v", addr, err)
			}
			m[strings.Fields(got[0])[0]]++
		}
		return m
	}
	if m := seen("10.96.0.11:80", 20); len(m) != 2 {
		t.Errorf("20 connections without affinity reached %v, want both endpoints", m)
	}
	// UDP too: each datagram from a new source port is a new connection.
	// OVS's default selection (dp_hash with its symmetric L3/L4 hash)
	// leaves UDP ports out of the userspace datapath's hash, so every
	// datagram of a client went to one endpoint (the upstream specs
	// "Granular Checks: Services should function for pod-Service: udp"
	// and "should update nodePort: udp" saw one endpoint of three).
	udpSeen := map[string]int{}
	for i := 0; i < 20; i++ {
		got, err := probe.Probe(ctx, r.pods["cli-0"], "udp", netip.AddrPortFrom(udpVIP, 53).String(), 3*time.Second)
		if err != nil {
			t.Fatalf("udp %s: %v", udpVIP, err)
		}
		udpSeen[got]++
	}
	if len(udpSeen) != 2 {
		t.Errorf("20 UDP datagrams from new source ports reached %v, want both endpoints", udpSeen)
	}
	// With affinity: the first connection learns its endpoint; once
	// ovs-vswitchd's revalidators have run (the datapath flows cached
	// before the learned flow existed are then gone) every connection of
	// the client takes it. A connection started within those milliseconds
	// may still pick another endpoint (README, "Affinity").
	for _, addr := range []string{"10.96.0.12:80", "10.96.0.14:80"} {
		first := seen(addr, 1)
		if _, err := r.ac.Call(ctx, "revalidator/wait"); err != nil {
			t.Fatal(err)
		}
		if m := seen(addr, 20); len(m) != 1 || m[firstKey(first)] != 20 {
			out, _ := r.d.Ofctl(ctx, "-O", "OpenFlow15", "dump-flows", testBridge, "table=41")
			t.Errorf("%s: the first connection reached %v, the next 20 %v; want all on the first one's endpoint; table 41:\n%s", addr, first, m, out)
		}
	}
}
