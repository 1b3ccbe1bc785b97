package netpol

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/seine-cni/seine/core/client/clientset/versioned"
	"github.com/seine-cni/seine/test/lab"
	"github.com/seine-cni/seine/test/lab/labtest"
	"github.com/seine-cni/seine/test/lab/probe"
)

const (
	// probeTimeout is how long a probe waits for an answer; a denied probe
	// costs this much, so a matrix with denied cells takes about a second.
	probeTimeout = time.Second
	// enforceTimeout bounds how long a case waits for the matrix to match
	// after it changed policies or labels (they take effect asynchronously).
	enforceTimeout = 10 * time.Second
	// probeParallel bounds the probes in flight (each holds an OS thread
	// locked into a pod's namespace).
	probeParallel = 48
	// pollInterval spaces the rounds of probes while waiting for a matrix.
	pollInterval = 200 * time.Millisecond
	// hold is how long, once seine-controller reports the step realized, a
	// step's matrices must keep matching (at least one whole round). It is
	// the same for steps that allow and steps that deny.
	hold = time.Second
	// slowReprobes bounds the reprobes of an allowed pair that connected
	// but got no answer (reprobeTimeouts).
	slowReprobes = 3
)

func TestMain(m *testing.M) {
	code := m.Run()
	labtest.RemoveBinaries()
	os.Exit(code)
}

// TestNetworkPolicy brings up one lab, creates the nine pods and runs every
// case against them, resetting policies and labels between cases.
func TestNetworkPolicy(t *testing.T) {
	s := setUp(t)
	run := func(name string, f func(t *testing.T)) {
		t.Run(name, func(t *testing.T) {
			t.Cleanup(func() { s.reset(t) })
			t.Cleanup(func() { s.dumpPolicyFlows(t) })
			f(t)
		})
	}
	for _, c := range labFirst {
		run(c.name, func(t *testing.T) { c.run(t, s) })
	}
	for _, c := range policyCases() {
		run(c.name, func(t *testing.T) { c.run(t, s) })
	}
	for _, c := range labLast {
		run(c.name, func(t *testing.T) { c.run(t, s) })
	}
}

// dumpPolicyFlows logs every node's policy tables (50, 80) when the case
// failed and SEINE_NETPOL_DUMP_FLOWS is set, to see what a leak went through.
func (s *suite) dumpPolicyFlows(t *testing.T) {
	if !t.Failed() || os.Getenv("SEINE_NETPOL_DUMP_FLOWS") == "" {
		return
	}
	for _, n := range s.c.NodeList() {
		sock := filepath.Join(s.c.NodeOVSDir(n.Name), "run", "br-int.mgmt")
		for _, table := range []string{"50", "80"} {
			out, err := exec.Command("ovs-ofctl", "-O", "OpenFlow15", "dump-flows", "unix:"+sock, "table="+table).CombinedOutput()
			t.Logf("%s table %s (err %v):\n%s", n.Name, table, err, out)
		}
	}
	if d, err := time.ParseDuration(os.Getenv("SEINE_NETPOL_PAUSE")); err == nil {
		t.Logf("pausing %s with the lab up (state %s)", d, s.c.StateDir)
		time.Sleep(d)
	}
}

var _ env = (*suite)(nil)

// suite is the running lab with its nine pods.
type suite struct {
	c       *lab.Config
	cs      kubernetes.Interface
	cp      versioned.Interface // controlplane.seine.io through the aggregator, as kubectl reads it
	ctx     context.Context
	pods    []podRef
	ip      map[podRef]string
	node    map[podRef]string
	netns   map[podRef]string
	sctpErr error // why this kernel has no SCTP; nil when it has
}

