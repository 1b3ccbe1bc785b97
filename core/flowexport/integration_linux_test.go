package flowexport

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/appctl"
	"github.com/seine-cni/seine/test/lab/netns"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// TestExportFromRealConntrack sends real connections through a real
// ovs-vswitchd (userspace datapath) that tracks them in Seine's zone and
// DNATs a Service address as the proxy does, reads them with
// ConntrackSource over unixctl, and checks what go-ipfix's collector
// decodes: a pod -> Service TCP connection named with the Service and the
// endpoint pod (pre-DNAT address kept), a pod -> pod UDP exchange, and
// each exported as ended once its entry is closed or gone.
func TestExportFromRealConntrack(t *testing.T) {
	ovsdaemon.SkipUnlessCanRun(t)
	d := ovsdaemon.StartForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const br = "br-int"
	if out, err := d.Vsctl(ctx, "add-br", br, "--", "set", "bridge", br, "datapath_type=netdev", "fail_mode=secure"); err != nil {
		t.Fatalf("add-br: %v\n%s", err, out)
	}
	pid, err := os.ReadFile(d.PidfilePath("ovs-vswitchd"))
	if err != nil {
		t.Fatal(err)
	}
	var (
		cliIP     = netip.MustParseAddr("10.244.1.5")
		srvIP     = netip.MustParseAddr("10.244.1.9")
		vip       = netip.MustParseAddr("10.96.0.10")
		srvMAC, _ = net.ParseMAC("0a:58:0a:f4:01:09")
	)
	// attach makes a pod netns whose eth0 is a veth into the bridge.
	attach := func(name string, ofport int, ip netip.Addr, mac string) string {
		ns := ovsdaemon.NewNetNS(t)
		in := func(args ...string) {
			t.Helper()
			if out, err := d.Command(ctx, "nsenter", append([]string{"--net=" + ns}, args...)...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v\n%s", args, err, out)
			}
		}
		host := "v" + name
		in("ip", "link", "add", "eth0", "type", "veth", "peer", "name", host)
		in("ip", "link", "set", host, "netns", strings.TrimSpace(string(pid)))
		in("ip", "link", "set", "eth0", "address", mac)
		in("ip", "addr", "add", ip.String()+"/24", "dev", "eth0")
		in("ip", "link", "set", "eth0", "up")
		in("ethtool", "-K", "eth0", "tx", "off")
		if out, err := d.Command(ctx, "ip", "link", "set", host, "arp", "off", "up").CombinedOutput(); err != nil {
			t.Fatalf("%s up: %v\n%s", host, err, out)
		}
		if out, err := d.Vsctl(ctx, "add-port", br, host, "--", "set", "interface", host, "ofport_request="+strconv.Itoa(ofport)); err != nil {
			t.Fatalf("add-port %s: %v\n%s", host, err, out)
		}
		return ns
	}
	cli := attach("cli", 1, cliIP, "0a:58:0a:f4:01:05")
	srv := attach("srv", 2, srvIP, srvMAC.String())
	// The client reaches the Service range through the server's MAC, as
	// a pod reaches it through its gateway; the switch DNATs.
	if out, err := d.Command(ctx, "nsenter", "--net="+cli, "ip", "neigh", "replace", vip.String(), "lladdr", srvMAC.String(), "dev", "eth0", "nud", "permanent").CombinedOutput(); err != nil {
		t.Fatalf("neigh: %v\n%s", err, out)
	}
	if out, err := d.Command(ctx, "nsenter", "--net="+cli, "ip", "route", "add", "10.96.0.0/16", "dev", "eth0").CombinedOutput(); err != nil {
		t.Fatalf("route: %v\n%s", err, out)
	}
	zone := strconv.Itoa(int(pipeline.CtZone))
	flows := []string{
		"table=0,priority=100,ip,actions=ct(table=1,zone=" + zone + ",nat)",
		"table=0,priority=0,actions=NORMAL",
		"table=1,priority=110,ct_state=+new+trk,tcp,nw_dst=" + vip.String() + ",tp_dst=80,actions=ct(commit,zone=" + zone + ",nat(dst=" + srvIP.String() + ":8080)),NORMAL",
		"table=1,priority=100,ct_state=+new+trk,ip,actions=ct(commit,zone=" + zone + "),NORMAL",
		"table=1,priority=90,ct_state=+est+trk,ip,actions=NORMAL",
	}
	for _, f := range flows {
		if out, err := d.Ofctl(ctx, "add-flow", br, f); err != nil {
			t.Fatalf("add-flow %s: %v\n%s", f, err, out)
		}
	}

	ac, err := appctl.DialTarget(ctx, d.RunDir(), "ovs-vswitchd")
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	src := ConntrackSource{Appctl: ac, Datapath: "netdev@ovs-netdev", Zone: pipeline.CtZone}
	res := staticResolver{
		pods: map[netip.Addr]Pod{cliIP: {"default", "client", "node-1"}, srvIP: {"web", "server-0", "node-1"}},
		svcs: map[netip.AddrPort]Service{netip.AddrPortFrom(vip, 80): {"web", "frontend", "http"}},
	}

	// The server: TCP 8080 reads everything and answers "ok"; UDP 53
	// echoes.
	var ln net.Listener
	var pc net.PacketConn
	if err := netns.Do(srv, func() (err error) {
		if ln, err = net.Listen("tcp", srvIP.String()+":8080"); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp", srvIP.String()+":53")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	defer pc.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(io.Discard, c)
				c.Write([]byte("ok"))
			}()
		}
	}()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, a, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], a)
		}
	}()

	const enumWarning = "failed to enumerate system datapaths"
	vswitchdLog := filepath.Join(d.Dir(), "log", "ovs-vswitchd.log")
	before, err := os.ReadFile(vswitchdLog)
	if err != nil {
		t.Fatal(err)
	}
	warnedBefore := strings.Count(string(before), enumWarning)

	addr, recs := startCollector(t, "tcp", "127.0.0.1:0")
	x, err := New(Config{
		NodeName: "node-1", Collector: addr, Transport: "tcp",
		PollInterval: 100 * time.Millisecond, ActiveTimeout: time.Hour, IdleTimeout: time.Hour,
	}, src, res, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	xctx, xcancel := context.WithCancel(ctx)
	xdone := make(chan struct{})
	go func() { defer close(xdone); x.Run(xctx) }()
	defer func() { xcancel(); <-xdone }()

	// The client: 100 kB to the Service (closed: TIME_WAIT), then one UDP
	// query to the server pod (gone when the test flushes conntrack).
	var tcpPort, udpPort int
	if err := netns.Do(cli, func() error {
		c, err := net.DialTimeout("tcp", vip.String()+":80", 5*time.Second)
		if err != nil {
			return err
		}
		tcpPort = c.LocalAddr().(*net.TCPAddr).Port
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(make([]byte, 100_000)); err != nil {
			return err
		}
		c.(*net.TCPConn).CloseWrite()
		b, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(b) != "ok" {
			return fmt.Errorf("service answered %q, %v", b, err)
		}
		u, err := net.Dial("udp", srvIP.String()+":53")
		if err != nil {
			return err
		}
		defer u.Close()
		udpPort = u.LocalAddr().(*net.UDPAddr).Port
		_ = u.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := u.Write([]byte("query")); err != nil {
			return err
		}
		_, err = u.Read(make([]byte, 64))
		return err
	}); err != nil {
		t.Fatalf("client: %v", err)
	}
	zoneArg := "zone=" + strconv.Itoa(int(pipeline.CtZone))
	dump, err := ac.Call(ctx, "dpctl/dump-conntrack", "netdev@ovs-netdev", zoneArg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("conntrack zone %d:\n%s", pipeline.CtZone, dump)

	// The TCP connection is in TIME_WAIT: exported once as ended.
	got := collect(t, recs, 1, 20*time.Second)
	f := got[0].fields
	want := map[string]any{
		"sourceIPv4Address": net.IP(cliIP.AsSlice()), "destinationIPv4Address": net.IP(vip.AsSlice()),
		"sourceTransportPort": uint16(tcpPort), "destinationTransportPort": uint16(80), "protocolIdentifier": ProtoTCP,
		"flowEndReason": EndOfFlow, "tcpState": "TIME_WAIT", "flowType": FlowIntraNode,
		"sourcePodNamespace": "default", "sourcePodName": "client", "sourceNodeName": "node-1",
		"destinationPodNamespace": "web", "destinationPodName": "server-0", "destinationNodeName": "node-1",
		"destinationServicePortName": "web/frontend:http", "destinationServicePort": uint16(80),
		"destinationServiceIPv4": net.IP(vip.AsSlice()),
		// OVS's userspace conntrack has no counters (README).
		"octetTotalCount": uint64(0),
	}
	checkFields(t, "pod -> Service", f, want)

	// Naming the datapath keeps polls out of ovs-vswitchd's log (before
	// the flush below, which names none: OVS 3.1's flush-conntrack takes
	// no datapath name with a zone).
	if log, err := os.ReadFile(vswitchdLog); err != nil {
		t.Error(err)
	} else if n := strings.Count(string(log), enumWarning) - warnedBefore; n > 0 {
		t.Errorf("ovs-vswitchd logged %q %d times in %d polls", enumWarning, n, x.Stats().Polls)
	}

	// Flushing the zone ends the UDP exchange: exported as ended.
	if _, err := ac.Call(ctx, "dpctl/flush-conntrack", zoneArg); err != nil {
		t.Fatal(err)
	}
	got = collect(t, recs, 1, 20*time.Second)
	checkFields(t, "pod -> pod UDP", got[0].fields, map[string]any{
		"sourceIPv4Address": net.IP(cliIP.AsSlice()), "destinationIPv4Address": net.IP(srvIP.AsSlice()),
		"sourceTransportPort": uint16(udpPort), "destinationTransportPort": uint16(53), "protocolIdentifier": ProtoUDP,
		"flowEndReason": EndOfFlow, "destinationPodName": "server-0", "destinationServicePortName": "",
	})
	for deadline := time.Now().Add(10 * time.Second); x.Stats().RecordsSent < 2 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond) // counted once the send returns
	}
	if s := x.Stats(); s.RecordsSent != 2 || s.PollErrors != 0 || s.RecordsDropped != 0 {
		t.Errorf("stats %+v", s)
	}
}

func checkFields(t *testing.T, what string, got, want map[string]any) {
	t.Helper()
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("%s: no %s in the record", what, k)
			continue
		}
		if fmt.Sprint(g) != fmt.Sprint(w) {
			t.Errorf("%s: %s = %v, want %v", what, k, g, w)
		}
	}
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
