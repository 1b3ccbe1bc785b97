package proxybench

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/seine-cni/seine/core/agent/proxier"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
	"github.com/seine-cni/seine/test/bench/benchutil"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// packetNode is a bridge of the service node (startNode's ports) with two
// pods plugged in as veths into their own namespaces: a client and a
// server, the target Service's only endpoint.
type packetNode struct {
	d            *ovsdaemon.Daemon
	conn         *openflow.Conn
	cfg          pipeline.NodeConfig
	pods         []pipeline.Pod
	cliNS, srvNS string
}

var (
	cliPodIP = netip.MustParseAddr("10.244.1.10")
	srvPodIP = netip.MustParseAddr("10.244.1.11")
)

func startPacketNode(b testing.TB, d *ovsdaemon.Daemon) *packetNode {
	n := startNode(b, d)
	b.Cleanup(n.stop)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	p := &packetNode{d: d, conn: n.conn, cfg: n.cfg}
	pid, err := os.ReadFile(d.PidfilePath("ovs-vswitchd"))
	if err != nil {
		b.Fatal(err)
	}
	for i, pod := range []struct {
		name string
		ip   netip.Addr
		mac  string
	}{{"cli", cliPodIP, "0a:58:0a:f4:01:0a"}, {"srv", srvPodIP, "0a:58:0a:f4:01:0b"}} {
		ns := ovsdaemon.NewNetNS(b)
		in := func(args ...string) {
			if out, err := d.Command(ctx, "nsenter", append([]string{"--net=" + ns}, args...)...).CombinedOutput(); err != nil {
				b.Fatalf("%v: %v\n%s", args, err, out)
			}
		}
		host := "v" + pod.name
		in("ip", "link", "add", "eth0", "type", "veth", "peer", "name", host)
		in("ip", "link", "set", host, "netns", strings.TrimSpace(string(pid)))
		in("ip", "link", "set", "eth0", "address", pod.mac)
		in("ip", "addr", "add", pod.ip.String()+"/24", "dev", "eth0")
		in("ip", "link", "set", "lo", "up")
		in("ip", "link", "set", "eth0", "up")
		// Checksums filled in by the sender: the userspace datapath's
		// conntrack drops offloaded (unfilled) ones as invalid.
		in("ethtool", "-K", "eth0", "tx", "off")
		in("ip", "route", "add", "default", "via", n.cfg.GatewayIP.String())
		if out, err := d.Command(ctx, "ip", "link", "set", host, "up").CombinedOutput(); err != nil {
			b.Fatalf("%v\n%s", err, out)
		}
		port := uint32(10 + i)
		if out, err := d.Vsctl(ctx, "add-port", "br-int", host, "--", "set", "interface", host,
			"ofport_request="+strconv.Itoa(int(port))); err != nil {
			b.Fatalf("add-port %s: %v\n%s", host, err, out)
		}
		mac, _ := net.ParseMAC(pod.mac)
		p.pods = append(p.pods, pipeline.Pod{Namespace: "bench", Name: pod.name, Port: port, IPs: []netip.Addr{pod.ip}, MAC: mac})
		if pod.name == "cli" {
			p.cliNS = ns
		} else {
			p.srvNS = ns
		}
	}
	return p
}

