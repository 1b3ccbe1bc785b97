package proxybench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/seine-cni/seine/test/lab"
	"github.com/seine-cni/seine/test/lab/labtest"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// BenchmarkServiceScaleKubeProxy measures the scale steps of issue 14 for
// Seine's proxy and for kube-proxy in iptables and nftables modes, in one
// run against one kube-apiserver holding the same Services:
//
//   - Seine: the real seine-agent of a 1-node lab (its own proxy, its
//     informers), a client pod and a server pod on the node, packets
//     through the node's ovs-vswitchd;
//   - kube-proxy (the lab's control-plane binary, the same Kubernetes
//     release), one per mode, each in a network namespace of its own
//     holding the server's address on an interface with a listener
//     behind it, its client the namespace itself (locally generated
//     traffic: the nat OUTPUT path, the same KUBE-SERVICES lookup a pod's
//     packet meets in PREROUTING).
//
// Steps: (1) Services of 10 endpoints are created up to 100, 1,000 and
// 10,000 (plus a probe Service whose only endpoint is the server); at each
// size, sequential new connections to the probe for 2 s per proxy, per
// round (connect time p50/p99, conn/s; Seine's node conntrack flushed
// first, see TestServicePortReuse), reported as each size over 100
// Services for the same proxy: 1.0 is flat. (2) One endpoint change at the
// largest size: a Service without endpoints gets the server as its
// endpoint; the time from the slice's create request until a connection
// through it succeeds, polled from every proxy's client at once (p50/p99
// over the changes), beside the floor (a watch of the benchmark's own sees
// the slice) and Seine's own network programming duration. (3) Cold sync at the largest size: a new kube-proxy in a fresh
// namespace, and seine-agent restarted on a bridge emptied of flows, each
// timed from its start until the probe answers; then the process's RSS
// (VmRSS, and VmHWM its peak), informer caches included.
//
//	go test -run '^$' -bench ServiceScaleKubeProxy -benchtime 1x -timeout 60m ./test/bench/proxy
//
// -short: 10 and 100 Services, one 0.3 s round, 2 changes.
//
// For a part of it: SEINE_BENCH_KPSCALE_SIZES (e.g. "10000": Services
// created at once, ratios need two sizes), SEINE_BENCH_KPSCALE_PROXIES
// (e.g. "seine": the kube-proxies are not started) and
// SEINE_BENCH_KPSCALE_PROFILES (a directory: seine-agent's heap profile
// after the largest size and after its cold sync, and a CPU profile
// across the endpoint changes, from its loopback /debug/pprof).
func BenchmarkServiceScaleKubeProxy(b *testing.B) {
	sizes, dur, rounds, changes := []int{100, 1000, 10000}, 2*time.Second, 3, 20
	if testing.Short() {
		sizes, dur, rounds, changes = []int{10, 100}, 300*time.Millisecond, 1, 2
	}
	if v := os.Getenv("SEINE_BENCH_KPSCALE_SIZES"); v != "" {
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				b.Fatalf("SEINE_BENCH_KPSCALE_SIZES=%q: want sizes like 100,10000", v)
			}
			sizes = append(sizes, n)
		}
	}
	s := upScaleBench(b, os.Getenv("SEINE_BENCH_KPSCALE_PROXIES"))
	s.profiles = os.Getenv("SEINE_BENCH_KPSCALE_PROFILES")
	for b.Loop() {
		s.run(b, sizes, dur, rounds, changes)
	}
}

// proxySide is one proxy under test and where its client connects from.
type proxySide struct {
	name     string
	clientNS string
	serverNS string                      // where the probe's endpoint listens
	beforeFP func(context.Context) error // before each first-packet run
}

type scaleBench struct {
	c       *lab.Config
	cs      kubernetes.Interface
	ovs     *ovsdaemon.Daemon
	srvIP   string
	probeIP string
	created int // scale Services created so far
	changed int // chg-<k> Services created so far
	sides   []proxySide
	kps     map[string]*kubeProxy
	// profiles, when set, is where seine-agent's profiles go.
	profiles string
}

