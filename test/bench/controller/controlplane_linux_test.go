package controller

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/seine-cni/seine/core/agent/policy"
	"github.com/seine-cni/seine/core/agent/policywatch"
	"github.com/seine-cni/seine/test/lab/labtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	labtest.RemoveBinaries()
	os.Exit(code)
}

// benchAgents is the number of simulated agents, one per simulated node;
// fanoutRounds the number of changes measured (run with -benchtime 1x: the
// lab is brought up once per call of the benchmark function).
const (
	benchAgents  = 500
	fanoutRounds = 5
)

// simAgent is a watch-only agent: a policywatch.Watcher whose Syncer
// records when a condition on the state first holds.
type simAgent struct {
	node string
	mu   sync.Mutex
	want func(policy.State) bool
	seen chan time.Time
	last policy.State
}

func (a *simAgent) Sync(_ context.Context, s policy.State) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.last = s
	if a.want != nil && a.want(s) {
		a.want = nil
		a.seen <- time.Now()
	}
	return nil
}

// expect arms the agent: the next state for which want holds (possibly the
// current one) is reported on seen.
func (a *simAgent) expect(want func(policy.State) bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.seen = make(chan time.Time, 1)
	if want(a.last) {
		a.seen <- time.Now()
		return
	}
	a.want = want
}

func hasPolicy(name string) func(policy.State) bool {
	return func(s policy.State) bool {
		for _, np := range s.NetworkPolicies {
			if np.SourceRef != nil && np.SourceRef.Name == name {
				return true
			}
		}
		return false
	}
}

func hasAddressMember(pod string) func(policy.State) bool {
	return func(s policy.State) bool {
		for _, g := range s.AddressGroups {
			for _, m := range g.Members {
				if m.Pod.Name == pod {
					return true
				}
			}
		}
		return false
	}
}

// BenchmarkControlPlaneFanout measures, in a lab running seine-controller
// against a real kube-apiserver, how long a change takes to reach all of
// benchAgents watch-only agents (each its own HTTP connection to the
// controller, three watches with fieldSelector=nodeName), and the
// controller's RSS with them connected. Each of the benchAgents nodes has
// one "web" pod; the policies select every web pod, so every change spans
// every node.
func BenchmarkControlPlaneFanout(b *testing.B) {
	c, _ := labtest.Up(b, labtest.Options{Name: "h6bench", Nodes: 1, APIPort: 51453, EtcdPort: 51389})
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	admin, err := c.RESTConfig("admin")
	if err != nil {
		b.Fatal(err)
	}
	admin.QPS, admin.Burst = 1000, 2000
	cs := kubernetes.NewForConfigOrDie(admin)

	pid := c.ComponentPID("seine-controller")
	if pid == 0 {
		b.Fatal("seine-controller is not running")
	}
	nodes := make([]string, benchAgents)
	for i := range nodes {
		nodes[i] = fmt.Sprintf("sim-%03d", i)
	}
	start := time.Now()
	parallel(b, nodes, func(i int, n string) error {
		if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			return err
		}
		return createPod(ctx, cs, "web-"+n, n, fmt.Sprintf("10.%d.%d.1", 100+i/256, i%256), "bench-web")
	})
	if err := createPolicy(ctx, cs, "bench-allow-0"); err != nil {
		b.Fatal(err)
	}
	b.Logf("%d nodes with a web pod each and one policy created in %s", benchAgents, time.Since(start).Round(time.Millisecond))
	rssIdle := rssKiB(b, pid)

	// The agents talk to the controller directly with seine-agent's
	// identity; a custom Dial keeps client-go from sharing one transport
	// between them, so each has its own connection.
	agentCfg, err := c.RESTConfig("seine-agent")
	if err != nil {
		b.Fatal(err)
	}
	agentCfg.Host = c.ControllerURL()
	agents := make([]*simAgent, benchAgents)
	var wg sync.WaitGroup
	var relists atomic.Int64
	log := labtest.Logger(b)
	// client-go logs every watch cut by the final cancel through klog; for
	// 500 agents that is noise.
	klog.SetSlogLogger(slog.New(slog.DiscardHandler))
	start = time.Now()
	for i, n := range nodes {
		agents[i] = &simAgent{node: n}
		agents[i].expect(hasPolicy("bench-allow-0"))
		cfg := rest.CopyConfig(agentCfg)
		d := &net.Dialer{Timeout: 10 * time.Second}
		cfg.Dial = d.DialContext
		w, err := policywatch.New(cfg, n, agents[i], log, policywatch.Options{})
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.Run(ctx)
			relists.Add(w.Relists())
		}()
	}
	b.Cleanup(func() { cancel(); wg.Wait() })
	// Lists and watches are authorized by the kube-apiserver; the
	// controller leaves the node's field selector out of the review, so
	// the agents' identical requests share cached decisions.
	initial := waitAll(b, agents, start, 2*time.Minute)
	b.Logf("%d agents listed and synced the initial state in %s", benchAgents, initial.max.Round(time.Millisecond))
	rssConnected := rssKiB(b, pid)

	var newPolicy, newMember, medPolicy, medMember []time.Duration
	b.ResetTimer()
	for i := range fanoutRounds {
		// A new policy: every agent receives it (NetworkPolicy plus groups).
		name := fmt.Sprintf("bench-allow-%d", i+1)
		for _, a := range agents {
			a.expect(hasPolicy(name))
		}
		start := time.Now()
		if err := createPolicy(ctx, cs, name); err != nil {
			b.Fatal(err)
		}
		r := waitAll(b, agents, start, time.Minute)
		newPolicy, medPolicy = append(newPolicy, r.max), append(medPolicy, r.median)

		// A new peer pod: every agent receives an AddressGroup patch. The
		// clock starts when the pod has its IP (the status update).
		pod := fmt.Sprintf("cli-%d", i)
		for _, a := range agents {
			a.expect(hasAddressMember(pod))
		}
		p, err := cs.CoreV1().Pods("default").Create(ctx, podObject(pod, nodes[i%benchAgents], "bench-cli"), metav1.CreateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		if err := setPodIP(ctx, cs, p, fmt.Sprintf("10.99.%d.%d", i/256, i%256)); err != nil {
			b.Fatal(err)
		}
		r = waitAll(b, agents, start, time.Minute)
		newMember, medMember = append(newMember, r.max), append(medMember, r.median)
	}
	b.StopTimer()
	rssAfter := rssKiB(b, pid)
	rssHWM := hwmKiB(b, pid)
	b.ReportMetric(median(newPolicy).Seconds()*1000, "ms-policy-to-all")
	b.ReportMetric(median(newMember).Seconds()*1000, "ms-member-to-all")
	b.ReportMetric(float64(rssConnected)/1024, "MiB-controller-RSS")
	b.Logf("new policy: last of %d agents after %v (median agent %v)", benchAgents, rounded(newPolicy), rounded(medPolicy))
	b.Logf("new member: last of %d agents after %v (median agent %v)", benchAgents, rounded(newMember), rounded(medMember))
	b.Logf("controller RSS: %.1f MiB before agents, %.1f MiB with %d agents connected, %.1f MiB at the end, peak %.1f MiB",
		float64(rssIdle)/1024, float64(rssConnected)/1024, benchAgents, float64(rssAfter)/1024, float64(rssHWM)/1024)
	cancel()
	wg.Wait()
	b.Logf("agent sessions (initial lists included): %d for %d agents", relists.Load(), benchAgents)
}

