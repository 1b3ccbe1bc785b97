package flowexportbench

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/seine-cni/seine/core/flowexport"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/appctl"
	"github.com/seine-cni/seine/test/bench/benchutil"
	"github.com/seine-cni/seine/test/lab/netns"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// resolver names the addresses of 10.244.0.0/22 pods (one map read, as
// the agent's informer index is: the names are built beforehand), the
// bench's one allow rule, and no Service.
type resolver map[netip.Addr]flowexport.Pod

func newResolver() resolver {
	r := resolver{}
	for n := range 4 {
		for h := range 256 {
			r[netip.AddrFrom4([4]byte{10, 244, byte(n), byte(h)})] = flowexport.Pod{Namespace: "default",
				Name: "pod-" + strconv.Itoa(h), Node: "node-" + strconv.Itoa(n)}
		}
	}
	return r
}

func (r resolver) Pod(ip netip.Addr) (flowexport.Pod, bool) {
	p, ok := r[ip]
	return p, ok
}

func (resolver) Service(proto uint8, ip netip.Addr, port uint16) (flowexport.Service, bool) {
	return flowexport.Service{}, false
}

func (resolver) Rule(id uint32) (flowexport.Policy, bool) {
	if id != ruleID {
		return flowexport.Policy{}, false
	}
	return flowexport.Policy{Type: flowexport.PolicyK8s, Namespace: "default", Name: "allow-client", Rule: "ingress/0", Action: flowexport.ActionAllow}, true
}

const ruleID = 0x29dabaf2