func setUp(t *testing.T) *suite {
	t.Helper()
	o := labtest.Options{Name: "netpol", Nodes: 3, APIPort: 19443, EtcdPort: 19379}
	// SEINE_NETPOL_PORT_BASE moves the lab's ports, so two runs can share a machine.
	if b, err := strconv.Atoi(os.Getenv("SEINE_NETPOL_PORT_BASE")); err == nil && b > 0 {
		o.Name, o.APIPort, o.EtcdPort = fmt.Sprintf("netpol%d", b), b+443, b+379
	}
	c, cs := labtest.Up(t, o)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s := &suite{
		c: c, cs: cs, ctx: ctx, pods: suitePods(),
		ip: map[podRef]string{}, node: map[podRef]string{}, netns: map[podRef]string{},
		sctpErr: sctpSupport(),
	}
	if s.sctpErr != nil {
		t.Logf("no SCTP listeners (%v): SCTP matrices are traced through each node's flows with ofproto/trace", s.sctpErr)
	}
	admin, err := c.RESTConfig("admin")
	if err != nil {
		t.Fatal(err)
	}
	if s.cp, err = versioned.NewForConfig(admin); err != nil {
		t.Fatal(err)
	}
	nodes := c.NodeList()
	if len(nodes) != 3 {
		t.Fatalf("lab has %d nodes, want 3", len(nodes))
	}
	for _, ns := range namespaceNames {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create namespace %s: %v", ns, err)
		}
	}
	// The controller-manager creates each namespace's default
	// ServiceAccount; pods are refused until it exists.
	for _, ns := range namespaceNames {
		waitFor(t, 2*time.Minute, "ServiceAccount "+ns+"/default", func() (bool, string) {
			_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
			return err == nil, fmt.Sprint(err)
		})
	}
	// Pin the pods so every namespace, and every pod name, spans the three
	// nodes: x/a x/b x/c on node-1 node-2 node-3, y starts on node-2, z on node-3.
	for i, ns := range namespaceNames {
		for j, name := range podNames {
			p := serverPod(name, nodes[(i+j)%3].Name, s.sctpErr == nil)
			if _, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
				t.Fatalf("create pod %s/%s: %v", ns, name, err)
			}
		}
	}
	waitFor(t, 3*time.Minute, "the nine pods Ready with an IP", func() (bool, string) {
		var notReady []string
		for _, ref := range s.pods {
			p, err := cs.CoreV1().Pods(ref.ns).Get(ctx, ref.name, metav1.GetOptions{})
			if err != nil || !lab.PodReady(p) || p.Status.PodIP == "" {
				notReady = append(notReady, ref.String())
				continue
			}
			nsPath, err := c.PodNetNS(p)
			if err != nil {
				notReady = append(notReady, ref.String())
				continue
			}
			s.ip[ref], s.node[ref], s.netns[ref] = p.Status.PodIP, p.Spec.NodeName, nsPath
		}
		return len(notReady) == 0, "not ready: " + strings.Join(notReady, " ")
	})
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tNODE\tIP")
	for _, ref := range s.pods {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", ref, s.node[ref], s.ip[ref])
	}
	tw.Flush()
	t.Logf("pods:\n%s", b.String())
	return s
}

// serverPod is a probe-server pod bound to node, labelled pod=<name>, with
// the serverPorts.
func serverPod(name, node string, sctp bool) *corev1.Pod {
	ports := serverPorts(sctp)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"pod": name}},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: "server", Image: "lab/probe-server", Ports: ports}},
		},
	}
}

// sctpSupport says why SCTP sockets cannot be opened here, or nil.
func sctpSupport() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP)
	if err != nil {
		return fmt.Errorf("socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP): %w", err)
	}
	unix.Close(fd)
	return nil
}

// waitFor polls cond every 200ms until it holds, failing t after timeout
// with cond's last explanation.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s: %s", what, timeout, why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ipOf is the IP of a pod ("x/a").
func (s *suite) ipOf(pod string) string { return s.ip[parsePodRef(pod)] }

// allow is a matrix where every pair may talk.
func (s *suite) allow() *reach { return newReach(s.pods, true) }

// expect, after a change, waits until seine-controller reports every
// policy realized, then until the checks' matrices match (enforcement is
// asynchronous; a label change has no generation, so only the matrices
// show it landed), then holds: for hold after the realization, and at least
// one whole round, every round must still match. The first round of the
// hold is counted (drops_test.go): every denied probe that timed out must
// be accounted for by the isolation drop flows. A step that allows
// everything matches at once, before any agent has seen the change; the
// realization and the hold make it prove the change did not deny anything,
// as they make a deny step prove the change did not open anything a little
// later.
func (s *suite) expect(t *testing.T, step string, checks ...check) {
	t.Helper()
	waited := s.awaitRealized(t, step, checks...)
	realized := time.Now()
	targets := make([]target, len(checks))
	for i, c := range checks {
		targets[i] = c.t
	}
	var accounted []string
	rounds := 0
	for rounds == 0 || time.Since(realized) < hold {
		rounds++
		time.Sleep(pollInterval)
		var got []*observed
		var problems []string
		if rounds == 1 {
			var flows map[string]*nodeFlows
			var delta map[dropFlow]int64
			var err error
			if got, flows, delta, err = s.countedRound(targets); err != nil {
				t.Fatalf("%s: %v", step, err)
			}
			accounted, problems = accountDrops(s.deniedProbes(checks, got, flows), delta)
		} else {
			got = s.probeAll(targets)
		}
		var b strings.Builder
		for i, c := range checks {
			s.reprobeTimeouts(t, c, got[i])
			if len(c.want.diff(got[i])) > 0 {
				b.WriteString(render(c.t, c.want, got[i]))
			}
		}
		if b.Len() > 0 {
			t.Fatalf("%s: matched, then stopped matching %s after the policies were realized (round %d of the hold): a change took effect late:\n%s",
				step, time.Since(realized).Round(10*time.Millisecond), rounds, b.String())
		}
		for _, p := range problems {
			t.Errorf("%s: %s", step, p)
		}
	}
	if len(accounted) > 0 {
		t.Logf("%s: the isolation drop flows counted the denied probes of the hold's first round:\n  %s", step, strings.Join(accounted, "\n  "))
	}
	t.Logf("%s: realized after %s; matched and still matching %s after (%d rounds)", step, waited.Round(time.Millisecond), time.Since(realized).Round(10*time.Millisecond), rounds)
}

