package netpol

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seine-cni/seine/test/lab"
	"github.com/seine-cni/seine/test/lab/probe"
)

// newPodCase: a pod created under a default-deny policy is isolated before
// its first packet (issue 12, item 1). Its node's agent learns the pod from
// its AppliedToGroup as soon as it is bound, before it has an IP, and
// isolates its OVS port in CNI ADD; the lab kubelet starts its listeners
// right after ADD, before it posts the pod's IP.
var newPodCase = labCase{
	name: "new-pod-isolated-from-first-packet", upstream: "(none: issue 12 item 1, a new pod under default-deny)",
	run: runNewPod,
}

const (
	// newPodProbeTimeout is short so each prober tries often: a connection
	// let through for a few tens of milliseconds must be seen.
	newPodProbeTimeout = 100 * time.Millisecond
	// newPodCandidates is how many addresses after the node's highest pod
	// address are probed: the pod's IP is not known before CNI ADD, and
	// the agent's IPAM hands out the next free one after its last.
	newPodCandidates = 6
	// newPodAfter is how long the probers go on once the pod is Running.
	newPodAfter = 2 * time.Second
)

func runNewPod(t *testing.T, s *suite) {
	xa := parsePodRef("x/a")
	node := s.node[xa]
	s.create(t, "x", ingressPolicy("deny-all-ingress", all()))
	closed := s.allow().set("*", "x/*", false)
	s.expect(t, "x denies all ingress", on(tcp80, closed))

	cands, err := s.nextPodIPs(node, newPodCandidates)
	if err != nil {
		t.Fatal(err)
	}
	// Sources on every node, none of them isolated for egress.
	var sources []podRef
	for _, p := range s.pods {
		if p.ns == "y" {
			sources = append(sources, p)
		}
	}
	ctx, stop := context.WithCancel(s.ctx)
	defer stop()
	var mu sync.Mutex
	answered := map[string][]string{} // candidate -> "source at time"
	probes := 0
	var wg sync.WaitGroup
	for _, from := range sources {
		for _, ip := range cands {
			wg.Add(1)
			go func() {
				defer wg.Done()
				addr := net.JoinHostPort(ip.String(), "80")
				for ctx.Err() == nil {
					reply, err := probe.Probe(ctx, s.netns[from], "tcp", addr, newPodProbeTimeout)
					mu.Lock()
					probes++
					if err == nil && reply == "d" {
						answered[ip.String()] = append(answered[ip.String()], from.String()+" at "+time.Now().Format("15:04:05.000"))
					}
					mu.Unlock()
					if err != nil && !errors.Is(err, probe.ErrTimeout) && !errors.Is(err, probe.ErrRefused) && !errors.Is(err, probe.ErrUnreachable) && ctx.Err() == nil {
						time.Sleep(10 * time.Millisecond) // do not spin on an unexpected error
					}
				}
			}()
		}
	}
	halt := func() {
		stop()
		wg.Wait()
	}
	defer halt()
	time.Sleep(300 * time.Millisecond) // the probers are running before the pod exists

	created := time.Now()
	pod := serverPod("d", node, s.sctpErr == nil)
	if _, err := s.cs.CoreV1().Pods("x").Create(s.ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod x/d: %v", err)
	}
	defer s.deletePod(t, "x", "d")
	var ip string
	waitFor(t, time.Minute, "x/d Running with an IP", func() (bool, string) {
		p, err := s.cs.CoreV1().Pods("x").Get(s.ctx, "d", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		ip = p.Status.PodIP
		return lab.PodReady(p) && ip != "", fmt.Sprintf("phase %s, IP %q", p.Status.Phase, ip)
	})
	running := time.Since(created).Round(time.Millisecond)
	time.Sleep(newPodAfter)
	halt()
	mu.Lock()
	got, n := answered[ip], probes
	mu.Unlock()
	t.Logf("x/d on %s got %s, Running %s after its creation; %d probes from %d sources to %v", node, ip, running, n, len(sources), cands)
	if !containsAddr(cands, ip) {
		t.Fatalf("x/d got %s, not one of the probed addresses %v: the case saw nothing", ip, cands)
	}
	if len(got) > 0 {
		t.Errorf("x/d answered %d connections under default-deny before its isolation: %v", len(got), got)
	}

	// Positive control: the same probes reach x/d once the policy is gone,
	// so the probers would have seen it answer.
	s.deletePolicy(t, "x", "deny-all-ingress")
	from := sources[0]
	waitFor(t, enforceTimeout, "x/d answering "+from.String()+" without the policy", func() (bool, string) {
		reply, err := probe.Probe(s.ctx, s.netns[from], "tcp", net.JoinHostPort(ip, "80"), probeTimeout)
		return err == nil && reply == "d", fmt.Sprintf("reply %q, err %v", reply, err)
	})
}

// nextPodIPs returns the n addresses after the highest address of a pod on
// node (the agent's IPAM allocates the next free address after its last).
func (s *suite) nextPodIPs(node string, n int) ([]netip.Addr, error) {
	pods, err := s.cs.CoreV1().Pods("").List(s.ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return nil, err
	}
	var last netip.Addr
	for _, p := range pods.Items {
		if p.Spec.HostNetwork {
			continue
		}
		if a, err := netip.ParseAddr(p.Status.PodIP); err == nil && (!last.IsValid() || last.Less(a)) {
			last = a
		}
	}
	if !last.IsValid() {
		return nil, fmt.Errorf("no pod with an IP on %s", node)
	}
	var out []netip.Addr
	for a := last.Next(); len(out) < n; a = a.Next() {
		out = append(out, a)
	}
	return out, nil
}

func containsAddr(as []netip.Addr, s string) bool {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return false
	}
	for _, x := range as {
		if x == a {
			return true
		}
	}
	return false
}

// deletePod deletes a pod the case created and waits until it is gone, so
// the next case sees the nine pods only.
func (s *suite) deletePod(t *testing.T, ns, name string) {
	t.Helper()
	if err := s.cs.CoreV1().Pods(ns).Delete(s.ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("delete pod %s/%s: %v", ns, name, err)
		return
	}
	waitFor(t, time.Minute, "pod "+ns+"/"+name+" gone", func() (bool, string) {
		_, err := s.cs.CoreV1().Pods(ns).Get(s.ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
}