type latency struct{ max, median time.Duration }

// waitAll waits until every agent has reported, and returns the latency of
// the last and of the median one.
func waitAll(b *testing.B, agents []*simAgent, start time.Time, timeout time.Duration) latency {
	b.Helper()
	deadline := time.After(timeout)
	ds := make([]time.Duration, 0, len(agents))
	for _, a := range agents {
		select {
		case t := <-a.seen:
			ds = append(ds, t.Sub(start))
		case <-deadline:
			b.Fatalf("%d of %d agents got the change within %s (first missing: %s)", len(ds), len(agents), timeout, a.node)
		}
	}
	return latency{max: slices.Max(ds), median: median(ds)}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func rounded(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

func rssKiB(b *testing.B, pid int) int64 { return procStatusKiB(b, pid, "VmRSS:") }
func hwmKiB(b *testing.B, pid int) int64 { return procStatusKiB(b, pid, "VmHWM:") }

func procStatusKiB(b *testing.B, pid int, field string) int64 {
	b.Helper()
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(l, field); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	b.Fatalf("no %s for pid %d", field, pid)
	return 0
}

// parallel runs f for every item on 16 workers.
func parallel(b *testing.B, items []string, f func(int, string) error) {
	b.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(items))
	next := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i, items[i]); err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := range items {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// podObject is a pod bound to a simulated node (no kubelet), tolerating
// the node's not-ready taints so nothing evicts it during the benchmark.
func podObject(name, node, app string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{
			NodeName: node, AutomountServiceAccountToken: new(bool),
			Containers:  []corev1.Container{{Name: "c", Image: "none"}},
			Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
		},
	}
}

func createPod(ctx context.Context, cs kubernetes.Interface, name, node, ip, app string) error {
	p, err := cs.CoreV1().Pods("default").Create(ctx, podObject(name, node, app), metav1.CreateOptions{})
	if err != nil {
		return err
	}
	return setPodIP(ctx, cs, p, ip)
}

func setPodIP(ctx context.Context, cs kubernetes.Interface, p *corev1.Pod, ip string) error {
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
	_, err := cs.CoreV1().Pods("default").UpdateStatus(ctx, p, metav1.UpdateOptions{})
	return err
}

// createPolicy allows ingress to every web pod from every cli pod.
func createPolicy(ctx context.Context, cs kubernetes.Interface, name string) error {
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "bench-web"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
				PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "bench-cli"}},
			}}}},
		},
	}
	_, err := cs.NetworkingV1().NetworkPolicies("default").Create(ctx, np, metav1.CreateOptions{})
	return err
}