// awaitRealized is the first part of expect: it waits until the policies
// are realized, then until the checks' matrices match, and returns how long
// the realization took.
func (s *suite) awaitRealized(t *testing.T, step string, checks ...check) time.Duration {
	t.Helper()
	waited, err := s.waitRealized(realizeTimeout)
	if err != nil {
		t.Fatalf("%s: the policies are %v", step, err)
	}
	if err := s.await(step, enforceTimeout, t.Logf, checks...); err != nil {
		t.Fatal(err)
	}
	return waited
}

// reprobeTimeouts probes again, with a longer timeout, the allowed pairs
// of a hold round that timed out or connected without an answer in time:
// TCP resends a lost SYN only after a second, the first probe's whole
// budget, and on a loaded machine the budget can end between the handshake
// and the listener's answer, so one slow exchange is not a verdict. A pair
// a late change really denies times out again: a timed-out pair gets one
// more probe. A pair that connected was let through by every policy table
// (policy judges only a connection's first packet; the handshake is done),
// so its silence says nothing about policy: it gets up to slowReprobes
// more, and when the last one is silent too, the cell carries what the
// kernels of both pods said about the connection (socketReport). Every
// reprobe is logged. A denied pair is never probed again: one answer (or
// connection) on it fails the step.
func (s *suite) reprobeTimeouts(t *testing.T, c check, got *observed) {
	if s.traced(c.t) {
		return
	}
	for _, m := range c.want.diff(got) {
		if !m.allow || (m.got.v != dropped && !m.got.slow) {
			continue
		}
		i, j := slices.Index(got.pods, m.from), slices.Index(got.pods, m.to)
		tries := 1
		if m.got.slow {
			tries = slowReprobes
		}
		for n := 1; n <= tries; n++ {
			cl := s.probeWith(m.from, m.to, c.t, 3*probeTimeout)
			t.Logf("%s %s -> %s: %s; probed again with %s (%d of %d): %s", c.t, m.from, m.to, describe(got.cells[i][j]), 3*probeTimeout, n, tries, describe(cl))
			if cl.slow && n == tries {
				cl.detail += "\n" + s.socketReport(m.from, m.to, c.t)
			}
			got.cells[i][j] = cl
			if !cl.slow {
				break
			}
		}
	}
}

