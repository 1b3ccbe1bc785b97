package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seine-cni/seine/test/lab"
)

// TestRestarts: restarting seine-agent on both ends of a cross-node ping
// stream loses no packet and replaces the flows under a new round;
// restarting ovs-vswitchd restores connectivity; a pod created while its
// node's agent is down comes up once the agent is back.
func TestRestarts(t *testing.T) {
	e := upLab(t, "encap", "geneve")
	pods := e.deploy("web", 3)
	checkSpread(t, pods)
	byNode := map[string]corev1.Pod{}
	for _, p := range pods {
		byNode[p.Spec.NodeName] = p
	}
	src, dst := byNode["node-1"], byNode["node-2"]

	t.Run("agent restart under Service traffic", func(t *testing.T) {
		defer func(parent *testing.T) { e.t = parent }(e.t)
		e.t = t
		e.serveWho(pods)
		svc := e.service(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "svc-restart"},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: svcPorts(false)}}, len(pods))
		e.checkAgentRestartUnderServiceTraffic(src, svc.Spec.ClusterIP, "node-1", "node-2", "node-3")
	})

	t.Run("agent restart under ping", func(t *testing.T) {
		before := e.rounds(t, "node-1")
		stream := e.startPingStream(t, e.podNS(&src), netip.MustParseAddr(dst.Status.PodIP))
		for _, node := range []string{"node-1", "node-2"} {
			e.stopAgent(node)
			e.startAgent(node)
		}
		sent, lost, maxRTT := stream.stop()
		t.Logf("%d pings across the restarts of both agents, %d lost, slowest reply %s", sent, lost, maxRTT.Round(time.Millisecond))
		if sent < 10 {
			t.Errorf("only %d pings sent", sent)
		}
		if lost > 0 {
			t.Errorf("%d of %d pings lost while the agents restarted", lost, sent)
		}
		for _, p := range pods {
			if err := lab.Check(e.ctx, e.c, "default/"+p.Name); err != nil {
				t.Errorf("CNI CHECK of %s after the restarts: %v", p.Name, err)
			}
		}
		after := e.rounds(t, "node-1")
		if len(after) != 1 || slices.Equal(before, after) {
			t.Errorf("flow rounds on node-1: %v before the restart, %v after; want one new round", before, after)
		}
	})

	t.Run("ovs-vswitchd restart", func(t *testing.T) {
		d := e.ovs("node-1")
		start := time.Now()
		if err := d.RestartVswitchd(e.ctx); err != nil {
			t.Fatal(err)
		}
		restarted := time.Now()
		ns := e.podNS(&src)
		e.waitFor("pod traffic across nodes after the vswitchd restart", 30*time.Second, func() error {
			return pingWithin(e.ctx, ns, netip.MustParseAddr(dst.Status.PodIP), 200*time.Millisecond)
		})
		t.Logf("connectivity back %s after ovs-vswitchd restarted (%s after the restart began)",
			time.Since(restarted).Round(10*time.Millisecond), time.Since(start).Round(10*time.Millisecond))
		for _, p := range pods {
			if err := pingOnce(e.ctx, e.podNS(&src), netip.MustParseAddr(p.Status.PodIP)); err != nil && p.Name != src.Name {
				t.Errorf("%s -> %s after the vswitchd restart: %v", src.Name, p.Name, err)
			}
		}
	})

	// OVS's userspace tunnelling drops a packet whose next hop is not in
	// its own neighbour cache (while it ARPs). The agent fills that cache
	// from the host's before it is ready, so the first packet gets through
	// even though the host's entries are still valid and the host sends no
	// ARP of its own.
	t.Run("tunnel neighbours filled on agent start", func(t *testing.T) {
		from := byNode["node-3"]
		e.stopAgent("node-3")
		if out, err := e.ovs("node-3").Appctl(e.ctx, "ovs-vswitchd", "tnl/neigh/flush"); err != nil {
			t.Fatalf("tnl/neigh/flush: %v %s", err, out)
		}
		e.startAgent("node-3")
		show, err := e.ovs("node-3").Appctl(e.ctx, "ovs-vswitchd", "tnl/neigh/show")
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"node-1", "node-2"} {
			if ip := e.nodeIP(n); !strings.Contains(show, ip+" ") {
				t.Errorf("node-3's tunnel neighbour cache lacks %s (%s) once the agent is ready:\n%s", n, ip, show)
			}
		}
		for _, n := range []string{"node-1", "node-2"} {
			to := byNode[n]
			if err := pingOnce(e.ctx, e.podNS(&from), netip.MustParseAddr(to.Status.PodIP)); err != nil {
				t.Errorf("first echo %s -> %s (%s) after the agent restart: %v", from.Name, to.Name, n, err)
			}
		}
	})

	t.Run("pod created while the agent is down", func(t *testing.T) {
		e.stopAgent("node-3")
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "late", Namespace: "default"},
			Spec: corev1.PodSpec{NodeName: "node-3", Containers: []corev1.Container{{
				Name: "server", Image: "lab/probe-server",
				Ports: []corev1.ContainerPort{{ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
			}}},
		}
		if _, err := e.cs.CoreV1().Pods("default").Create(e.ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// The kubelet's ADD fails meanwhile (the plugin answers "try again
		// later"), which it reports as an event on the pod.
		var failure string
		e.waitFor("the kubelet to report the failed sandbox", time.Minute, func() error {
			evs, err := e.cs.CoreV1().Events("default").List(e.ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=late"})
			if err != nil {
				return err
			}
			for _, ev := range evs.Items {
				if ev.Reason == "FailedCreatePodSandBox" {
					failure = ev.Message
					return nil
				}
			}
			return fmt.Errorf("%d events, none FailedCreatePodSandBox", len(evs.Items))
		})
		t.Logf("while the agent was down: %s", failure)
		if !strings.Contains(failure, "seine-agent") {
			t.Errorf("the ADD failure does not name seine-agent: %s", failure)
		}
		if p, err := e.cs.CoreV1().Pods("default").Get(e.ctx, "late", metav1.GetOptions{}); err == nil && lab.PodReady(p) {
			t.Fatal("pod became ready while its node's agent was down")
		}
		e.startAgent("node-3")
		var late *corev1.Pod
		e.waitFor("the late pod to become ready", 2*time.Minute, func() error {
			p, err := e.cs.CoreV1().Pods("default").Get(e.ctx, "late", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if !lab.PodReady(p) || p.Status.PodIP == "" {
				return fmt.Errorf("pod phase %s, ready %v", p.Status.Phase, lab.PodReady(p))
			}
			late = p
			return nil
		})
		if err := pingOnce(e.ctx, e.podNS(&src), netip.MustParseAddr(late.Status.PodIP)); err != nil {
			t.Errorf("%s -> late pod: %v", src.Name, err)
		}
	})
}

var cookieRE = regexp.MustCompile(`cookie=0x([0-9a-f]+)`)

// rounds lists the flow rounds (the cookie's top 16 bits) on a node's bridge.
func (e *env) rounds(t *testing.T, node string) []uint64 {
	t.Helper()
	out, err := e.ovs(node).Ofctl(e.ctx, "-O", "OpenFlow15", "dump-flows", "br-int")
	if err != nil {
		t.Fatal(err)
	}
	var rounds []uint64
	for _, m := range cookieRE.FindAllStringSubmatch(out, -1) {
		var c uint64
		fmt.Sscanf(m[1], "%x", &c)
		if r := c >> 48; !slices.Contains(rounds, r) {
			rounds = append(rounds, r)
		}
	}
	slices.Sort(rounds)
	return rounds
}

// pingStream sends an echo request to dst every 10 ms (100 pings/s) from one
// goroutine and matches the replies in another, so a slow reply does not
// slow the pace. A request is lost when its reply has not come a second
// after it: it expires only once the socket was found empty more than a
// second after the request, so a receiver that did not run for a while (a
// busy machine) still reads the replies that came and loses nothing.
type pingStream struct {
	t          *testing.T
	p          *pinger
	dst        netip.Addr
	cancel     context.CancelFunc
	sending    sync.WaitGroup
	recv       chan struct{} // closed when the receiver is done
	senderDone chan struct{} // closed when the sender has stopped

	mu      sync.Mutex
	pending map[int]time.Time // seq -> when sent, until its reply comes
	sent    int
	lost    int
	maxRTT  time.Duration
}

const pingTimeout = time.Second

func (e *env) startPingStream(t *testing.T, netns string, dst netip.Addr) *pingStream {
	t.Helper()
	p, err := newPinger(netns)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	s := &pingStream{t: t, p: p, dst: dst, cancel: cancel, recv: make(chan struct{}), senderDone: make(chan struct{}), pending: map[int]time.Time{}}
	s.sending.Add(1)
	go func() {
		defer s.sending.Done()
		const every = 10 * time.Millisecond // the stream's pace
		tick := time.NewTicker(every)
		defer tick.Stop()
		start := time.Now()
		for seq := 1; ; {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			// A ticker drops ticks when this goroutine is late (2 busy
			// cores): catch up so the stream averages 100 pings/s.
			for ; seq <= int(time.Since(start)/every); seq++ {
				s.send(seq & 0xffff)
			}
		}
	}()
	go s.receive()
	return s
}

func (s *pingStream) send(seq int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent++
	at, err := s.p.send(s.dst, seq, 56)
	if err != nil {
		s.lost++
		s.t.Logf("ping %d: %v", seq, err)
		return
	}
	s.pending[seq] = at
}

// receive matches replies until the sender has stopped and every request
// has had its reply or its second.
func (s *pingStream) receive() {
	defer close(s.recv)
	for {
		r, ok, empty, err := s.p.next(time.Now().Add(50 * time.Millisecond))
		s.mu.Lock()
		if err != nil {
			s.t.Logf("ping stream: read: %v", err)
		}
		if ok {
			if body, reply := s.p.echoReply(r, s.dst); reply {
				if at, ok := s.pending[body.Seq]; ok {
					delete(s.pending, body.Seq)
					s.maxRTT = max(s.maxRTT, r.at.Sub(at))
				}
			}
		} else {
			// Whatever arrives from now on arrived after empty.
			for seq, at := range s.pending {
				if empty.Sub(at) > pingTimeout {
					delete(s.pending, seq)
					s.lost++
					s.t.Logf("ping %d: no echo reply from %s within %s", seq, s.dst, pingTimeout)
				}
			}
		}
		done := len(s.pending) == 0
		s.mu.Unlock()
		if done && s.stopped() {
			return
		}
	}
}

func (s *pingStream) stopped() bool {
	select {
	case <-s.senderDone:
		return true
	default:
		return false
	}
}

// stop ends the stream once every request has had its reply or its
// second, and returns the counts and the slowest reply (by the kernel's
// receive timestamps where it stamped them, else by when they were read).
func (s *pingStream) stop() (sent, lost int, maxRTT time.Duration) {
	s.cancel()
	s.sending.Wait()
	close(s.senderDone)
	<-s.recv
	s.p.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent, s.lost, s.maxRTT
}