// upScaleBench brings the lab and the proxies up: Seine and, of iptables
// and nftables, those named in only (all when it is empty).
func upScaleBench(b *testing.B, only string) *scaleBench {
	c, _ := labtest.Up(b, labtest.Options{Name: "kpscale", Nodes: 1, APIPort: 11443, EtcdPort: 11379, // a base of its own (test/lab/README.md)
		TrafficMode: "encap", TunnelType: "geneve"})
	rc, err := clientcmd.BuildConfigFromFlags("", c.AdminKubeconfig())
	if err != nil {
		b.Fatal(err)
	}
	rc.QPS, rc.Burst = 2000, 2000
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pp := labtest.StartPodPair(ctx, b, c, cs, "bench-server", "node-1", "bench-client", "node-1")
	serve(b, pp.ServerNS)
	ovs, err := ovsdaemon.Attach(c.NodeOVSDir("node-1"))
	if err != nil {
		b.Fatal(err)
	}
	s := &scaleBench{c: c, cs: cs, ovs: ovs, srvIP: pp.Server.Status.PodIP, kps: map[string]*kubeProxy{}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench"}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	// The probe, and the Services the endpoint changes fill (no endpoints
	// until then: a connection to them is refused at once).
	if s.probeIP, err = s.put(ctx, scaleService("probe"), s.serverSlice("probe")); err != nil {
		b.Fatal(err)
	}
	s.sides = append(s.sides, proxySide{name: "seine", clientNS: pp.ClientNS, serverNS: pp.ServerNS, beforeFP: func(ctx context.Context) error {
		_, err := ovs.Appctl(ctx, "ovs-vswitchd", "dpctl/flush-conntrack")
		return err
	}})
	for _, mode := range []string{"iptables", "nftables"} {
		if only != "" && !slices.Contains(strings.Split(only, ","), mode) {
			continue
		}
		kp := startKubeProxy(b, c, mode, s.srvIP)
		s.kps[mode] = kp
		s.sides = append(s.sides, proxySide{name: mode, clientNS: kp.ns, serverNS: kp.ns})
	}
	for _, p := range s.sides {
		if err := waitConnect(ctx, p.clientNS, s.probe()); err != nil {
			b.Fatalf("%s: %v", p.name, err)
		}
	}
	return s
}

// scaleService is a ClusterIP Service, TCP 80, its address allocated by
// the apiserver.
func scaleService(name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
	}
}

// serverSlice is Service name's slice with the server pod as its only
// endpoint, on rrPort, stamped with the trigger time both proxies export
// their programming latency from.
func (s *scaleBench) serverSlice(name string) *discoveryv1.EndpointSlice {
	pn, port, proto, ready, node := "http", int32(rrPort), corev1.ProtocolTCP, true, "node-1"
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name + "-1",
			Labels:      map[string]string{discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: "bench.seine.io"},
			Annotations: map[string]string{corev1.EndpointsLastChangeTriggerTime: time.Now().UTC().Format(time.RFC3339Nano)}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &pn, Port: &port, Protocol: &proto}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{s.srvIP}, NodeName: &node,
			Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
	}
}

func (s *scaleBench) probe() target { return target{ip: s.probeIP, rr: "80"} }

// put creates a Service (unless it exists) and creates or replaces its
// slice; it returns the Service's cluster IP.
func (s *scaleBench) put(ctx context.Context, svc *corev1.Service, sl *discoveryv1.EndpointSlice) (string, error) {
	got, err := s.cs.CoreV1().Services("bench").Create(ctx, svc, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, err = s.cs.CoreV1().Services("bench").Get(ctx, svc.Name, metav1.GetOptions{})
	}
	if err != nil {
		return "", err
	}
	if sl.Labels[discoveryv1.LabelManagedBy] == "" {
		sl.Labels[discoveryv1.LabelManagedBy] = "bench.seine.io"
	}
	_, err = s.cs.DiscoveryV1().EndpointSlices("bench").Create(ctx, sl, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		_, err = s.cs.DiscoveryV1().EndpointSlices("bench").Update(ctx, sl, metav1.UpdateOptions{})
	}
	return got.Spec.ClusterIP, err
}