// socketReport is what the kernels of the two pods say about connections
// between them on the target's port, right after a probe connected and got
// no answer: the server's listener and its sockets (ss: a full accept queue
// shows as the listener's Recv-Q, an unfinished handshake as SYN-RECV) with
// the namespace's listen and backlog drop counters, and the client's side.
func (s *suite) socketReport(from, to podRef, tg target) string {
	if tg.proto != corev1.ProtocolTCP {
		return ""
	}
	port := strconv.Itoa(int(tg.port))
	run := func(ns string, args ...string) string {
		out, err := exec.Command("nsenter", append([]string{"--net=" + ns, "--"}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Sprintf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "server %s: %s\n", to, run(s.netns[to], "ss", "-tanoi", "sport", "=", ":"+port))
	fmt.Fprintf(&b, "server %s counters: %s\n", to, strings.Join(strings.Fields(run(s.netns[to], "nstat", "-asz",
		"TcpExtListenOverflows", "TcpExtListenDrops", "TcpExtTCPReqQFullDrop", "TcpExtTCPBacklogDrop", "TcpRetransSegs", "TcpExtTCPTimeouts")), " "))
	fmt.Fprintf(&b, "client %s: %s", from, run(s.netns[from], "ss", "-tanoi", "dst", s.ip[to]+":"+port))
	return b.String()
}

// await is expect returning the failure instead of failing a test.
func (s *suite) await(step string, timeout time.Duration, logf func(string, ...any), checks ...check) error {
	targets := make([]target, len(checks))
	for i, c := range checks {
		targets[i] = c.t
	}
	start := time.Now()
	for round := 1; ; round++ {
		if round > 1 {
			time.Sleep(pollInterval) // spacing between polls, so allowed-only rounds do not spin
		}
		got := s.probeAll(targets)
		bad := 0
		for i, c := range checks {
			bad += len(c.want.diff(got[i]))
		}
		if bad == 0 {
			logf("%s: %v as expected after %s (%d rounds)", step, targets, time.Since(start).Round(10*time.Millisecond), round)
			return nil
		}
		if s.ctx.Err() != nil || time.Since(start) > timeout {
			var b strings.Builder
			fmt.Fprintf(&b, "%s: the reachability matrix does not match after %s (%d rounds of probes):\n", step, time.Since(start).Round(10*time.Millisecond), round)
			for i, c := range checks {
				if len(c.want.diff(got[i])) > 0 {
					b.WriteString(render(c.t, c.want, got[i]))
				}
			}
			return errors.New(b.String())
		}
	}
}

// probeAll probes every ordered pair of distinct pods on every target, in
// parallel, and returns one matrix per target. A traced target (SCTP on a
// kernel without it) is traced instead.
func (s *suite) probeAll(targets []target) []*observed {
	out := make([]*observed, len(targets))
	sem := make(chan struct{}, probeParallel)
	var wg sync.WaitGroup
	for k, tg := range targets {
		if s.traced(tg) {
			out[k] = s.traceMatrix(tg)
			continue
		}
		out[k] = newObserved(s.pods)
		for i, from := range s.pods {
			for j, to := range s.pods {
				if i == j {
					continue
				}
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer wg.Done()
					out[k].cells[i][j] = s.probe(from, to, tg)
					<-sem
				}()
			}
		}
	}
	wg.Wait()
	return out
}

// probe sends one probe from one pod to another and classifies the outcome.
func (s *suite) probe(from, to podRef, tg target) cell {
	return s.probeWith(from, to, tg, probeTimeout)
}

func (s *suite) probeWith(from, to podRef, tg target, timeout time.Duration) cell {
	addr := net.JoinHostPort(s.ip[to], strconv.Itoa(int(tg.port)))
	reply, err := probe.Probe(s.ctx, s.netns[from], string(tg.proto), addr, timeout)
	switch {
	case err == nil && reply == to.name:
		return cell{v: answered}
	case err == nil:
		return cell{v: wrong, detail: fmt.Sprintf("answered %q", reply)}
	case errors.Is(err, probe.ErrTimeout):
		return cell{v: dropped, sent: probe.Sent(err)}
	case errors.Is(err, probe.ErrRefused):
		return cell{v: refused, detail: err.Error()}
	case errors.Is(err, probe.ErrUnreachable):
		return cell{v: unreachable, detail: err.Error()}
	case errors.Is(err, probe.ErrNoReply):
		return cell{v: wrong, detail: err.Error(), slow: true}
	default:
		return cell{v: wrong, detail: err.Error()}
	}
}

// create, update and deletePolicy change NetworkPolicies in a namespace.
func (s *suite) create(t *testing.T, ns string, p *networkingv1.NetworkPolicy) {
	t.Helper()
	if _, err := s.cs.NetworkingV1().NetworkPolicies(ns).Create(s.ctx, p.DeepCopy(), metav1.CreateOptions{}); err != nil {
		t.Fatalf("create NetworkPolicy %s/%s: %v", ns, p.Name, err)
	}
}

// update replaces the spec of the policy of the same name.
func (s *suite) update(t *testing.T, ns string, p *networkingv1.NetworkPolicy) {
	t.Helper()
	if err := s.updatePolicy(ns, p); err != nil {
		t.Fatal(err)
	}
}

func (s *suite) updatePolicy(ns string, p *networkingv1.NetworkPolicy) error {
	cur, err := s.cs.NetworkingV1().NetworkPolicies(ns).Get(s.ctx, p.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("update NetworkPolicy %s/%s: %w", ns, p.Name, err)
	}
	cur.Spec = *p.Spec.DeepCopy()
	if _, err := s.cs.NetworkingV1().NetworkPolicies(ns).Update(s.ctx, cur, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update NetworkPolicy %s/%s: %w", ns, p.Name, err)
	}
	return nil
}

func (s *suite) deletePolicy(t *testing.T, ns, name string) {
	t.Helper()
	if err := s.cs.NetworkingV1().NetworkPolicies(ns).Delete(s.ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete NetworkPolicy %s/%s: %v", ns, name, err)
	}
}

// labelPod and labelNS set (value != "") or remove (value == "") one label.
func (s *suite) labelPod(t *testing.T, pod, key, value string) {
	t.Helper()
	ref := parsePodRef(pod)
	if err := s.patchLabels(s.podLabels(ref), map[string]*string{key: strOrNil(value)}); err != nil {
		t.Fatalf("label pod %s: %v", pod, err)
	}
}

func (s *suite) labelNS(t *testing.T, ns, key, value string) {
	t.Helper()
	if err := s.patchLabels(s.nsLabels(ns), map[string]*string{key: strOrNil(value)}); err != nil {
		t.Fatalf("label namespace %s: %v", ns, err)
	}
}

func strOrNil(v string) *string {
	if v == "" {
		return nil
	}
	return &v
}

// patcher applies a JSON merge patch to one object.
type patcher func(patch []byte) error

func (s *suite) podLabels(ref podRef) patcher {
	return func(patch []byte) error {
		_, err := s.cs.CoreV1().Pods(ref.ns).Patch(s.ctx, ref.name, types.MergePatchType, patch, metav1.PatchOptions{})
		return err
	}
}

func (s *suite) nsLabels(ns string) patcher {
	return func(patch []byte) error {
		_, err := s.cs.CoreV1().Namespaces().Patch(s.ctx, ns, types.MergePatchType, patch, metav1.PatchOptions{})
		return err
	}
}

// patchLabels sets labels; a nil value removes the label.
func (s *suite) patchLabels(apply patcher, set map[string]*string) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": set}})
	if err != nil {
		return err
	}
	return apply(patch)
}

