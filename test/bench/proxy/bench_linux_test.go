package proxybench

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seine-cni/seine/core/agent/proxier"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
	"github.com/seine-cni/seine/test/bench/benchutil"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// node is a bridge with a service node's ports and flows, and the proxy's
// Node over a real OpenFlow connection.
type node struct {
	conn *openflow.Conn
	cfg  pipeline.NodeConfig
	stop func() // closes the connection and deletes the bridge
}

func (n *node) Install(ctx context.Context, fn func(proxier.Writer, *pipeline.NodeConfig, pipeline.Round) error) error {
	c := n.cfg
	return fn(n.conn, &c, 1)
}

func startNode(b testing.TB, d *ovsdaemon.Daemon) *node {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	cfg := pipeline.NodeConfig{
		Name: "node-1", OS: pipeline.OSLinux, Topology: pipeline.BridgedUplink, Mode: pipeline.Encap, Tunnel: pipeline.Geneve,
		NodeIPs: []netip.Addr{netip.MustParseAddr("172.30.0.11")}, NodeMAC: mac("52:54:00:00:00:11"),
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}, ClusterPodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		GatewayIP: netip.MustParseAddr("10.244.1.1"), GatewayMAC: mac("0a:58:0a:f4:01:01"),
		Ports: pipeline.Ports{Tunnel: 1, Gateway: 2, Uplink: 3}, ServiceProxy: true,
	}
	args := []string{"add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev", "protocols=OpenFlow15", "fail_mode=secure"}
	for _, p := range []struct {
		name string
		port int
		typ  string
	}{{"tun0", 1, "geneve"}, {"gw0", 2, "internal"}, {"uplink", 3, "internal"}} {
		args = append(args, "--", "add-port", "br-int", p.name, "--", "set", "interface", p.name, "type="+p.typ, "ofport_request="+strconv.Itoa(p.port))
		if p.typ == "geneve" {
			args = append(args, "options:remote_ip=flow", "options:key=flow")
		}
	}
	if out, err := d.Vsctl(ctx, args...); err != nil {
		b.Fatalf("%v\n%s", err, out)
	}
	c, err := openflow.Dial(ctx, "unix:"+d.MgmtSocketPath("br-int"), openflow.Config{})
	if err != nil {
		b.Fatal(err)
	}
	n := &node{conn: c, cfg: cfg, stop: func() {
		c.Close()
		if out, err := d.Vsctl(context.Background(), "--if-exists", "del-br", "br-int"); err != nil {
			b.Errorf("del-br: %v\n%s", err, out)
		}
	}}
	flows, err := pipeline.Build(pipeline.State{Node: cfg}, 1)
	if err != nil {
		b.Fatal(err)
	}
	if err := c.AddFlows(ctx, flows...); err != nil {
		b.Fatal(err)
	}
	for _, m := range pipeline.ServiceMeters() {
		if err := c.Apply(ctx, openflow.AddMeter(m)); err != nil {
			b.Fatal(err)
		}
	}
	return n
}

// objects are Services svc-<i> (TCP 80, cluster IPs in 10.96.0.0/12) with
// one EndpointSlice of eps endpoints each, on nodes spread over
// 10.(1+j).0.0/16 (endpoint j of Service i).
func objects(services, eps int) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
	var svcs []*corev1.Service
	var sls []*discoveryv1.EndpointSlice
	for i := 0; i < services; i++ {
		name := fmt.Sprintf("svc-%d", i)
		ip := fmt.Sprintf("10.%d.%d.%d", 96+i>>16, i>>8&0xff, i&0xff)
		svcs = append(svcs, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
		})
		sls = append(sls, slice(name, i, eps, 0))
	}
	return svcs, sls
}

// slice is Service name's slice of eps endpoints; gen changes the first
// endpoint's address (a pod replaced by another).
func slice(name string, i, eps, gen int) *discoveryv1.EndpointSlice {
	pn, port, proto := "http", int32(8080), corev1.ProtocolTCP
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "bench", Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &pn, Port: &port, Protocol: &proto}},
	}
	for j := 0; j < eps; j++ {
		last := i & 0xff
		if j == 0 {
			last = (i + gen) & 0xff
		}
		node := fmt.Sprintf("node-%d", 2+j)
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses: []string{fmt.Sprintf("10.%d.%d.%d", 1+j, i>>8&0xff, last)}, NodeName: &node,
		})
	}
	return s
}

// vmRSS is the process's resident memory in bytes.
func vmRSS() float64 { return procStatus("VmRSS:") }

// vmHWM is the process's peak resident memory in bytes.
func vmHWM() float64 { return procStatus("VmHWM:") }

func procStatus(key string) float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == key {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb * 1024
		}
	}
	return 0
}