// BenchmarkExportCycle50k fills a real ovs-vswitchd's userspace conntrack
// (netdev datapath) with 50,000 UDP connections in Seine's zone, each
// committed with a rule ID in ct_label as the pipeline commits them, and
// compares, round by round:
//
//   - dump: ovs-vswitchd's dpctl/dump-conntrack of the zone over unixctl
//     (what the agent asks for every poll), the text only;
//   - cycle: one Exporter.Poll (the same dump, parsed, followed, every end
//     and rule named) and the IPFIX encoding and sending of all 50,000
//     records to a TCP collector, until the last is sent (the collector
//     reads and discards: its decoding is not Seine's cost).
//
// Every connection is exported each cycle (the worst case: all past their
// active timeout). It also reports the heap one followed connection costs.
//
//	go test -run '^$' -bench ExportCycle50k -benchtime 1x ./test/bench/flowexport
func BenchmarkExportCycle50k(b *testing.B) {
	ovsdaemon.SkipUnlessCanRun(b)
	n := 50_000
	if testing.Short() {
		n = 2_000
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	d := ovsdaemon.StartForTest(b)
	const br = "br-int"
	if out, err := d.Vsctl(ctx, "add-br", br, "--", "set", "bridge", br, "datapath_type=netdev", "fail_mode=secure"); err != nil {
		b.Fatalf("add-br: %v\n%s", err, out)
	}
	pid, err := os.ReadFile(d.PidfilePath("ovs-vswitchd"))
	if err != nil {
		b.Fatal(err)
	}
	ns := ovsdaemon.NewNetNS(b)
	in := func(args ...string) {
		b.Helper()
		if out, err := d.Command(ctx, "nsenter", append([]string{"--net=" + ns}, args...)...).CombinedOutput(); err != nil {
			b.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	in("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "vcli")
	in("ip", "link", "set", "vcli", "netns", strings.TrimSpace(string(pid)))
	in("ip", "addr", "add", "10.244.1.5/16", "dev", "eth0")
	in("ip", "link", "set", "eth0", "up")
	// Checksums computed by the sender: OVS's userspace conntrack refuses
	// a packet whose checksum the veth left to an offload.
	in("ethtool", "-K", "eth0", "tx", "off")
	in("ip", "neigh", "replace", "10.244.2.7", "lladdr", "0a:58:0a:f4:02:07", "dev", "eth0", "nud", "permanent")
	if out, err := d.Command(ctx, "ip", "link", "set", "vcli", "up").CombinedOutput(); err != nil {
		b.Fatalf("vcli up: %v\n%s", err, out)
	}
	if out, err := d.Vsctl(ctx, "add-port", br, "vcli", "--", "set", "interface", "vcli", "ofport_request=1"); err != nil {
		b.Fatalf("add-port: %v\n%s", err, out)
	}
	// Committed in Seine's zone with the ingress rule's ID where
	// ConntrackCommit puts it (ct_label[96..127]), then dropped.
	zone := strconv.Itoa(int(pipeline.CtZone))
	flow := fmt.Sprintf("table=0,priority=100,udp,actions=ct(commit,zone=%s,exec(set_field:%#x%024x/0xffffffff%024x->ct_label))",
		zone, ruleID, 0, 0)
	if out, err := d.Ofctl(ctx, "add-flow", br, flow); err != nil {
		b.Fatalf("add-flow %s: %v\n%s", flow, err, out)
	}
	ac, err := appctl.DialTarget(ctx, d.RunDir(), "ovs-vswitchd")
	if err != nil {
		b.Fatal(err)
	}
	defer ac.Close()
	count := func() int {
		out, err := ac.Call(ctx, "dpctl/ct-get-nconns", "netdev@ovs-netdev")
		if err != nil {
			b.Fatal(err)
		}
		c, _ := strconv.Atoi(strings.TrimSpace(out))
		return c
	}
	// One datagram per connection: source port 40000, destination ports
	// 10000..10000+n-1 to the server's address (clear of the ports OVS's
	// conntrack helpers watch). A socket buffer or the switch may drop
	// some; they are sent again.
	fill := func() {
		for try := 0; count() < n && try < 15; try++ {
			if err := netns.Do(ns, func() error {
				c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(10, 244, 1, 5), Port: 40000})
				if err != nil {
					return err
				}
				defer c.Close()
				payload := make([]byte, 16)
				for p := 1; p <= n; p++ {
					binary.BigEndian.PutUint32(payload, uint32(p))
					if _, err := c.WriteToUDP(payload, &net.UDPAddr{IP: net.IPv4(10, 244, 2, 7), Port: 9999 + p}); err != nil {
						return err
					}
					if p%250 == 0 {
						time.Sleep(20 * time.Millisecond)
					}
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
		}
		if c := count(); c < n {
			b.Fatalf("conntrack holds %d connections, want %d", c, n)
		}
	}
	fill()

	// The collector: a TCP sink.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go io.Copy(io.Discard, c)
		}
	}()
	src := flowexport.ConntrackSource{Appctl: ac, Datapath: "netdev@ovs-netdev", Zone: pipeline.CtZone}
	// Polls are driven by hand (the ticker's interval is an hour): each
	// is an hour later, past every connection's active timeout.
	x, err := flowexport.New(flowexport.Config{NodeName: "node-1", Collector: ln.Addr().String(), Transport: "tcp",
		PollInterval: time.Hour, ActiveTimeout: time.Hour, IdleTimeout: 100 * time.Hour, QueueSize: 2 * n}, src, newResolver(), nil)
	if err != nil {
		b.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	xctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		x.Run(xctx)
	}()
	defer func() { stop(); <-done }()
	// The first poll (Run's own) follows every connection and exports
	// none (none is past its active timeout yet).
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		s := x.Stats()
		if s.Connections >= n && s.CollectorConnected {
			break
		}
		if s.PollErrors > 0 || time.Now().After(deadline) {
			b.Fatalf("the first poll: %+v, want %d connections followed", s, n)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perConn := float64(after.HeapAlloc-before.HeapAlloc) / float64(x.Stats().Connections)

	now := time.Now()
	r, err := benchutil.Comparison{
		Name:    fmt.Sprintf("one flow-export cycle over %d connections", n),
		Metrics: []string{"ms"},
		Sides: []benchutil.Side{
			{Name: "cycle", Run: func(int) (benchutil.Sample, error) {
				if count() < n {
					fill()
				}
				now = now.Add(time.Hour)
				s0 := x.Stats()
				start := time.Now()
				x.Poll(ctx, now)
				for s := x.Stats(); s.RecordsSent < s0.RecordsSent+uint64(n); s = x.Stats() {
					if s.RecordsDropped != s0.RecordsDropped || s.PollErrors != s0.PollErrors {
						return nil, fmt.Errorf("records dropped or poll failed: %+v", s)
					}
					time.Sleep(time.Millisecond)
				}
				return benchutil.Sample{"ms": float64(time.Since(start).Microseconds()) / 1000}, nil
			}},
			{Name: "dump", Run: func(int) (benchutil.Sample, error) {
				start := time.Now()
				out, err := ac.Call(ctx, "dpctl/dump-conntrack", "-m", "-s", "netdev@ovs-netdev", "zone="+zone)
				el := time.Since(start)
				if err != nil {
					return nil, err
				}
				if lines := strings.Count(out, "\n"); lines < n {
					return nil, fmt.Errorf("dump has %d lines, want %d", lines, n)
				}
				return benchutil.Sample{"ms": float64(el.Microseconds()) / 1000}, nil
			}},
		},
		Rounds: 5,
	}.Run()
	if err != nil {
		b.Fatal(err)
	}
	r.Report(b)
	b.ReportMetric(perConn, "B/conn")
	b.Logf("heap per followed connection: %.0f B (%d connections; the queue of %d records allocated before)", perConn, x.Stats().Connections, 2*n)
}