// install replaces every flow and group of the bridge with the pipeline
// (node and pods) and the Services of a fresh proxy fed with services
// Services of 10 endpoints, Service 1's only endpoint being the server pod
// on rrPort.
func (p *packetNode) install(ctx context.Context, services int) error {
	for _, args := range [][]string{{"del-flows", "br-int"}, {"del-groups", "br-int"}} {
		if out, err := p.d.Ofctl(ctx, append([]string{"-O", "OpenFlow15"}, args...)...); err != nil {
			return fmt.Errorf("%v: %v\n%s", args, err, out)
		}
	}
	flows, err := pipeline.Build(pipeline.State{Node: p.cfg, Pods: p.pods}, 1)
	if err != nil {
		return err
	}
	if err := p.conn.AddFlows(ctx, flows...); err != nil {
		return err
	}
	n := &node{conn: p.conn, cfg: p.cfg}
	c, err := proxier.New(proxier.Config{NodeName: "node-1", Node: n,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return err
	}
	svcs, sls := objects(services, 10)
	local, port := "node-1", int32(rrPort)
	sls[1].Endpoints = sls[1].Endpoints[:1]
	sls[1].Endpoints[0].Addresses = []string{srvPodIP.String()}
	sls[1].Endpoints[0].NodeName = &local
	sls[1].Ports[0].Port = &port
	for i := range svcs {
		c.UpdateService(svcs[i])
		c.UpdateSlice(sls[i])
	}
	c.Prime()
	_, msgs, sflows, err := c.ReplayMessages(p.cfg, 1)
	if err != nil {
		return err
	}
	for _, f := range sflows {
		msgs = append(msgs, &openflow.FlowMod{Command: openflow.FlowAdd, Flow: f, OutPort: openflow.PortAny, OutGroup: openflow.GroupAny, BufferID: openflow.NoBuffer})
	}
	return p.conn.Bundle(ctx, msgs...)
}

// BenchmarkServiceFirstPacketScale compares, in one run, a pod's new
// connections to a Service (its endpoint another pod of the node; real
// packets through ovs-vswitchd's userspace datapath) with 10,000, 1,000
// and 100 Services of 10 endpoints installed, in rotating rounds: each run
// replaces the bridge's flows and groups with that many Services, flushes
// the datapath's flows and conntrack table, then makes sequential connections of one 1-byte exchange
// for 2 s: connect time p50/p99 (the first packet: a datapath miss, the
// upcall through ServiceLB, the group and the commits) and connections per
// second. The ratios are each size over 100 Services: 1.0 is flat. -short:
// 1,000 and 100 Services, 0.3 s, one round each.
//
//	go test -run '^$' -bench ServiceFirstPacketScale -benchtime 1x -timeout 60m ./test/bench/proxy
func BenchmarkServiceFirstPacketScale(b *testing.B) {
	ovsdaemon.SkipUnlessCanRun(b)
	d := ovsdaemon.StartForTest(b)
	p := startPacketNode(b, d)
	serve(b, p.srvNS)
	sizes, dur, rounds := []int{10000, 1000, 100}, 2*time.Second, 3
	if testing.Short() {
		sizes, dur, rounds = []int{1000, 100}, 300*time.Millisecond, 0
	}
	ctx := context.Background()
	vip := target{ip: "10.96.0.1", rr: "80"}
	name := func(n int) string { return strconv.Itoa(n) + "-svc" }
	var sides []benchutil.Side
	var ratios []benchutil.Ratio
	for _, n := range sizes {
		sides = append(sides, benchutil.Side{Name: name(n), Run: func(int) (benchutil.Sample, error) {
			if err := p.install(ctx, n); err != nil {
				return nil, err
			}
			// Every side starts from an empty datapath cache and conntrack
			// table. Without the flush, after about 14,000 connections
			// (the client reusing its ports while their entries are
			// closed) new connections time out on OVS releases with the
			// userspace conntrack defect TestServicePortReuse pins.
			for _, cmd := range []string{"dpctl/del-flows", "dpctl/flush-conntrack"} {
				if out, err := d.Appctl(ctx, "ovs-vswitchd", cmd); err != nil {
					return nil, fmt.Errorf("%s: %v\n%s", cmd, err, out)
				}
			}
			if err := waitConnect(ctx, p.cliNS, vip); err != nil {
				return nil, err
			}
			var lat []time.Duration
			start := time.Now()
			for time.Since(start) < dur {
				c, err := crrOnce(p.cliNS, vip)
				if err != nil {
					return nil, fmt.Errorf("%d services: %v: %w", n, err, benchutil.ErrFailedRun)
				}
				lat = append(lat, c)
			}
			rate := float64(len(lat)) / time.Since(start).Seconds()
			slices.Sort(lat)
			pct := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1)+0.5)].Nanoseconds()) / 1e3 }
			return benchutil.Sample{"conn/s": rate, "first-p50-us": pct(0.5), "first-p99-us": pct(0.99)}, nil
		}})
		if n != sizes[len(sizes)-1] {
			ratios = append(ratios, benchutil.Ratio{Num: name(n), Den: name(sizes[len(sizes)-1])})
		}
	}
	for b.Loop() {
		r, err := benchutil.Comparison{
			Name:    fmt.Sprintf("pod -> ClusterIP -> pod on the node, %v Services x 10 endpoints installed, %s of new connections", sizes, dur),
			Metrics: []string{"conn/s", "first-p50-us", "first-p99-us"},
			Sides:   sides,
			Ratios:  ratios,
			Rounds:  rounds,
		}.Run()
		if err != nil {
			b.Fatal(err)
		}
		r.Report(b)
	}
}
