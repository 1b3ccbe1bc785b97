package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/seine-cni/seine/test/lab/netns"
	"github.com/seine-cni/seine/test/lab/probe"
)

// The Service matrix runs on the labs of TestConnectivity (their pods are
// already up): Services of every type, from pods on every node, from the
// nodes themselves and from the external host, through Seine's proxy.

// Addresses of the matrix's Services outside the service CIDR.
const (
	svcLBIP       = "192.0.2.10"
	svcExternalIP = "192.0.2.20"
)

// whoPort is the port of the test's own servers in the pods: they answer
// every line with "<pod> saw <client IP>", so a test sees the source
// address an endpoint gets.
const whoPort = 9090

// serveWho starts the "who" server in every pod.
func (e *env) serveWho(pods []corev1.Pod) {
	e.t.Helper()
	for _, p := range pods {
		ln, err := probe.ServeWho(e.podNS(&p), p.Name, whoPort)
		if err != nil {
			e.t.Fatal(err)
		}
		e.t.Cleanup(func() { ln.Close() })
	}
}

// who asks the who server behind addr from netns ns (one line) and
// returns the pod that answered and the client address it saw.
func who(ctx context.Context, ns, addr string) (pod, saw string, err error) {
	err = netns.Do(ns, func() error {
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := fmt.Fprintln(c, "who"); err != nil {
			return err
		}
		l, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err
		}
		f := strings.Fields(l)
		if len(f) != 3 {
			return fmt.Errorf("answer %q", l)
		}
		pod, saw = f[0], f[2]
		return nil
	})
	return pod, saw, err
}

