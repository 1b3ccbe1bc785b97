package e2e

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	crd "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/test/lab/labtest"
	"github.com/seine-cni/seine/test/lab/probe"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
)

// checkTraceflow runs Traceflows between the pods (which listen on TCP
// 8080) through real OVS on the lab's nodes: same node and across nodes
// (Delivered; across, the source node forwards into the tunnel to the
// destination's node IP), to a ClusterIP Service (the endpoint it was
// DNATed to), to an address outside the cluster (ForwardedOutOfNetwork),
// and into a pod an ingress NetworkPolicy isolates (Dropped, naming the
// policy); live traffic across nodes (a real connection's SYN followed to
// its delivery, the same packet captured on both nodes) and droppedOnly
// (real connections into the isolated pod, reported where dropped). mode is the lab's traffic mode. It leaves the other-node pod
// isolated (until the test's cleanup): callers run it last.
func (e *env) checkTraceflow(pods []corev1.Pod, mode string) {
	e.t.Helper()
	dyn := e.dynamic()
	src := pods[0]
	var same, other *corev1.Pod
	for i := range pods[1:] {
		p := &pods[1+i]
		if p.Spec.NodeName == src.Spec.NodeName && same == nil {
			same = p
		}
		if p.Spec.NodeName != src.Spec.NodeName && other == nil {
			other = p
		}
	}
	if same == nil {
		// Six pods on three nodes: some node has two; start from there.
		for i := range pods {
			for j := range pods {
				if i != j && pods[i].Spec.NodeName == pods[j].Spec.NodeName {
					src, same = pods[i], &pods[j]
				}
			}
		}
		for i := range pods {
			if pods[i].Spec.NodeName != src.Spec.NodeName {
				other = &pods[i]
			}
		}
	}
	spec := func(dst crd.Destination) crd.TraceflowSpec {
		return crd.TraceflowSpec{Source: crd.Source{Namespace: "default", Pod: src.Name}, Destination: dst,
			Packet: crd.Packet{Protocol: "TCP", DstPort: 8080}}
	}

	t0 := time.Now()
	tf := e.traceflow(dyn, "tf-same-node", spec(crd.Destination{Namespace: "default", Pod: same.Name}))
	e.t.Logf("same node: Succeeded %s after creation", time.Since(t0).Round(time.Millisecond))
	wantLast(e, tf, src.Spec.NodeName, crd.ActionDelivered)

	t0 = time.Now()
	tf = e.traceflow(dyn, "tf-other-node", spec(crd.Destination{Namespace: "default", Pod: other.Name}))
	e.t.Logf("other node: Succeeded %s after creation", time.Since(t0).Round(time.Millisecond))
	out := wantLast(e, tf, src.Spec.NodeName, crd.ActionForwarded)
	if want := e.nodeIP(other.Spec.NodeName); mode == "encap" && out.TunnelDstIP != want || mode == "noEncap" && out.TunnelDstIP != "" {
		e.t.Errorf("%s: tunnel destination %q (%s's node IP is %s)", mode, out.TunnelDstIP, other.Spec.NodeName, e.nodeIP(other.Spec.NodeName))
	}
	wantLast(e, tf, other.Spec.NodeName, crd.ActionDelivered)
	if r := result(tf, other.Spec.NodeName); len(r.Observations) < 2 || r.Observations[0].Action != crd.ActionReceived {
		e.t.Errorf("destination node observations %+v: want Received first", r.Observations)
	}

	// Live traffic: the source pod's next new connection to the other pod
	// is tagged on its node and followed to its delivery.
	ns := e.podNS(&src)
	live := spec(crd.Destination{Namespace: "default", Pod: other.Name})
	live.LiveTraffic = true
	t0 = time.Now()
	tf = e.traceflowWith(dyn, "tf-live", live, e.connect(ns, other.Status.PodIP+":8080"))
	e.t.Logf("live: Succeeded %s after creation (connections every 100 ms)", time.Since(t0).Round(time.Millisecond))
	wantLast(e, tf, src.Spec.NodeName, crd.ActionForwarded)
	wantLast(e, tf, other.Spec.NodeName, crd.ActionDelivered)
	cs, cd := result(tf, src.Spec.NodeName).CapturedPacket, result(tf, other.Spec.NodeName).CapturedPacket
	if cs == nil || cd == nil || cs.SrcIP != src.Status.PodIP || cs.DstIP != other.Status.PodIP || cs.DstPort != 8080 || cs.Protocol != "TCP" ||
		cs.TCPFlags != 0x02 || cd.IPID != cs.IPID || cd.SrcPort != cs.SrcPort {
		e.t.Errorf("live trace: captured packets (source node %+v, destination node %+v): want the same SYN to %s:8080\n%s", cs, cd, other.Status.PodIP, render(tf))
	}

	svc := e.service(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "tf-web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": src.Labels["app"]}, Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}}}, len(pods))
	tf = e.traceflow(dyn, "tf-service", crd.TraceflowSpec{Source: crd.Source{Namespace: "default", Pod: src.Name},
		Destination: crd.Destination{Namespace: "default", Service: svc.Name}})
	lb := find(tf, src.Spec.NodeName, crd.ComponentLB)
	if lb == nil || !slices.ContainsFunc(pods, func(p corev1.Pod) bool { return p.Status.PodIP == lb.TranslatedDstIP }) || lb.TranslatedDstPort != 8080 {
		e.t.Errorf("service trace: LB observation %+v, want a web pod's IP and port 8080\n%s", lb, render(tf))
	}
	if !slices.ContainsFunc(tf.Status.Results, func(r crd.NodeResult) bool {
		n := len(r.Observations)
		return n > 0 && r.Observations[n-1].Action == crd.ActionDelivered
	}) {
		e.t.Errorf("service trace delivered nowhere:\n%s", render(tf))
	}

	tf = e.traceflow(dyn, "tf-external", spec(crd.Destination{IP: "198.51.100.7"}))
	wantLast(e, tf, src.Spec.NodeName, crd.ActionForwardedOutOfNetwork)

	// An ingress policy isolating the other-node pod, allowing nothing.
	if _, err := e.cs.CoreV1().Pods("default").Patch(e.ctx, other.Name, "application/merge-patch+json",
		[]byte(`{"metadata":{"labels":{"tf-target":"yes"}}}`), metav1.PatchOptions{}); err != nil {
		e.t.Fatal(err)
	}
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "tf-deny-ingress"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"tf-target": "yes"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
	// The policy is created while a droppedOnly trace of real connections
	// into the pod runs, once every node installed its copies: the drop
	// flow it brings must be followed by a copy (copies made once at the
	// trace's start dropped the tagged packet unseen, and the trace timed
	// out with no verdict).
	midTrace := spec(crd.Destination{Namespace: "default", Pod: other.Name})
	midTrace.LiveTraffic, midTrace.DroppedOnly, midTrace.Timeout = true, true, 60
	tf = e.traceflowDuring(dyn, "tf-realized-mid-trace", midTrace, e.connect(ns, other.Status.PodIP+":8080"), func() {
		var err error
		if np, err = e.cs.NetworkingV1().NetworkPolicies("default").Create(e.ctx, np, metav1.CreateOptions{}); err != nil {
			e.t.Fatal(err)
		}
		e.t.Cleanup(func() {
			_ = e.cs.NetworkingV1().NetworkPolicies("default").Delete(e.ctx, np.Name, metav1.DeleteOptions{})
		})
		if _, _, err := e.c.WaitPolicyRealized(e.ctx, np, time.Minute); err != nil {
			e.t.Fatal(err)
		}
	})
	if drop := wantLast(e, tf, other.Spec.NodeName, crd.ActionDropped); drop.NetworkPolicy != "default/tf-deny-ingress" {
		e.t.Errorf("a policy realized mid-trace: drop %+v, want default/tf-deny-ingress\n%s", drop, render(tf))
	}
	for deadline := time.Now().Add(60 * time.Second); ; {
		_, err := probe.Probe(e.ctx, ns, "tcp", other.Status.PodIP+":8080", time.Second)
		if errors.Is(err, probe.ErrTimeout) {
			break
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("the ingress policy never dropped %s: %v", other.Name, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	tf = e.traceflow(dyn, "tf-dropped", spec(crd.Destination{Namespace: "default", Pod: other.Name}))
	drop := wantLast(e, tf, other.Spec.NodeName, crd.ActionDropped)
	if drop.Component != crd.ComponentNetworkPolicy || drop.ComponentInfo != "IngressPolicy" || drop.NetworkPolicy != "default/tf-deny-ingress" || drop.Rule == "" {
		e.t.Errorf("drop observation %+v: want NetworkPolicy IngressPolicy default/tf-deny-ingress with its rule", drop)
	}
	// droppedOnly: real connections to the isolated pod, reported where
	// they are dropped only (the source node has nothing to say).
	dropped := spec(crd.Destination{Namespace: "default", Pod: other.Name})
	dropped.LiveTraffic, dropped.DroppedOnly = true, true
	tf = e.traceflowWith(dyn, "tf-live-dropped", dropped, e.connect(ns, other.Status.PodIP+":8080"))
	drop = wantLast(e, tf, other.Spec.NodeName, crd.ActionDropped)
	if drop.NetworkPolicy != "default/tf-deny-ingress" || result(tf, other.Spec.NodeName).CapturedPacket == nil {
		e.t.Errorf("droppedOnly: drop %+v, want default/tf-deny-ingress and the captured packet\n%s", drop, render(tf))
	}
	if obs := result(tf, src.Spec.NodeName).Observations; len(obs) != 0 {
		e.t.Errorf("droppedOnly: the source node reported %+v", obs)
	}
	e.checkTieredTraceflow(dyn, spec(crd.Destination{Namespace: "default", Pod: other.Name}), src, *other)
	if out, err := e.c.Kubectl(e.ctx, "get", "traceflows", "-o", "wide"); err != nil {
		e.t.Errorf("kubectl get traceflows: %v\n%s", err, out)
	} else {
		e.t.Logf("kubectl get traceflows -o wide:\n%s", out)
	}
}

// checkTieredTraceflow: a securityops ClusterNetworkPolicy dropping the
// source's TCP 8080 into the isolated pod (before the Kubernetes policy
// that isolates it) is named in the drop, with its rule.
func (e *env) checkTieredTraceflow(dyn dynamic.Interface, spec crd.TraceflowSpec, src, dst corev1.Pod) {
	e.t.Helper()
	cnps := dyn.Resource(crd.ClusterNetworkPoliciesResource)
	cnp := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "crd.seine.io/v1beta1", "kind": "ClusterNetworkPolicy",
		"metadata": map[string]any{"name": "tf-tier-deny"},
		"spec": map[string]any{"tier": "securityops", "priority": int64(1),
			"appliedTo": []any{map[string]any{"podSelector": map[string]any{"matchLabels": map[string]any{"tf-target": "yes"}}}},
			"ingress": []any{map[string]any{"name": "tf-deny-web", "action": "Drop",
				"from":  []any{map[string]any{"podSelector": map[string]any{"matchLabels": map[string]any{"app": src.Labels["app"]}}}},
				"ports": []any{map[string]any{"protocol": "TCP", "port": int64(8080)}}}},
		}}}
	if _, err := cnps.Create(e.ctx, cnp, metav1.CreateOptions{}); err != nil {
		e.t.Fatalf("create ClusterNetworkPolicy tf-tier-deny: %v", err)
	}
	e.t.Cleanup(func() { _ = cnps.Delete(e.ctx, "tf-tier-deny", metav1.DeleteOptions{}) })
	e.waitTieredRealized(dyn, "tf-tier-deny")
	tf := e.traceflow(dyn, "tf-tier-dropped", spec)
	drop := wantLast(e, tf, dst.Spec.NodeName, crd.ActionDropped)
	if drop.Component != crd.ComponentNetworkPolicy || drop.ComponentInfo != "IngressTier" ||
		drop.NetworkPolicy != "clusternetworkpolicies.crd.seine.io/tf-tier-deny" || drop.Rule != "tf-deny-web" {
		e.t.Errorf("tiered drop %+v: want NetworkPolicy IngressTier clusternetworkpolicies.crd.seine.io/tf-tier-deny, rule tf-deny-web\n%s", drop, render(tf))
	}
}

