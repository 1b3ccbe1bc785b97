package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/seine-cni/seine/test/lab/netns"
	"github.com/seine-cni/seine/test/lab/probe"
)

// checkServiceLifecycle: ClientIP affinity holds for its timeout and is
// released after it; a Service scaled to zero endpoints refuses at once;
// an endpoint removed under traffic stops getting new connections within a
// second, and a UDP flow to it moves to another endpoint.
func (e *env) checkServiceLifecycle(pods []corev1.Pod) {
	e.t.Helper()
	sel := map[string]string{"app": "web"}
	client := e.podNS(&pods[0])

	// Affinity of 3 s.
	sticky := e.service(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "svc-sticky"},
		Spec: corev1.ServiceSpec{Selector: sel, Ports: svcPorts(false), SessionAffinity: corev1.ServiceAffinityClientIP,
			SessionAffinityConfig: &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To(int32(3))}}}}, len(pods))
	addr := sticky.Spec.ClusterIP + ":80"
	e.waitAnswers(client, addr)
	first, err := probe.Probe(e.ctx, client, "tcp", addr, 2*time.Second)
	if err != nil {
		e.t.Fatalf("affinity: %v", err)
	}
	// The learned flow takes effect once ovs-vswitchd revalidated its
	// cached datapath flows (milliseconds).
	time.Sleep(200 * time.Millisecond)
	for i := 0; i < 10; i++ {
		if got, err := probe.Probe(e.ctx, client, "tcp", addr, 2*time.Second); err != nil || got != first {
			e.t.Errorf("affinity: connection %d reached %q (%v), the first %q", i, got, err, first)
		}
		time.Sleep(100 * time.Millisecond)
	}
	seen := map[string]bool{first: true}
	for i := 0; i < 8 && len(seen) < 2; i++ {
		time.Sleep(3500 * time.Millisecond) // past the timeout: released
		got, err := probe.Probe(e.ctx, client, "tcp", addr, 2*time.Second)
		if err != nil {
			e.t.Errorf("affinity after the timeout: %v", err)
		}
		seen[got] = true
	}
	if len(seen) < 2 {
		e.t.Errorf("affinity never released after its timeout: always %v", seen)
	}

	// A Deployment of two pods behind a Service: one pod goes.
	churn := e.deploy("churn", 2)
	churnSvc := e.service(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "svc-churn"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "churn"}, Ports: svcPorts(false)}}, len(churn))
	caddr := churnSvc.Spec.ClusterIP
	e.waitAnswers(client, caddr+":80") // its UDP port is installed in the same bundle
	// A UDP flow with a fixed source port, answered by one of the two.
	udp, err := udpFlow(client, caddr+":81")
	if err != nil {
		e.t.Fatal(err)
	}
	defer udp.close()
	firstUDP, err := udp.ask()
	if err != nil {
		e.t.Fatalf("UDP flow: %v", err)
	}
	victim := churn[0]
	for _, p := range churn {
		if p.Name == firstUDP {
			victim = p
		}
	}
	deleted := time.Now()
	if err := e.cs.CoreV1().Pods("default").Delete(e.ctx, victim.Name, metav1.DeleteOptions{}); err != nil {
		e.t.Fatal(err)
	}
	lastVictim := time.Time{}
	for time.Since(deleted) < 4*time.Second {
		got, err := probe.Probe(e.ctx, client, "tcp", caddr+":80", time.Second)
		if err == nil && got == victim.Name {
			lastVictim = time.Now()
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !lastVictim.IsZero() && lastVictim.Sub(deleted) > time.Second {
		e.t.Errorf("the removed endpoint %s got new connections %s after its pod was deleted", victim.Name, lastVictim.Sub(deleted).Round(time.Millisecond))
	}
	var moved string
	for time.Since(deleted) < 10*time.Second {
		if got, err := udp.ask(); err == nil && got != victim.Name {
			moved = got
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if moved == "" {
		e.t.Errorf("the UDP flow stayed with the removed endpoint %s", victim.Name)
	} else {
		e.t.Logf("UDP flow moved from %s to %s %s after the deletion", victim.Name, moved, time.Since(deleted).Round(time.Millisecond))
	}

	// Scaled to zero: refused, not a timeout.
	if _, err := e.cs.AppsV1().Deployments("default").UpdateScale(e.ctx, "churn", &autoscalingScale0, metav1.UpdateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := probe.Probe(e.ctx, client, "tcp", caddr+":80", 2*time.Second)
		if errors.Is(err, probe.ErrRefused) {
			break
		}
		if time.Now().After(deadline) {
			e.t.Errorf("Service scaled to zero: %v, want refused", err)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitAnswers waits until a TCP connection from ns to the Service at addr
// is answered: the API server lists a Service's endpoints before the
// client's agent has installed them, and until then the Service rejects
// (it has no endpoints there yet) or is not known at all.
func (e *env) waitAnswers(ns, addr string) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := probe.Probe(e.ctx, ns, "tcp", addr, 2*time.Second)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s never answered: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// udpConn is a UDP "flow": one socket with a fixed source port.
type udpConn struct{ c *net.UDPConn }

func udpFlow(ns, addr string) (*udpConn, error) {
	var c *net.UDPConn
	err := netns.Do(ns, func() error {
		raddr, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return err
		}
		c, err = net.DialUDP("udp", nil, raddr)
		return err
	})
	return &udpConn{c}, err
}

func (u *udpConn) ask() (string, error) {
	buf := make([]byte, 512)
	for try := 0; try < 3; try++ {
		if _, err := u.c.Write([]byte("probe\n")); err != nil {
			return "", err
		}
		_ = u.c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := u.c.Read(buf)
		if err == nil {
			return string(buf[:n]), nil
		}
	}
	return "", errors.New("no answer")
}

func (u *udpConn) close() { u.c.Close() }

// checkLargeServices: Services of 1,000 and 5,000 endpoints (the pods'
// addresses on many ports, one EndpointSlice per port, as a selectorless
// Service may have) spread 3,000 connections over their endpoints.
func (e *env) checkLargeServices(pods []corev1.Pod) {
	e.t.Helper()
	for _, n := range []int{1000, 5000} {
		ports := (n + len(pods) - 1) / len(pods)
		base := 20000
		var stops []func()
		for _, p := range pods {
			stops = append(stops, e.listenPorts(&p, base, ports))
		}
		name := "svc-large-" + strconv.Itoa(n)
		s := e.service(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "tcp", Port: 80, Protocol: corev1.ProtocolTCP}}}}, 0)
		t0 := time.Now()
		total := 0
		for i := 0; i < ports && total < n; i++ {
			pn, port, proto := "tcp", int32(base+i), corev1.ProtocolTCP
			sl := &discoveryv1.EndpointSlice{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", name, i), Labels: map[string]string{
					discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: "seine-e2e"}},
				AddressType: discoveryv1.AddressTypeIPv4,
				Ports:       []discoveryv1.EndpointPort{{Name: &pn, Port: &port, Protocol: &proto}},
			}
			for _, p := range pods {
				if total == n {
					break
				}
				sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{p.Status.PodIP}})
				total++
			}
			if _, err := e.cs.DiscoveryV1().EndpointSlices("default").Create(e.ctx, sl, metav1.CreateOptions{}); err != nil {
				e.t.Fatal(err)
			}
		}
		e.t.Logf("%d endpoints in %d EndpointSlices created in %s", total, ports, time.Since(t0).Round(time.Millisecond))
		// Until every endpoint is programmed the highest ports are not
		// reached yet: 3,000 connections from the client, counted per
		// endpoint once the Service answers.
		client := e.podNS(&pods[0])
		deadline := time.Now().Add(2 * time.Minute)
		for {
			if _, err := probe.Probe(e.ctx, client, "tcp", s.Spec.ClusterIP+":80", 2*time.Second); err == nil {
				break
			}
			if time.Now().After(deadline) {
				e.t.Fatalf("%d endpoints: the Service never answered", n)
			}
			time.Sleep(500 * time.Millisecond)
		}
		hits := map[string]int{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 3000/8; i++ {
					got, err := probe.Probe(e.ctx, client, "tcp", s.Spec.ClusterIP+":80", 2*time.Second)
					if err == nil {
						mu.Lock()
						hits[got]++
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		// 3,000 connections over n equally likely endpoints reach
		// n(1-e^(-3000/n)) of them on average: 950 of 1,000, 2,256 of 5,000.
		want := map[int]int{1000: 900, 5000: 2000}[n]
		maxHits := 0
		for _, h := range hits {
			maxHits = max(maxHits, h)
		}
		e.t.Logf("%d endpoints: 3,000 connections reached %d distinct endpoints (at most %d each)", n, len(hits), maxHits)
		if len(hits) < want {
			e.t.Errorf("%d endpoints: 3,000 connections reached only %d distinct endpoints, want at least %d", n, len(hits), want)
		}
		for _, stop := range stops {
			stop()
		}
		if err := e.cs.DiscoveryV1().EndpointSlices("default").DeleteCollection(e.ctx, metav1.DeleteOptions{},
			metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + name}); err != nil {
			e.t.Errorf("delete slices: %v", err)
		}
	}
}

