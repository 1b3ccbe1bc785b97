package proxybench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/seine-cni/seine/test/bench/benchutil"
	"github.com/seine-cni/seine/test/lab"
	"github.com/seine-cni/seine/test/lab/labtest"
	"github.com/seine-cni/seine/test/lab/netns"
)

func TestMain(m *testing.M) {
	code := m.Run()
	labtest.RemoveBinaries()
	os.Exit(code)
}

// The benchmark's server ports in the server pod: request/response (one
// byte each way, the server closes a connection after its first answer when
// the client asks so) and a sink for throughput, for the Service's
// endpoint; the pod-IP side uses its own pair (directOffset higher). With
// one pair, a direct connection reusing the client port of a DNATed one
// whose conntrack entry lingers (TIME_WAIT) would have the same reply
// tuple, and its SYN-ACK would be un-DNATed as the old connection's (the
// pod-IP runs timed out from the fourth round on).
const (
	rrPort       = 17000
	sinkPort     = 17001
	directOffset = 10
)

// svcLab is one 2-node lab with a client pod on node-1, a server pod on
// node-2 served by the benchmark's own listeners, and a Service (no
// selector; one EndpointSlice naming the server pod) in front of them.
type svcLab struct {
	name      string
	cliNS     string
	podIP     string // the server pod's IP
	clusterIP string
}

// target is what a side measures: an address and its two ports.
type target struct{ ip, rr, sink string }

func (l *svcLab) service() target {
	return target{l.clusterIP, strconv.Itoa(rrPort), strconv.Itoa(sinkPort)}
}

func (l *svcLab) pod() target {
	return target{l.podIP, strconv.Itoa(rrPort + directOffset), strconv.Itoa(sinkPort + directOffset)}
}

// upServiceLab brings up a lab (Seine's proxy, or kube-proxy in mode with
// Seine in its kube-proxy mode) and its pods, servers and Service.
func upServiceLab(b *testing.B, name, kubeProxy string, apiPort int) *svcLab {
	c, cs := labtest.Up(b, labtest.Options{Name: name, Nodes: 2, APIPort: apiPort, EtcdPort: apiPort - 4064, // ports below the ephemeral range (32768+)
		TrafficMode: "encap", TunnelType: "geneve", KubeProxy: kubeProxy})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pp := labtest.StartPodPair(ctx, b, c, cs, "bench-server", "node-2", "bench-client", "node-1")
	srv, srvNS, cliNS := pp.Server, pp.ServerNS, pp.ClientNS
	serve(b, srvNS)
	ip := createService(ctx, b, cs, srv.Status.PodIP)
	l := &svcLab{name: name, cliNS: cliNS, podIP: srv.Status.PodIP, clusterIP: ip}
	// Measure once the path works end to end: the pod IP (first packets
	// to a new node are lost while OVS resolves the tunnel's next hop) and
	// the Service (programmed by the proxy after the slice was created).
	for _, t := range []target{l.pod(), l.service()} {
		if err := waitConnect(ctx, cliNS, t); err != nil {
			b.Fatalf("%s: %v", name, err)
		}
	}
	b.Logf("%s: lab %s, server %s, cluster IP %s", name, c.StateDir, l.podIP, l.clusterIP)
	return l
}

// createService makes Service "bench" (TCP rrPort and sinkPort) with one
// EndpointSlice holding ip, and returns its cluster IP.
func createService(ctx context.Context, b *testing.B, cs kubernetes.Interface, ip string) string {
	var ports []corev1.ServicePort
	var eps []discoveryv1.EndpointPort
	for _, p := range []struct {
		name string
		port int32
	}{{"rr", rrPort}, {"sink", sinkPort}} {
		ports = append(ports, corev1.ServicePort{Name: p.name, Port: p.port, Protocol: corev1.ProtocolTCP})
		name, port, proto := p.name, p.port, corev1.ProtocolTCP
		eps = append(eps, discoveryv1.EndpointPort{Name: &name, Port: &port, Protocol: &proto})
	}
	svc, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "bench"},
		Spec:       corev1.ServiceSpec{Ports: ports},
	}, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	ready, node := true, "node-2"
	if _, err := cs.DiscoveryV1().EndpointSlices("default").Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "bench-1", Labels: map[string]string{
			discoveryv1.LabelServiceName: "bench", discoveryv1.LabelManagedBy: "bench.seine.io"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       eps,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{ip}, NodeName: &node,
			Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
	}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	return svc.Spec.ClusterIP
}