// grow creates scale Services (10 endpoints each, on nodes that do not
// exist) until there are n, 32 requests at a time, then a marker Service
// whose endpoint is the server, and waits until every proxy answers
// through it: each applies changes in order, so all n are installed.
func (s *scaleBench) grow(b *testing.B, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	start := time.Now()
	next := make(chan int)
	errc := make(chan error, 32)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				name := fmt.Sprintf("svc-%d", i)
				sl := slice(name, i, 10, 0)
				sl.Labels[discoveryv1.LabelManagedBy] = "bench.seine.io"
				if _, err := s.put(ctx, scaleService(name), sl); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	for i := s.created; i < n; i++ {
		select {
		case next <- i:
		case err := <-errc:
			close(next)
			wg.Wait()
			b.Fatal(err)
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errc:
		b.Fatal(err)
	default:
	}
	created := time.Since(start)
	s.created = n
	mark := fmt.Sprintf("mark-%d", n)
	ip, err := s.put(ctx, scaleService(mark), s.serverSlice(mark))
	if err != nil {
		b.Fatal(err)
	}
	for _, p := range s.sides {
		if err := waitConnect(ctx, p.clientNS, target{ip: ip, rr: "80"}); err != nil {
			b.Fatalf("%s at %d Services: %v", p.name, n, err)
		}
	}
	b.Logf("%d Services x 10 endpoints: created in %.1f s, all proxies synced %.1f s later", n, created.Seconds(), (time.Since(start) - created).Seconds())
}

// firstPackets makes sequential new connections to the probe from p's
// client for d; it returns the connect times, the rate, how many
// connections failed (counted, not fatal: kube-proxy in iptables mode
// let a connection past its DNAT while it synced 1,000 Services, "no route
// to host", once in this benchmark's first full run) and how many of those
// met the server's TIME_WAIT (its PAWS check dropped their SYNs): on the
// userspace datapath such a connection waits out the dial timeout, for the
// reason core/proxy/README.md gives ("A reused client port and the
// server's TIME_WAIT").
func (s *scaleBench) firstPackets(b testing.TB, p proxySide, d time.Duration) (lat []time.Duration, rate float64, failed, paws int, err error) {
	ctx := context.Background()
	if p.beforeFP != nil {
		if err := p.beforeFP(ctx); err != nil {
			return nil, 0, 0, 0, err
		}
	}
	if err := waitConnect(ctx, p.clientNS, s.probe()); err != nil {
		return nil, 0, 0, 0, err
	}
	// Read the kernels' counters only around a failure: nstat costs a
	// fork, more than a connection. A failure logs the counters that
	// moved since the round began but less than once per connection:
	// the ones that say where its packets went.
	srv0, cli0 := nstatAll(b, p.serverNS), nstatAll(b, p.clientNS)
	start := time.Now()
	for time.Since(start) < d {
		c, err := crrOnce(p.clientNS, s.probe())
		if err != nil {
			failed++
			srv, cli := nstatAll(b, p.serverNS), nstatAll(b, p.clientNS)
			if srv["TcpExtPAWSTimewait"] > srv0["TcpExtPAWSTimewait"] {
				paws++
			}
			n := len(lat) + failed
			b.Logf("%s: connection %d of the round failed after %.1f s: %v; server counters %s; client counters %s",
				p.name, n, time.Since(start).Seconds(), err, rareDeltas(srv0, srv, n), rareDeltas(cli0, cli, n))
			srv0, cli0 = srv, cli
			if failed > 10 {
				return nil, 0, 0, 0, fmt.Errorf("%s: connection %d, failure %d: %w", p.name, n, failed, err)
			}
			continue
		}
		lat = append(lat, c)
	}
	return lat, float64(len(lat)) / time.Since(start).Seconds(), failed, paws, nil
}

// nstatAll reads every counter of nstat in the namespace.
func nstatAll(b testing.TB, ns string) map[string]int {
	out, err := exec.Command("nsenter", "--net="+ns, "nstat", "-az").CombinedOutput()
	if err != nil {
		b.Fatalf("nstat: %v\n%s", err, out)
	}
	m := map[string]int{}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) >= 2 {
			if v, err := strconv.Atoi(f[1]); err == nil {
				m[f[0]] = v
			}
		}
	}
	return m
}