// listenPorts answers "<pod>:<port>" on TCP ports base..base+n-1 in the
// pod's namespace.
func (e *env) listenPorts(p *corev1.Pod, base, n int) func() {
	e.t.Helper()
	var lns []net.Listener
	if err := netns.Do(e.podNS(p), func() error {
		for i := 0; i < n; i++ {
			ln, err := net.Listen("tcp", ":"+strconv.Itoa(base+i))
			if err != nil {
				return err
			}
			lns = append(lns, ln)
		}
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
	for _, ln := range lns {
		reply := []byte(p.Name + ":" + strings.TrimPrefix(ln.Addr().String(), "[::]:") + "\n")
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Write(reply)
				c.Close()
			}
		}()
	}
	return func() {
		for _, ln := range lns {
			ln.Close()
		}
	}
}

// checkAgentRestartUnderServiceTraffic: a TCP connection through a
// ClusterIP and a UDP flow through it keep working while the agents of
// both ends restart.
func (e *env) checkAgentRestartUnderServiceTraffic(client corev1.Pod, svcIP string, nodes ...string) {
	e.t.Helper()
	// The Service's endpoints are in the API (e.service) but the client's
	// agent may not have programmed them yet: until then the Service
	// rejects (connection refused, as one without endpoints must; seen
	// once, 2026-12-07 16:02). The restart is this check's subject, not
	// how fast a new Service is served. Its ports are installed together.
	e.waitAnswers(e.podNS(&client), svcIP+":80")
	var conn net.Conn
	if err := netns.Do(e.podNS(&client), func() error {
		var err error
		conn, err = net.DialTimeout("tcp", svcIP+":90", 3*time.Second)
		return err
	}); err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close()
	rd := bufio.NewReader(conn)
	ctx, cancel := context.WithCancel(e.ctx)
	var sent, lost int
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			sent++
			_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := fmt.Fprintln(conn, "ping"); err != nil {
				lost++
				return
			}
			if _, err := rd.ReadString('\n'); err != nil {
				lost++
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	for _, n := range nodes {
		e.stopAgent(n)
		e.startAgent(n)
	}
	time.Sleep(time.Second)
	cancel()
	<-done
	e.t.Logf("a TCP connection through the ClusterIP: %d exchanges across the restarts of %v, %d failed", sent, nodes, lost)
	if lost > 0 || sent < 10 {
		e.t.Errorf("the connection through the ClusterIP broke during the agent restarts (%d of %d exchanges failed)", lost, sent)
	}
}

var autoscalingScale0 = autoscalingv1.Scale{ObjectMeta: metav1.ObjectMeta{Name: "churn", Namespace: "default"}}