// serve starts the benchmark's listeners inside the server pod's netns
// (a socket keeps the namespace it was made in); they stop at cleanup.
func serve(b testing.TB, nsPath string) {
	for _, off := range []int{0, directOffset} {
		var rr, sink net.Listener
		if err := netns.Do(nsPath, func() error {
			var err error
			if rr, err = net.Listen("tcp4", ":"+strconv.Itoa(rrPort+off)); err != nil {
				return err
			}
			sink, err = net.Listen("tcp4", ":"+strconv.Itoa(sinkPort+off))
			return err
		}); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { rr.Close(); sink.Close() })
		serveOn(rr, sink)
	}
}

func serveOn(rr, sink net.Listener) {
	go accept(rr, func(c net.Conn) {
		// Answer each byte with one byte; a 'c' asks to be closed by the
		// server after its answer (the server keeps the TIME_WAIT, so a
		// client making thousands of connections never runs out of
		// ports).
		buf := make([]byte, 1)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if _, err := c.Write(buf); err != nil || buf[0] == 'c' {
				return
			}
		}
	})
	go accept(sink, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
}

func accept(l net.Listener, handle func(net.Conn)) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() { defer c.Close(); handle(c) }()
	}
}

// waitConnect retries a request/response exchange with addr until one
// succeeds: until ctx's deadline, or two minutes without one (kube-proxy
// in iptables mode takes longer than two minutes to sync 10,000 Services
// on this machine: BenchmarkServiceScaleKubeProxy's grow gives it 20).
func waitConnect(ctx context.Context, nsPath string, t target) error {
	deadline := time.Now().Add(2 * time.Minute)
	if d, ok := ctx.Deadline(); ok {
		deadline = d
	}
	for {
		_, err := crrOnce(nsPath, t)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s:%s never answered: %w", t.ip, t.rr, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// dialIn dials addr from inside the netns.
func dialIn(nsPath, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := netns.Do(nsPath, func() error {
		var err error
		c, err = net.DialTimeout("tcp4", addr, timeout)
		return err
	})
	return c, err
}

// crrOnce makes one connection, one exchange, and lets the server close
// it; it returns the connect time (SYN to SYN-ACK: the first packet's
// round trip through whatever translates the Service).
func crrOnce(nsPath string, t target) (time.Duration, error) {
	t0 := time.Now()
	c, err := dialIn(nsPath, net.JoinHostPort(t.ip, t.rr), dialTimeout)
	if err != nil {
		return 0, err
	}
	connect := time.Since(t0)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(dialTimeout))
	buf := []byte{'c'}
	if _, err := c.Write(buf); err != nil {
		return 0, err
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		return 0, err
	}
	// Wait for the server's FIN, so the close is the server's.
	_, _ = c.Read(buf)
	return connect, nil
}

// measure runs the four workloads against ip from the client pod: new
// connections (one exchange each, sequential) for d, request/response on
// one kept connection for d, then a sink stream for d.
// dialTimeout bounds a connection's setup and exchange: long enough for a
// SYN lost on the loaded machine to be sent again (1 s, then 2 s more),
// which then counts in the connect time's tail.
const dialTimeout = 5 * time.Second

func measure(l *svcLab, t target, d time.Duration) (benchutil.Sample, error) {
	failed := func(what string, err error) (benchutil.Sample, error) {
		return nil, fmt.Errorf("%s %s %s: %v: %w", l.name, t.ip, what, err, benchutil.ErrFailedRun)
	}
	var lat []time.Duration
	start := time.Now()
	for time.Since(start) < d {
		c, err := crrOnce(l.cliNS, t)
		if err != nil {
			return failed("new connection", err)
		}
		lat = append(lat, c)
	}
	crr := float64(len(lat)) / time.Since(start).Seconds()
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[int(p*float64(len(lat)-1)+0.5)].Nanoseconds()) / 1e3
	}

	c, err := dialIn(l.cliNS, net.JoinHostPort(t.ip, t.rr), dialTimeout)
	if err != nil {
		return failed("kept connection", err)
	}
	buf := []byte{'r'}
	n := 0
	_ = c.SetDeadline(time.Now().Add(d + 5*time.Second))
	start = time.Now()
	for time.Since(start) < d {
		if _, err := c.Write(buf); err != nil {
			c.Close()
			return failed("request", err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			c.Close()
			return failed("response", err)
		}
		n++
	}
	rr := float64(n) / time.Since(start).Seconds()
	c.Close()

	s, err := dialIn(l.cliNS, net.JoinHostPort(t.ip, t.sink), dialTimeout)
	if err != nil {
		return failed("stream", err)
	}
	chunk := make([]byte, 128<<10)
	var sent int64
	_ = s.SetDeadline(time.Now().Add(d + 5*time.Second))
	start = time.Now()
	for time.Since(start) < d {
		m, err := s.Write(chunk)
		sent += int64(m)
		if err != nil {
			s.Close()
			return failed("stream write", err)
		}
	}
	gbps := float64(sent) * 8 / time.Since(start).Seconds() / 1e9
	s.Close()
	return benchutil.Sample{"conn/s": crr, "rr/s": rr, "first-p50-us": pct(0.5), "first-p99-us": pct(0.99), "Gbit/s": gbps}, nil
}

