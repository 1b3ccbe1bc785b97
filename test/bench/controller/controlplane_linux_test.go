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
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/seine-cni/seine/core/agent/policy"
	"github.com/seine-cni/seine/core/agent/policywatch"
	"github.com/seine-cni/seine/test/bench/benchutil"
	"github.com/seine-cni/seine/test/lab/labtest"
)

// afterTests deletes the binaries the lab was built from.
func afterTests() { labtest.RemoveBinaries() }

// fanoutAgents is the number of simulated agents, one per simulated node,
// and of the baseline's watchers; fanoutShortAgents replaces it under
// -short. Each side of the comparison is measured in fanoutRounds rounds
// (run with -benchtime 1x: the lab is brought up once per call of the
// benchmark function).
const (
	fanoutAgents      = 500
	fanoutShortAgents = 20
	fanoutRounds      = 5
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
// fanoutAgents watch-only agents (each its own HTTP connection to the
// controller, three watches with fieldSelector=nodeName), against a
// baseline in the same run: as many plain watchers of the kube-apiserver
// itself (each its own connection, one watch of a namespace's ConfigMaps)
// receiving a new ConfigMap. Each of the simulated nodes has one "web" pod;
// the policies select every web pod, so every change spans every node.
// The rounds rotate: a new policy, a new peer pod (an AddressGroup patch),
// a new ConfigMap. The controller's RSS with the agents connected is
// reported as an absolute number, next to its RSS before they connected.
func BenchmarkControlPlaneFanout(b *testing.B) {
	agentCount := fanoutAgents
	if testing.Short() {
		agentCount = fanoutShortAgents
	}
	c, _ := labtest.Up(b, labtest.Options{Name: "h6bench", Nodes: 1, APIPort: 20453, EtcdPort: 20389})
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
	nodes := make([]string, agentCount)
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
	b.Logf("%d nodes with a web pod each and one policy created in %s", agentCount, time.Since(start).Round(time.Millisecond))
	rssIdle := rssKiB(b, pid)

	// The agents talk to the controller directly with seine-agent's
	// identity; a custom Dial keeps client-go from sharing one transport
	// between them, so each has its own connection.
	agentCfg, err := c.RESTConfig("seine-agent")
	if err != nil {
		b.Fatal(err)
	}
	agentCfg.Host = c.ControllerURL()
	agents := make([]*simAgent, agentCount)
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
		w, err := policywatch.New(ownConnection(agentCfg), n, agents[i], log, policywatch.Options{})
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
	initial, err := waitAll(agentChans(agents), start, 2*time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("%d agents listed and synced the initial state in %s", agentCount, initial.max.Round(time.Millisecond))
	rssConnected := rssKiB(b, pid)
	watchers := startWatchers(b, ctx, admin, agentCount)

	policies, members, configMaps := 0, 0, 0
	sample := func(l latency) benchutil.Sample {
		return benchutil.Sample{"ms-last": ms(l.max), "ms-median-watcher": ms(l.median)}
	}
	newPolicy := func(int) (benchutil.Sample, error) {
		// A new policy: every agent receives it (NetworkPolicy plus groups).
		policies++
		name := fmt.Sprintf("bench-allow-%d", policies)
		for _, a := range agents {
			a.expect(hasPolicy(name))
		}
		start := time.Now()
		if err := createPolicy(ctx, cs, name); err != nil {
			return nil, err
		}
		l, err := waitAll(agentChans(agents), start, time.Minute)
		return sample(l), err
	}
	newMember := func(int) (benchutil.Sample, error) {
		// A new peer pod: every agent receives an AddressGroup patch. The
		// clock starts when the pod has its IP (the status update).
		pod := fmt.Sprintf("cli-%d", members)
		for _, a := range agents {
			a.expect(hasAddressMember(pod))
		}
		p, err := cs.CoreV1().Pods("default").Create(ctx, podObject(pod, nodes[members%agentCount], "bench-cli"), metav1.CreateOptions{})
		if err != nil {
			return nil, err
		}
		start := time.Now()
		if err := setPodIP(ctx, cs, p, fmt.Sprintf("10.99.%d.%d", members/256, members%256)); err != nil {
			return nil, err
		}
		members++
		l, err := waitAll(agentChans(agents), start, time.Minute)
		return sample(l), err
	}
	newConfigMap := func(int) (benchutil.Sample, error) {
		configMaps++
		name := fmt.Sprintf("round-%d", configMaps)
		for _, w := range watchers {
			w.expect(name)
		}
		start := time.Now()
		if _, err := cs.CoreV1().ConfigMaps(fanoutNamespace).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
		chans := make([]<-chan time.Time, len(watchers))
		for i, w := range watchers {
			chans[i] = w.seen
		}
		l, err := waitAll(chans, start, time.Minute)
		return sample(l), err
	}
	for b.Loop() {
		r, err := benchutil.Comparison{
			Name:    fmt.Sprintf("a change reaching %d watchers (ms until the last one has it, and the median one)", agentCount),
			Metrics: []string{"ms-last", "ms-median-watcher"},
			Sides: []benchutil.Side{
				{Name: "seine-policy", Run: newPolicy},
				{Name: "seine-member", Run: newMember},
				{Name: "apiserver-watch", Run: newConfigMap},
			},
			Ratios: []benchutil.Ratio{{Num: "seine-policy", Den: "apiserver-watch"}, {Num: "seine-member", Den: "apiserver-watch"}},
			Rounds: fanoutRounds,
		}.Run()
		if err != nil {
			b.Fatal(err)
		}
		r.Report(b)
	}
	rssAfter := rssKiB(b, pid)
	rssHWM := hwmKiB(b, pid)
	b.ReportMetric(float64(rssConnected)/1024, "MiB-controller-RSS")
	b.Logf("controller RSS (absolute, no baseline): %.1f MiB before agents, %.1f MiB with %d agents connected, %.1f MiB at the end, peak %.1f MiB",
		float64(rssIdle)/1024, float64(rssConnected)/1024, agentCount, float64(rssAfter)/1024, float64(rssHWM)/1024)
	cancel()
	wg.Wait()
	b.Logf("agent sessions (initial lists included): %d for %d agents", relists.Load(), agentCount)
}

// ownConnection copies cfg with a Dial of its own, which keeps client-go
// from sharing one transport (one connection) between clients.
func ownConnection(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	d := &net.Dialer{Timeout: 10 * time.Second}
	c.Dial = d.DialContext
	return c
}

// fanoutNamespace holds the baseline's ConfigMaps.
const fanoutNamespace = "bench-fanout"

// watcher is the baseline's client: one plain watch of the kube-apiserver
// on its own connection, reporting when a ConfigMap of a given name is
// added.
type watcher struct {
	mu   sync.Mutex
	want string
	seen chan time.Time
}

func (w *watcher) expect(name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.want, w.seen = name, make(chan time.Time, 1)
}

func (w *watcher) saw(name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.want != "" && name == w.want {
		w.want = ""
		w.seen <- time.Now()
	}
}

// startWatchers opens n watches of fanoutNamespace's ConfigMaps, each on
// its own connection to the kube-apiserver, and returns once all are open.
func startWatchers(b *testing.B, ctx context.Context, admin *rest.Config, n int) []*watcher {
	b.Helper()
	cs := kubernetes.NewForConfigOrDie(admin)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fanoutNamespace}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	list, err := cs.CoreV1().ConfigMaps(fanoutNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	ws := make([]*watcher, n)
	timeout := int64(3600)
	parallel(b, make([]string, n), func(i int, _ string) error {
		wcs, err := kubernetes.NewForConfig(ownConnection(admin))
		if err != nil {
			return err
		}
		wi, err := wcs.CoreV1().ConfigMaps(fanoutNamespace).Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion, TimeoutSeconds: &timeout})
		if err != nil {
			return err
		}
		w := &watcher{}
		ws[i] = w
		go func() {
			for ev := range wi.ResultChan() {
				if cm, ok := ev.Object.(*corev1.ConfigMap); ok && ev.Type == watch.Added {
					w.saw(cm.Name)
				}
			}
		}()
		b.Cleanup(wi.Stop)
		return nil
	})
	return ws
}

func agentChans(agents []*simAgent) []<-chan time.Time {
	out := make([]<-chan time.Time, len(agents))
	for i, a := range agents {
		a.mu.Lock()
		out[i] = a.seen
		a.mu.Unlock()
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

type latency struct{ max, median time.Duration }

// waitAll waits until every watcher has reported on its channel, and
// returns the latency of the last and of the median one.
func waitAll(seen []<-chan time.Time, start time.Time, timeout time.Duration) (latency, error) {
	deadline := time.After(timeout)
	ds := make([]time.Duration, 0, len(seen))
	for i, ch := range seen {
		select {
		case t := <-ch:
			ds = append(ds, t.Sub(start))
		case <-deadline:
			return latency{}, fmt.Errorf("%d of %d watchers got the change within %s (first missing: #%d)", len(ds), len(seen), timeout, i)
		}
	}
	return latency{max: slices.Max(ds), median: median(ds)}, nil
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
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