// BenchmarkServiceScale compares, in one run, the proxy at 10,000, 1,000
// and 100 Services of 10 endpoints each (100,000 endpoints at the top, on
// ten other nodes), in rotating rounds: each run feeds the Services to a
// fresh proxy (not timed), then times its cold sync into a fresh bridge of
// a real ovs-vswitchd (what the agent's first replay does: every group and
// service flow, computed and sent in one bundle), then 200 changes of one
// endpoint of one Service, each synced alone (computed, diffed, one
// bundle). Reported per size: cold-sync-s and its cost per Service
// (cold-us/svc: equal across sizes means linear), one change's latency
// p50/p99 (equal across sizes means the work is the changed Service's
// only), and the Go heap after the sync (heap-MB: the tracker and the
// installed state; no informer caches). Ratios are each size over 100
// Services. -short: 1,000 and 100 Services, 50 changes, one round each.
//
//	go test -run '^$' -bench ServiceScale -benchtime 1x -timeout 60m ./test/bench/proxy
func BenchmarkServiceScale(b *testing.B) {
	ovsdaemon.SkipUnlessCanRun(b)
	d := ovsdaemon.StartForTest(b)
	sizes, changes, rounds := []int{10000, 1000, 100}, 200, 3
	if testing.Short() {
		sizes, changes, rounds = []int{1000, 100}, 50, 0
	}
	var sides []benchutil.Side
	var ratios []benchutil.Ratio
	name := func(n int) string { return strconv.Itoa(n) + "-svc" }
	for _, n := range sizes {
		sides = append(sides, benchutil.Side{Name: name(n), Run: func(int) (benchutil.Sample, error) {
			return runScale(b, d, n, 10, changes)
		}})
		if n != sizes[len(sizes)-1] {
			ratios = append(ratios, benchutil.Ratio{Num: name(n), Den: name(sizes[len(sizes)-1])})
		}
	}
	for b.Loop() {
		r, err := benchutil.Comparison{
			Name:    fmt.Sprintf("service proxy at %v Services x 10 endpoints, %d one-endpoint changes", sizes, changes),
			Metrics: []string{"cold-sync-s", "cold-us/svc", "change-p50-ms", "change-p99-ms", "heap-MB"},
			Sides:   sides,
			Ratios:  ratios,
			Rounds:  rounds,
		}.Run()
		if err != nil {
			b.Fatal(err)
		}
		r.Report(b)
		b.Logf("the benchmark process after every run (absolute): RSS %.0f MB, peak RSS %.0f MB (the largest size's run: its fed objects, tracker, installed state and the bundle being sent)",
			vmRSS()/(1<<20), vmHWM()/(1<<20))
	}
}

// runScale is one run at one size on a fresh bridge, deleted afterwards.
func runScale(b *testing.B, d *ovsdaemon.Daemon, services, eps, changes int) (benchutil.Sample, error) {
	n := startNode(b, d)
	defer n.stop()
	ctx := context.Background()
	c, err := proxier.New(proxier.Config{NodeName: "node-1", Node: n,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return nil, err
	}
	svcs, sls := objects(services, eps)
	for i := range svcs {
		c.UpdateService(svcs[i])
		c.UpdateSlice(sls[i])
	}
	svcs, sls = nil, nil
	runtime.GC()
	start := time.Now()
	c.Prime()
	_, msgs, flows, err := c.ReplayMessages(n.cfg, 1)
	if err != nil {
		return nil, err
	}
	for _, f := range flows {
		msgs = append(msgs, &openflow.FlowMod{Command: openflow.FlowAdd, Flow: f, OutPort: openflow.PortAny, OutGroup: openflow.GroupAny, BufferID: openflow.NoBuffer})
	}
	if err := n.conn.Bundle(ctx, msgs...); err != nil {
		return nil, err
	}
	cold := time.Since(start)
	msgs, flows = nil, nil
	debug.FreeOSMemory() // the fed objects and the bundle are garbage now
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	var lat []time.Duration
	for k := 0; k < changes; k++ {
		i := (k * 7919) % services
		c.UpdateSlice(slice(fmt.Sprintf("svc-%d", i), i, eps, k+1))
		t0 := time.Now()
		if err := c.Sync(ctx); err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1)+0.5)].Microseconds()) / 1000 }
	b.Logf("%d services, %d endpoints: cold sync %s; one endpoint change p50 %.2f ms, p99 %.2f ms; heap %.0f MB",
		services, services*eps, cold.Round(time.Millisecond), q(0.5), q(0.99), float64(ms.HeapInuse)/(1<<20))
	return benchutil.Sample{
		"cold-sync-s": cold.Seconds(), "cold-us/svc": float64(cold.Microseconds()) / float64(services),
		"change-p50-ms": q(0.5), "change-p99-ms": q(0.99), "heap-MB": float64(ms.HeapInuse) / (1 << 20),
	}, nil
}