// service creates a Service over the web pods (selector app=<app>) and
// waits until its EndpointSlice lists want endpoints.
func (e *env) service(s *corev1.Service, want int) *corev1.Service {
	e.t.Helper()
	s.Namespace = "default"
	got, err := e.cs.CoreV1().Services("default").Create(e.ctx, s, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		_ = e.cs.CoreV1().Services("default").Delete(context.Background(), s.Name, metav1.DeleteOptions{})
	})
	deadline := time.Now().Add(time.Minute)
	for {
		slices, err := e.cs.DiscoveryV1().EndpointSlices("default").List(e.ctx,
			metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + s.Name})
		n := 0
		if err == nil {
			for _, sl := range slices.Items {
				n += len(sl.Endpoints)
			}
		}
		if n == want {
			return got
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("service %s: %d endpoints, want %d", s.Name, n, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func svcPorts(nodePorts bool) []corev1.ServicePort {
	ps := []corev1.ServicePort{
		{Name: "tcp", Port: 80, TargetPort: intstr.FromString("tcp"), Protocol: corev1.ProtocolTCP},
		{Name: "udp", Port: 81, TargetPort: intstr.FromString("udp"), Protocol: corev1.ProtocolUDP},
		{Name: "who", Port: 90, TargetPort: intstr.FromInt32(whoPort), Protocol: corev1.ProtocolTCP},
	}
	if !nodePorts {
		return ps
	}
	return ps
}

// gatewayOf is the gateway IP of a pod's node: the first address of its
// /24 pod CIDR (the lab's node CIDR size).
func gatewayOf(podIP string) string {
	a := netip.MustParseAddr(podIP).As4()
	a[3] = 1
	return netip.AddrFrom4(a).String()
}

// checkServices is the Service matrix on a lab whose "web" pods run.
func (e *env) checkServices(pods []corev1.Pod, app string) {
	e.t.Helper()
	start := time.Now()
	e.serveWho(pods)
	names := map[string]string{} // pod -> node
	for _, p := range pods {
		names[p.Name] = p.Spec.NodeName
	}
	sel := map[string]string{"app": app}
	// The Service without endpoints comes first: once a node's proxy
	// answers for the ones made after it (waited for below), it has it too
	// (one watch of Services, in order).
	empty := e.service(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "svc-empty"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "nobody"}, Ports: svcPorts(false)}}, 0)
	cluster := e.service(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "svc-cluster"},
		Spec: corev1.ServiceSpec{Selector: sel, Ports: svcPorts(false)}}, len(pods))
	np := e.service(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "svc-nodeport"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: sel, Ports: svcPorts(true),
			ExternalIPs: []string{svcExternalIP}}}, len(pods))
	local := e.service(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "svc-local"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: sel, Ports: svcPorts(true),
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal}}, len(pods))
	local.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: svcLBIP}}
	if _, err := e.cs.CoreV1().Services("default").UpdateStatus(e.ctx, local, metav1.UpdateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	nodePort := func(s *corev1.Service, name string) string {
		for _, p := range s.Spec.Ports {
			if p.Name == name {
				return strconv.Itoa(int(p.NodePort))
			}
		}
		e.t.Fatalf("%s has no port %s", s.Name, name)
		return ""
	}
	var nodes []string
	for _, n := range e.c.NodeList() {
		nodes = append(nodes, n.Name)
	}
	ext := e.c.NetNSPath("ext")
	// The external host reaches the load-balancer and external IPs
	// through node-1, as a router (or MetalLB) would send them.
	for _, ip := range []string{svcLBIP, svcExternalIP} {
		if out, err := inNS(e.ctx, ext, "ip", "route", "replace", ip+"/32", "via", e.nodeIP("node-1")); err != nil {
			e.t.Fatalf("route %s: %v\n%s", ip, err, out)
		}
	}

	type source struct{ name, ns, ip string }
	var sources []source
	for _, p := range pods {
		sources = append(sources, source{p.Name + "@" + p.Spec.NodeName, e.podNS(&p), p.Status.PodIP})
	}
	for _, n := range nodes {
		sources = append(sources, source{"host " + n, e.c.NetNSPath(n), ""})
	}
	fails := 0
	fail := func(format string, args ...any) {
		e.t.Helper()
		fails++
		if fails <= 20 {
			e.t.Errorf(format, args...)
		}
	}
	isPod := func(reply string) bool { _, ok := names[strings.TrimSpace(reply)]; return ok }
	// probeOK probes with a retry: the first packet to a new peer may be
	// lost while ovs-vswitchd resolves its next hop.
	probeOK := func(ns, proto, addr string) (string, error) {
		var reply string
		var err error
		for try := 0; try < 2; try++ {
			if reply, err = probe.Probe(e.ctx, ns, proto, addr, 2*time.Second); err == nil {
				return reply, nil
			}
		}
		return reply, err
	}
	checkTCPUDP := func(src source, what, ip, tcpPort, udpPort string) {
		e.t.Helper()
		for _, pp := range []struct{ proto, port string }{{"tcp", tcpPort}, {"udp", udpPort}} {
			reply, err := probeOK(src.ns, pp.proto, ip+":"+pp.port)
			if err != nil || !isPod(reply) {
				fail("%s -> %s %s %s:%s: %q, %v", src.name, what, pp.proto, ip, pp.port, reply, err)
			}
		}
	}

	// Every node's proxy has the Services before the matrix starts: the
	// API listing their endpoints does not mean a node programmed them
	// (kube-proxy syncs at most once a second), and a Service a node does
	// not have yet may be refused at once, like one without endpoints.
	for _, n := range nodes {
		for _, s := range []*corev1.Service{cluster, np, local} {
			e.waitAnswers(e.c.NetNSPath(n), s.Spec.ClusterIP+":80")
		}
	}
	// ClusterIP, from every pod and every node.
	for _, src := range sources {
		checkTCPUDP(src, "ClusterIP", cluster.Spec.ClusterIP, "80", "81")
	}
	// NodePort on every node's IP, from pods, nodes and the external host.
	for _, n := range nodes {
		for _, src := range append(sources, source{"ext", ext, e.c.ExternalIP()}) {
			checkTCPUDP(src, "NodePort", e.nodeIP(n), nodePort(np, "tcp"), nodePort(np, "udp"))
		}
	}
	// External IP and load-balancer IP from the external host and from pods.
	for _, src := range append(sources[:len(pods)], source{"ext", ext, e.c.ExternalIP()}) {
		checkTCPUDP(src, "external IP", svcExternalIP, "80", "81")
		checkTCPUDP(src, "load-balancer IP", svcLBIP, "80", "81")
	}
	// ClusterIP and node ports keep the client's address for pods;
	// externalTrafficPolicy Local keeps the external host's and answers
	// only from the node it reached.
	for i, src := range sources[:len(pods)] {
		pod, saw, err := who(e.ctx, src.ns, cluster.Spec.ClusterIP+":90")
		want := src.ip
		if pod == pods[i].Name {
			// A pod reaching itself (hairpin) is SNATed to its node's
			// gateway: a pod drops packets from its own address.
			want = gatewayOf(pods[i].Status.PodIP)
		}
		if err != nil || saw != want {
			fail("%s -> ClusterIP who: %s saw %q, %v; want %s", src.name, pod, saw, err, want)
		}
	}
	for _, n := range nodes {
		for i := 0; i < 3; i++ {
			pod, saw, err := who(e.ctx, ext, e.nodeIP(n)+":"+nodePort(local, "who"))
			if err != nil || saw != e.c.ExternalIP() || names[pod] != n {
				fail("ext -> %s externalTrafficPolicy Local: %s (on %s) saw %q, %v; want a pod on %s seeing %s",
					n, pod, names[pod], saw, err, n, e.c.ExternalIP())
			}
		}
	}
	if pod, saw, err := who(e.ctx, ext, svcLBIP+":90"); err != nil || saw != e.c.ExternalIP() || names[pod] != "node-1" {
		fail("ext -> LB IP externalTrafficPolicy Local: %s (on %s) saw %q, %v", pod, names[pod], saw, err)
	}
	// No endpoints: refused at once (TCP RST, ICMP unreachable), never a
	// timeout.
	for _, src := range []source{sources[0], sources[len(sources)-1]} {
		for _, pp := range []struct{ proto, port string }{{"tcp", "80"}, {"udp", "81"}} {
			t0 := time.Now()
			_, err := probe.Probe(e.ctx, src.ns, pp.proto, empty.Spec.ClusterIP+":"+pp.port, 3*time.Second)
			// kube-proxy rejects a host's own datagram in the OUTPUT
			// chain: the send itself fails with EPERM (netfilter's
			// verdict on a local packet), the refusal a host client
			// gets from kube-proxy.
			hostSendRefused := e.c.KubeProxy != "" && src.ip == "" && pp.proto == "udp" && errors.Is(err, unix.EPERM)
			if !errors.Is(err, probe.ErrRefused) && !hostSendRefused {
				fail("%s -> Service without endpoints %s: %v after %s, want refused", src.name, pp.proto, err, time.Since(t0).Round(time.Millisecond))
			}
		}
	}
	e.t.Logf("service matrix: %d sources, %d nodes, %d failures, %s", len(sources), len(nodes), fails, time.Since(start).Round(time.Millisecond))
}