// rareDeltas lists the counters that moved from a to b fewer than n/2
// times: over n connections, not the ones every connection moves.
func rareDeltas(a, b map[string]int, n int) string {
	var out []string
	for k, v := range b {
		if d := v - a[k]; d > 0 && d < max(n/2, 2) {
			out = append(out, fmt.Sprintf("%s+%d", k, d))
		}
	}
	slices.Sort(out)
	return "[" + strings.Join(out, " ") + "]"
}

func pct(lat []time.Duration, q float64) float64 {
	if len(lat) == 0 {
		return 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	return float64(s[int(q*float64(len(s)-1)+0.5)].Nanoseconds()) / 1e3
}

func (s *scaleBench) run(b *testing.B, sizes []int, dur time.Duration, rounds, changes int) {
	type fp struct {
		p50, p99, rate []float64
		failed, paws   int
	}
	res := map[string]map[int]*fp{}
	for _, p := range s.sides {
		res[p.name] = map[int]*fp{}
	}
	for _, n := range sizes {
		s.grow(b, n)
		if n == sizes[len(sizes)-1] {
			s.profile(b, fmt.Sprintf("heap-%d", n), "heap?gc=1")
		}
		for r := range rounds {
			// Rotate the order of the proxies per round.
			for k := range s.sides {
				p := s.sides[(k+r)%len(s.sides)]
				lat, rate, failed, paws, err := s.firstPackets(b, p, dur)
				if err != nil {
					b.Fatalf("%d Services: %v", n, err)
				}
				f := res[p.name][n]
				if f == nil {
					f = &fp{}
					res[p.name][n] = f
				}
				f.failed += failed
				f.paws += paws
				f.p50 = append(f.p50, pct(lat, 0.5))
				f.p99 = append(f.p99, pct(lat, 0.99))
				f.rate = append(f.rate, rate)
			}
		}
	}
	med := func(v []float64) float64 {
		v = slices.Clone(v)
		slices.Sort(v)
		return v[len(v)/2]
	}
	base, top := sizes[0], sizes[len(sizes)-1]
	for _, p := range s.sides {
		for _, n := range sizes {
			f := res[p.name][n]
			b.Logf("%-8s %6d Services: first packet p50 %.0f us, p99 %.0f us, %.0f conn/s (median of %d rounds), %d failed (%d of them met the server's TIME_WAIT: PAWS drops)",
				p.name, n, med(f.p50), med(f.p99), med(f.rate), rounds, f.failed, f.paws)
			if n == base {
				continue
			}
			fb := res[p.name][base]
			key := fmt.Sprintf("%s-%d/%d-", p.name, n, base)
			b.ReportMetric(med(f.p50)/med(fb.p50), key+"p50-x")
			b.ReportMetric(med(f.p99)/med(fb.p99), key+"p99-x")
			b.ReportMetric(med(f.rate)/med(fb.rate), key+"conn/s-x")
		}
		b.ReportMetric(med(res[p.name][top].p50), p.name+"-first-p50-us")
	}

	// One endpoint change at the largest size (and the agent's CPU
	// profile meanwhile).
	cpu := make(chan struct{})
	go func() {
		defer close(cpu)
		s.profile(b, fmt.Sprintf("cpu-changes-%d", top), fmt.Sprintf("profile?seconds=%d", 3*changes))
	}()
	lat := s.changeLatencies(b, changes)
	<-cpu
	// The floor no proxy can beat: the slice's create until a watch of
	// the bench's own sees it (the apiserver's write and watch).
	b.Logf("apiserver: a watch saw the slice after p50 %.1f ms, p99 %.1f ms (%d changes): no proxy can be faster",
		pct(lat["apiserver"], 0.5)/1e3, pct(lat["apiserver"], 0.99)/1e3, changes)
	b.ReportMetric(pct(lat["apiserver"], 0.5)/1e3, "apiserver-watch-p50-ms")
	b.ReportMetric(pct(lat["apiserver"], 0.99)/1e3, "apiserver-watch-p99-ms")
	var over []time.Duration
	for k, d := range lat["seine"] {
		over = append(over, d-lat["apiserver"][k])
	}
	b.Logf("seine beyond the watch (its informer, sync, bundle, the datapath and the 5 ms poll): p50 %.1f ms, p99 %.1f ms",
		pct(over, 0.5)/1e3, pct(over, 0.99)/1e3)
	b.ReportMetric(pct(over, 0.99)/1e3, "seine-change-beyond-watch-p99-ms")
	// Issue 14's programming latency: kube-proxy's
	// network_programming_duration, the slice's trigger time to its flows
	// on the bridge (the agent's own histogram, read around each change).
	if pl := lat["seine-programming"]; len(pl) > 0 {
		b.Logf("seine network programming duration: p50 %.1f ms, p99 %.1f ms (%d of %d changes read)",
			pct(pl, 0.5)/1e3, pct(pl, 0.99)/1e3, len(pl), changes)
		b.ReportMetric(pct(pl, 0.5)/1e3, "seine-programming-p50-ms")
		b.ReportMetric(pct(pl, 0.99)/1e3, "seine-programming-p99-ms")
	}
	for _, p := range s.sides {
		b.Logf("%-8s one endpoint change at %d Services: p50 %.1f ms, p99 %.1f ms (%d changes)",
			p.name, top, pct(lat[p.name], 0.5)/1e3, pct(lat[p.name], 0.99)/1e3, changes)
		b.ReportMetric(pct(lat[p.name], 0.5)/1e3, p.name+"-change-p50-ms")
		b.ReportMetric(pct(lat[p.name], 0.99)/1e3, p.name+"-change-p99-ms")
		if p.name != "seine" {
			b.ReportMetric(pct(lat[p.name], 0.5)/pct(lat["seine"], 0.5), p.name+"/seine-change-p50-x")
		}
	}

	// Cold sync at the largest size, and each process's memory then.
	cold := map[string]time.Duration{}
	for _, p := range s.sides {
		took, rss, hwm, err := s.coldSync(b, p.name)
		if err != nil && p.name != "seine" && !testing.Short() {
			// A baseline that cannot sync this size in the time is a
			// result, not a broken harness: measure the others.
			b.Logf("%-8s cold sync of %d Services x 10 endpoints: not done in 10 minutes (%v)", p.name, top, err)
			continue
		}
		if err != nil {
			b.Fatalf("%s cold sync: %v", p.name, err)
		}
		cold[p.name] = took
		if p.name != "seine" {
			b.ReportMetric(took.Seconds()/cold["seine"].Seconds(), p.name+"/seine-cold-sync-x")
		}
		b.Logf("%-8s cold sync of %d Services x 10 endpoints: %.2f s; RSS %.0f MB (peak %.0f MB)", p.name, top, took.Seconds(), rss/1e6, hwm/1e6)
		if p.name == "seine" {
			s.profile(b, fmt.Sprintf("heap-cold-%d", top), "heap?gc=1")
		}
		b.ReportMetric(took.Seconds(), p.name+"-cold-sync-s")
		b.ReportMetric(rss/1e6, p.name+"-rss-MB")
		b.ReportMetric(hwm/1e6, p.name+"-rss-peak-MB")
	}
}

// changeWait bounds the wait for one endpoint change to take effect.
const changeWait = 3 * time.Minute

// changeLatencies, per proxy: for each change, Service chg-<k> (created
// without endpoints, so a connection to it is refused at once) gets the
// server as its endpoint (its slice created); the time from that request
// until a connection from the proxy's client through it succeeds, polled
// from every client at once (every 5 ms: the resolution). out["apiserver"]
// is when the benchmark's own watch saw the slice, out["seine-programming"]
// the agent's programming duration of each change.
func (s *scaleBench) changeLatencies(b *testing.B, changes int) map[string][]time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	out := map[string][]time.Duration{}
	for k := range changes {
		name := fmt.Sprintf("chg-%d", s.changed)
		svc, err := s.cs.CoreV1().Services("bench").Create(ctx, scaleService(name), metav1.CreateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		s.changed++
		// Let every proxy install the Service (refusing) first.
		time.Sleep(2 * time.Second)
		t := target{ip: svc.Spec.ClusterIP, rr: "80"}
		progSum, progN := s.agentHistogram("seine_proxy_network_programming_duration_seconds")
		syncSum, syncN := s.agentHistogram("seine_proxy_sync_duration_seconds")
		// The apiserver's part: a watch of the bench's own sees the slice
		// when any watcher (the agent's informer) can.
		wt, err := s.cs.DiscoveryV1().EndpointSlices("bench").Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + name + "-1"})
		if err != nil {
			b.Fatal(err)
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		start := time.Now()
		seen := make(chan time.Duration, 1)
		go func() {
			for range wt.ResultChan() {
				seen <- time.Since(start)
				return
			}
		}()
		for _, p := range s.sides {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var last string // the last failed dials (their tail)
				var srv0 map[string]int
				if p.name == "seine" {
					srv0 = nstatAll(b, p.serverNS)
				}
				for time.Since(start) < changeWait {
					t0 := time.Now()
					c, err := dialIn(p.clientNS, net.JoinHostPort(t.ip, t.rr), 50*time.Millisecond)
					if err == nil {
						took := time.Since(start)
						c.Close()
						mu.Lock()
						out[p.name] = append(out[p.name], took)
						mu.Unlock()
						if p.name == "seine" && took > 50*time.Millisecond {
							b.Logf("change %d: seine's last failed dials (started at ms: error after ms):%s; server counters %s",
								k, last, rareDeltas(srv0, nstatAll(b, p.serverNS), 1000))
						}
						return
					}
					kind := "refused"
					if !errors.Is(err, syscall.ECONNREFUSED) {
						kind = err.Error()
						if ne, ok := err.(net.Error); ok && ne.Timeout() {
							kind = "timeout"
						}
					}
					last += fmt.Sprintf(" %.0f: %s after %.0f", ms(t0.Sub(start)), kind, ms(time.Since(t0)))
					if len(last) > 600 {
						last = last[len(last)-600:]
					}
					// Every 5 ms: a tighter loop takes the CPU the
					// proxies share with it.
					time.Sleep(5 * time.Millisecond)
				}
			}()
		}
		// The slice alone: the Service exists (put would first try to
		// create it again and get it, two more requests inside the
		// measured time).
		sl := s.serverSlice(name)
		sl.Labels[discoveryv1.LabelManagedBy] = "bench.seine.io"
		if _, err := s.cs.DiscoveryV1().EndpointSlices("bench").Create(ctx, sl, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		returned := time.Since(start)
		wg.Wait()
		var watched time.Duration
		select {
		case watched = <-seen:
		case <-time.After(10 * time.Second):
			b.Fatalf("change %d: no watch event for the slice in 10 s", k)
		}
		wt.Stop()
		out["apiserver"] = append(out["apiserver"], watched)
		for _, p := range s.sides {
			if len(out[p.name]) != k+1 {
				b.Fatalf("%s: change %d never answered within %s", p.name, k, changeWait)
			}
		}
		// Where Seine's time went: the agent's own programming duration
		// (the slice's trigger time, stamped just before the request, to
		// its flows in the bridge) against the first connection through.
		if sum, n := s.agentHistogram("seine_proxy_network_programming_duration_seconds"); n == progN+1 && len(out["seine"]) == k+1 {
			ss, sn := s.agentHistogram("seine_proxy_sync_duration_seconds")
			out["seine-programming"] = append(out["seine-programming"], time.Duration((sum-progSum)*float64(time.Second)))
			b.Logf("change %d: the slice's create returned after %.1f ms, a watch saw it after %.1f ms; seine connected after %.1f ms, the agent's programming duration %.1f ms, its syncs meanwhile %d taking %.1f ms",
				k, ms(returned), ms(watched), ms(out["seine"][k]), (sum-progSum)*1e3, sn-syncN, (ss-syncSum)*1e3)
		}
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }

// agentHistogram is the sum and count of one of seine-agent's histograms
// (its loopback /metrics); zeros when it cannot be read.
func (s *scaleBench) agentHistogram(name string) (sum float64, count int) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	code, body, err := lab.HTTPGetInNS(ctx, s.c.NetNSPath("node-1"), "http://127.0.0.1:10350/metrics")
	if err != nil || code != 200 {
		return 0, 0
	}
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, name+"_sum "); ok {
			sum, _ = strconv.ParseFloat(v, 64)
		}
		if v, ok := strings.CutPrefix(l, name+"_count "); ok {
			count, _ = strconv.Atoi(v)
		}
	}
	return sum, count
}