// traceflow creates a Traceflow and waits for it to end; it must succeed.
func (e *env) traceflow(dyn dynamic.Interface, name string, spec crd.TraceflowSpec) *crd.Traceflow {
	e.t.Helper()
	return e.traceflowWith(dyn, name, spec, nil)
}

// connect returns traffic that opens a TCP connection from the pod of
// netns to addr every 100 ms (each one new: live traces tag one) until
// stop is closed.
func (e *env) connect(netns, addr string) func(stop <-chan struct{}) {
	return func(stop <-chan struct{}) {
		for {
			_, _ = probe.Probe(e.ctx, netns, "tcp", addr, 100*time.Millisecond)
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// traceflowWith is traceflow with traffic running (when not nil) from the
// creation to the end: what a live trace tags.
func (e *env) traceflowWith(dyn dynamic.Interface, name string, spec crd.TraceflowSpec, traffic func(stop <-chan struct{})) *crd.Traceflow {
	e.t.Helper()
	return e.traceflowDuring(dyn, name, spec, traffic, nil)
}

// traceflowDuring is traceflowWith calling ready (when not nil) once the
// trace runs and every node of its path installed its copies.
func (e *env) traceflowDuring(dyn dynamic.Interface, name string, spec crd.TraceflowSpec, traffic func(stop <-chan struct{}), ready func()) *crd.Traceflow {
	e.t.Helper()
	stop, done := make(chan struct{}), make(chan struct{})
	defer func() { close(stop); <-done }()
	if traffic == nil {
		close(done)
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&crd.Traceflow{
		TypeMeta:   metav1.TypeMeta{APIVersion: crd.SchemeGroupVersion.String(), Kind: "Traceflow"},
		ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec})
	if err != nil {
		e.t.Fatal(err)
	}
	delete(obj, "status")
	res := dyn.Resource(crd.TraceflowsResource)
	if _, err := res.Create(e.ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
		e.t.Fatalf("create traceflow %s: %v", name, err)
	}
	if traffic != nil {
		go func() { defer close(done); traffic(stop) }()
	}
	for deadline := time.Now().Add(40 * time.Second); ; {
		u, err := res.Get(e.ctx, name, metav1.GetOptions{})
		if err != nil {
			e.t.Fatal(err)
		}
		var tf crd.Traceflow
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &tf); err != nil {
			e.t.Fatal(err)
		}
		switch tf.Status.Phase {
		case crd.Succeeded:
			e.t.Logf("traceflow %s:\n%s", name, render(&tf))
			return &tf
		case crd.Failed:
			e.t.Fatalf("traceflow %s failed: %s\n%s", name, tf.Status.Reason, render(&tf))
		}
		if ready != nil && tf.Status.Phase == crd.Running && installed(tf.Status) {
			t0 := time.Now()
			ready()
			ready = nil
			e.t.Logf("traceflow %s: the change while it ran took %s", name, time.Since(t0).Round(time.Millisecond))
			deadline = time.Now().Add(40 * time.Second)
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("traceflow %s still %q after 40s\n%s", name, tf.Status.Phase, render(&tf))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// installed: every node of the trace's path installed its copies.
func installed(st crd.TraceflowStatus) bool {
	for _, n := range st.Nodes {
		if !slices.ContainsFunc(st.Results, func(r crd.NodeResult) bool { return r.Node == n && r.FlowsInstalled }) {
			return false
		}
	}
	return len(st.Nodes) > 0
}

func result(tf *crd.Traceflow, node string) crd.NodeResult {
	for _, r := range tf.Status.Results {
		if r.Node == node {
			return r
		}
	}
	return crd.NodeResult{}
}

func find(tf *crd.Traceflow, node string, c crd.Component) *crd.Observation {
	for _, o := range result(tf, node).Observations {
		if o.Component == c {
			return &o
		}
	}
	return nil
}

// wantLast checks node's last observation.
func wantLast(e *env, tf *crd.Traceflow, node string, a crd.Action) crd.Observation {
	e.t.Helper()
	obs := result(tf, node).Observations
	if len(obs) == 0 || obs[len(obs)-1].Action != a {
		e.t.Errorf("traceflow %s: %s's last observation is not %s\n%s", tf.Name, node, a, render(tf))
		return crd.Observation{}
	}
	return obs[len(obs)-1]
}

func render(tf *crd.Traceflow) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "phase %s tag %d %s -> %s:%d reason %q\n", tf.Status.Phase, tf.Status.DataplaneTag, tf.Status.SrcIP, tf.Status.DstIP, tf.Status.DstPort, tf.Status.Reason)
	for _, r := range tf.Status.Results {
		fmt.Fprintf(&sb, "  %s (flows installed: %v)\n", r.Node, r.FlowsInstalled)
		if c := r.CapturedPacket; c != nil {
			fmt.Fprintf(&sb, "    captured %+v\n", *c)
		}
		for _, o := range r.Observations {
			fmt.Fprintf(&sb, "    %+v\n", o)
		}
	}
	return sb.String()
}

// dynamic is a dynamic client of the lab's kube-apiserver as its admin.
func (e *env) dynamic() dynamic.Interface {
	e.t.Helper()
	rc, err := e.c.RESTConfig("admin")
	if err != nil {
		e.t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		e.t.Fatal(err)
	}
	return dyn
}

// TestWindowsNode: node-3 poses as a Windows node (labelled
// kubernetes.io/os=windows, its agent builds the Windows flow set). A
// trace into a pod on it from another node and one out of it are
// Delivered, the source node forwarding into the tunnel to the other's
// node IP and the destination node receiving it; and tiered policy on a
// pod of it is judged with real packets by the Windows flows
// (checkTieredWindows); and the upstream API's domainNames peers work on
// it and on a Linux node (checkDomainNames).
func TestWindowsNode(t *testing.T) {
	e := upLabWith(t, labtest.Options{WindowsNodes: 1, UpstreamExperimental: true})
	if n, err := e.cs.CoreV1().Nodes().Get(e.ctx, "node-3", metav1.GetOptions{}); err != nil || n.Labels["kubernetes.io/os"] != "windows" {
		t.Fatalf("node-3 does not pose as a Windows node (%v): labels %v", err, n.GetLabels())
	}
	pods := e.deploy("web", 6)
	checkSpread(t, pods)
	var win, lin *corev1.Pod
	for i := range pods {
		switch {
		case pods[i].Spec.NodeName == "node-3" && win == nil:
			win = &pods[i]
		case pods[i].Spec.NodeName != "node-3" && lin == nil:
			lin = &pods[i]
		}
	}
	t.Run("traceflow", func(t *testing.T) { (&env{t: t, c: e.c, cs: e.cs, ctx: e.ctx}).checkTraceflowWindows(win, lin) })
	t.Run("tiered", func(t *testing.T) { (&env{t: t, c: e.c, cs: e.cs, ctx: e.ctx}).checkTieredWindows(win, lin) })
	var other *corev1.Pod
	for i := range pods {
		if p := &pods[i]; p.Name != win.Name && p.Name != lin.Name && p.Spec.NodeName != lin.Spec.NodeName {
			other = p
		}
	}
	t.Run("domain-names", func(t *testing.T) {
		(&env{t: t, c: e.c, cs: e.cs, ctx: e.ctx}).checkDomainNames([]*corev1.Pod{win, lin}, other)
	})
}

// checkTraceflowWindows traces from a pod on a Linux-flow-set node into a
// pod on the Windows-flow-set node and back.
func (e *env) checkTraceflowWindows(win, lin *corev1.Pod) {
	t := e.t
	dyn := e.dynamic()
	for _, tc := range []struct {
		name     string
		src, dst *corev1.Pod
	}{{"tf-to-windows", lin, win}, {"tf-from-windows", win, lin}} {
		t0 := time.Now()
		tf := e.traceflow(dyn, tc.name, crd.TraceflowSpec{Source: crd.Source{Namespace: "default", Pod: tc.src.Name},
			Destination: crd.Destination{Namespace: "default", Pod: tc.dst.Name}, Packet: crd.Packet{Protocol: "TCP", DstPort: 8080}})
		t.Logf("%s (%s -> %s): Succeeded %s after creation", tc.name, tc.src.Spec.NodeName, tc.dst.Spec.NodeName, time.Since(t0).Round(time.Millisecond))
		if out := wantLast(e, tf, tc.src.Spec.NodeName, crd.ActionForwarded); out.TunnelDstIP != e.nodeIP(tc.dst.Spec.NodeName) {
			t.Errorf("%s: tunnel destination %q, want %s's node IP %s\n%s", tc.name, out.TunnelDstIP, tc.dst.Spec.NodeName, e.nodeIP(tc.dst.Spec.NodeName), render(tf))
		}
		wantLast(e, tf, tc.dst.Spec.NodeName, crd.ActionDelivered)
		if r := result(tf, tc.dst.Spec.NodeName); len(r.Observations) < 2 || r.Observations[0].Action != crd.ActionReceived {
			t.Errorf("%s: destination node observations %+v, want Received first", tc.name, r.Observations)
		}
	}
}