// BenchmarkServiceDataPlane compares, in one run, a pod on node-1 talking to
// a pod on node-2 through the pod's ClusterIP with Seine's proxy
// ("seine-svc") against: the same pods through the pod IP ("seine-pod",
// no Service), and the same traffic through kube-proxy in iptables mode
// ("iptables-svc") and nftables mode ("nftables-svc"), each in its own
// 2-node lab with seine-agent in its kube-proxy mode. The labs are up at
// once and idle but for the side measuring; the sides rotate which goes
// first in each round. Each run: new connections per second (sequential
// TCP connections of one 1-byte exchange each, the server closing), their
// connect time p50/p99 (the first packet's round trip through the Service
// translation, a new flow in OVS or a new conntrack entry in the host), the
// request/response rate on one kept connection, and one stream's
// throughput. The client and servers are goroutines of this process in the
// pods' namespaces, alike for every side. -short leaves the nftables lab
// out and runs 0.3 s per workload, one round per side.
//
//	go test -run '^$' -bench ServiceDataPlane -benchtime 1x -timeout 60m ./test/bench/proxy
func BenchmarkServiceDataPlane(b *testing.B) {
	d, rounds := 2*time.Second, 5
	if testing.Short() {
		d, rounds = 300*time.Millisecond, 0
	}
	seine := upServiceLab(b, "bench-svc", "", 27443)
	ipt := upServiceLab(b, "bench-ipt", lab.KubeProxyIPTables, 28443)
	sides := []benchutil.Side{
		{Name: "seine-svc", Run: func(int) (benchutil.Sample, error) { return measure(seine, seine.service(), d) }},
		{Name: "seine-pod", Run: func(int) (benchutil.Sample, error) { return measure(seine, seine.pod(), d) }},
		{Name: "iptables-svc", Run: func(int) (benchutil.Sample, error) { return measure(ipt, ipt.service(), d) }},
	}
	if !testing.Short() {
		nft := upServiceLab(b, "bench-nft", lab.KubeProxyNFTables, 29443)
		sides = append(sides, benchutil.Side{Name: "nftables-svc", Run: func(int) (benchutil.Sample, error) { return measure(nft, nft.service(), d) }})
	}
	for b.Loop() {
		r, err := benchutil.Comparison{
			Name:    fmt.Sprintf("pod -> ClusterIP -> pod on another node, %s per workload", d),
			Metrics: []string{"conn/s", "first-p50-us", "first-p99-us", "rr/s", "Gbit/s"},
			Sides:   sides,
			Rounds:  rounds,
		}.Run()
		if err != nil {
			if errors.Is(err, benchutil.ErrFailedRun) {
				b.Fatalf("too many failed rounds: %v", err)
			}
			b.Fatal(err)
		}
		r.Report(b)
	}
}