// reset deletes every policy the case made, restores the pods' and
// namespaces' labels and waits until every pod reaches every pod again, so
// that no case depends on the one before.
func (s *suite) reset(t *testing.T) {
	t.Helper()
	for _, ns := range namespaceNames {
		if err := s.cs.NetworkingV1().NetworkPolicies(ns).DeleteCollection(s.ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
			t.Errorf("reset: delete the NetworkPolicies of %s: %v", ns, err)
		}
		n, err := s.cs.CoreV1().Namespaces().Get(s.ctx, ns, metav1.GetOptions{})
		if err != nil {
			t.Errorf("reset: %v", err)
			continue
		}
		if extra := extraLabels(n.Labels, map[string]string{nsNameLabel: ns}); len(extra) > 0 {
			if err := s.patchLabels(s.nsLabels(ns), extra); err != nil {
				t.Errorf("reset: labels of namespace %s: %v", ns, err)
			}
		}
	}
	for _, ref := range s.pods {
		p, err := s.cs.CoreV1().Pods(ref.ns).Get(s.ctx, ref.name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			t.Errorf("reset: pod %s is gone", ref)
			continue
		} else if err != nil {
			t.Errorf("reset: %v", err)
			continue
		}
		if extra := extraLabels(p.Labels, map[string]string{"pod": ref.name}); len(extra) > 0 {
			if err := s.patchLabels(s.podLabels(ref), extra); err != nil {
				t.Errorf("reset: labels of pod %s: %v", ref, err)
			}
		}
	}
	if _, err := s.waitRealized(realizeTimeout); err != nil {
		t.Errorf("reset: the deleted policies are %v", err)
	}
	targets := []target{tcp80, tcp81, udp80, udp81}
	if s.sctpErr == nil {
		targets = append(targets, sctp80, sctp81)
	}
	var checks []check
	for _, tg := range targets {
		checks = append(checks, on(tg, s.allow()))
	}
	if err := s.await("reset: all policies deleted", enforceTimeout, t.Logf, checks...); err != nil {
		t.Errorf("%v", err)
	}
}

// extraLabels is the merge patch that turns have into want.
func extraLabels(have, want map[string]string) map[string]*string {
	patch := map[string]*string{}
	for k, v := range have {
		if w, ok := want[k]; !ok {
			patch[k] = nil
		} else if w != v {
			patch[k] = &w
		}
	}
	for k, w := range want {
		if _, ok := have[k]; !ok {
			patch[k] = &w
		}
	}
	return patch
}