// profile saves seine-agent's /debug/pprof/<what> as <name>.pb.gz in the
// profiles directory, when there is one.
func (s *scaleBench) profile(b *testing.B, name, what string) {
	if s.profiles == "" {
		return
	}
	// Not lab.HTTPGetInNS: a profile is binary, and a CPU profile takes
	// longer than its 5 s.
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := ns.WithNetNSPath(s.c.NetNSPath("node-1"), func(ns.NetNS) error {
			var err error
			c, err = (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Minute}).Get("http://127.0.0.1:10350/debug/pprof/" + what)
	var body []byte
	if err == nil {
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, body)
		}
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(s.profiles, name+".pb.gz"), body, 0o644)
	}
	if err != nil {
		b.Errorf("profile %s: %v", name, err)
		return
	}
	b.Logf("seine-agent profile %s saved (%d bytes)", name, len(body))
}

// coldSync starts the proxy afresh on an empty datapath and times it until
// the probe answers; it returns the process's VmRSS and VmHWM then.
func (s *scaleBench) coldSync(b *testing.B, name string) (time.Duration, float64, float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var pid int
	var clientNS string
	var start time.Time
	if name == "seine" {
		if pid := agentPID(s.c, "node-1"); pid != 0 {
			b.Logf("seine-agent before its restart (Services added in steps, changes applied): RSS %.0f MB, peak %.0f MB",
				pidStatus(pid, "VmRSS:")/1e6, pidStatus(pid, "VmHWM:")/1e6)
		}
		if err := s.c.StopAgent("node-1"); err != nil {
			return 0, 0, 0, err
		}
		for _, args := range [][]string{{"del-flows", "br-int"}, {"del-groups", "br-int"}} {
			if out, err := s.ovs.Ofctl(ctx, append([]string{"-O", "OpenFlow15"}, args...)...); err != nil {
				return 0, 0, 0, fmt.Errorf("%v: %v\n%s", args, err, out)
			}
		}
		if _, err := s.ovs.Appctl(ctx, "ovs-vswitchd", "dpctl/flush-conntrack"); err != nil {
			return 0, 0, 0, err
		}
		start = time.Now()
		if err := s.c.StartAgent("node-1"); err != nil {
			return 0, 0, 0, err
		}
		clientNS = s.sides[0].clientNS
	} else {
		s.kps[name].stop()
		kp := startKubeProxy(b, s.c, name, s.srvIP)
		start = kp.started
		s.kps[name] = kp
		clientNS = kp.ns
		for k := range s.sides {
			if s.sides[k].name == name {
				s.sides[k].clientNS = kp.ns
			}
		}
	}
	for {
		c, err := dialIn(clientNS, net.JoinHostPort(s.probe().ip, s.probe().rr), 100*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		if ctx.Err() != nil {
			return 0, 0, 0, fmt.Errorf("the probe never answered: %w", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(start)
	if kp := s.kps[name]; kp != nil {
		out, _ := os.ReadFile(kp.log)
		b.Logf("kube-proxy %s after its cold sync, log (tail):\n%s", name, tailLines(string(out), 12))
	}
	if name == "seine" {
		pid = agentPID(s.c, "node-1")
	} else {
		pid = s.kps[name].cmd.Process.Pid
	}
	rss, hwm := pidStatus(pid, "VmRSS:"), pidStatus(pid, "VmHWM:")
	if rss == 0 {
		return 0, 0, 0, fmt.Errorf("no memory figures for pid %d", pid)
	}
	// And over the 20 s after, once a second (what the sync leaves; 2 s
	// with -short, which make test runs).
	secs := 20
	if testing.Short() {
		secs = 2
	}
	var after []string
	for range secs {
		time.Sleep(time.Second)
		after = append(after, fmt.Sprintf("%.0f", pidStatus(pid, "VmRSS:")/1e6))
	}
	b.Logf("%-8s RSS (MB) each second for %d s after its cold sync: %s; peak %.0f MB", name, secs, strings.Join(after, " "), pidStatus(pid, "VmHWM:")/1e6)
	return took, rss, hwm, nil
}

// agentPID is the node's seine-agent process (the lab's pid file: pid and
// start time).
func agentPID(c *lab.Config, node string) int {
	b, err := os.ReadFile(filepath.Join(c.PIDDir(), "agent-"+node+".pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.Fields(string(b) + " 0")[0])
	return pid
}

// pidStatus reads a "kB" line of /proc/<pid>/status, in bytes.
func pidStatus(pid int, key string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb * 1024
		}
	}
	return 0
}

// kubeProxy is one kube-proxy process in a network namespace of its own.
type kubeProxy struct {
	mode, ns string
	cmd      *exec.Cmd
	started  time.Time
	log      string
	cancel   context.CancelFunc
	done     chan struct{}
}

// kpClientIP is the kube-proxy namespaces' own address (in the cluster
// CIDR, so kube-proxy does not masquerade its traffic to Services).
const kpClientIP = "10.244.250.1"

// startKubeProxy runs kube-proxy in mode in a new namespace: an interface
// (a veth whose peer stays in the namespace: no dummy module here) holds
// the namespace's address and the server's (a listener
// answers there, as the server pod does), a default route over it (a
// locally generated packet to a cluster IP needs a route before the nat
// OUTPUT chain translates it), and the lab's API proxy at 127.0.0.1. It
// calls itself node-1, the lab's node: kube-proxy waits for its Node
// object at start (pkg/proxy/node.go) and would otherwise count that wait
// in its cold sync.
func startKubeProxy(b *testing.B, c *lab.Config, mode, srvIP string) *kubeProxy {
	ns := ovsdaemon.NewNetNS(b)
	for _, args := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"},
		{"ip", "addr", "add", kpClientIP + "/32", "dev", "eth0"},
		{"ip", "addr", "add", srvIP + "/32", "dev", "eth0"},
		{"ip", "link", "set", "eth1", "up"},
		{"ip", "link", "set", "eth0", "up"},
		{"ip", "route", "add", "default", "dev", "eth0", "src", kpClientIP},
	} {
		if out, err := exec.Command("nsenter", append([]string{"--net=" + ns}, args...)...).CombinedOutput(); err != nil {
			b.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	serve(b, ns)
	ctx, cancel := context.WithCancel(context.Background())
	kp := &kubeProxy{mode: mode, ns: ns, cancel: cancel, done: make(chan struct{})}
	apiDone := make(chan struct{})
	go func() {
		defer close(apiDone)
		if err := lab.ServeAPIProxy(ctx, slog.New(slog.DiscardHandler), "127.0.0.1:"+strconv.Itoa(c.APIPort),
			[]lab.ProxyListen{{NetNS: ns, Addr: "127.0.0.1:" + strconv.Itoa(c.APIPort)}}); err != nil {
			b.Logf("api proxy for kube-proxy %s: %v", mode, err)
		}
	}()
	dir := b.TempDir()
	cfg := filepath.Join(dir, "kube-proxy.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %s
mode: %s
hostnameOverride: node-1
clusterCIDR: %s
bindAddress: %s
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, c.KubeconfigPath("kube-proxy"), mode, c.ClusterCIDR, kpClientIP)), 0o644); err != nil {
		b.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "kube-proxy.log"))
	if err != nil {
		b.Fatal(err)
	}
	kp.cmd = exec.Command("nsenter", "--net="+ns, c.KubeBin, "kube-proxy", "--config", cfg)
	kp.cmd.Stdout, kp.cmd.Stderr = logf, logf
	kp.started = time.Now()
	if err := kp.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() {
		_ = kp.cmd.Wait()
		logf.Close()
		<-apiDone
		close(kp.done)
	}()
	kp.log = logf.Name()
	b.Cleanup(func() {
		kp.stop()
		if b.Failed() {
			out, _ := os.ReadFile(logf.Name())
			b.Logf("kube-proxy %s log (tail):\n%s", mode, tailLines(string(out), 30))
		}
	})
	return kp
}

func (kp *kubeProxy) stop() {
	_ = kp.cmd.Process.Kill()
	kp.cancel()
	select {
	case <-kp.done:
	case <-time.After(30 * time.Second):
	}
}

func tailLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}
