package e2e

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"

	crdv1 "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	statsv1 "github.com/seine-cni/seine/core/apis/stats/v1alpha1"
	"github.com/seine-cni/seine/test/lab"
	"github.com/seine-cni/seine/test/lab/probe"
)

// TestPolicyStats counts real connections per policy and rule
// (core/policystats/README.md): a client pod on node-1 and servers on
// node-2 and node-3, selected by a Seine ClusterNetworkPolicy (rule
// allow-udp: Allow UDP 8081 from the client; rule drop-udp: Drop UDP 9999)
// and a Kubernetes NetworkPolicy (TCP 8080 from the client). N allowed and
// M dropped UDP probes give exactly N and M sessions, two packets per
// allowed session (request and reply) with their frame sizes, summed over
// the two server nodes; TCP connections give their sessions. The totals
// are the same after seine-controller restarts, after ovs-vswitchd
// restarts on a server node (its counters start from zero) and after that
// node's agent restarts (not counted twice), and count on from there.
func TestPolicyStats(t *testing.T) {
	e := upLab(t, "encap", "geneve")
	pods := e.deploy("web", 3)
	checkSpread(t, pods)
	byNode := map[string]*corev1.Pod{}
	for i := range pods {
		byNode[pods[i].Spec.NodeName] = &pods[i]
	}
	client, servers := byNode["node-1"], []*corev1.Pod{byNode["node-2"], byNode["node-3"]}
	for p, role := range map[*corev1.Pod]string{client: "client", servers[0]: "server", servers[1]: "server"} {
		patch := fmt.Sprintf(`{"metadata":{"labels":{"stats-role":%q}}}`, role)
		if _, err := e.cs.CoreV1().Pods("default").Patch(e.ctx, p.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	dc := e.dynamic()
	role := func(r string) map[string]any {
		return map[string]any{"podSelector": map[string]any{"matchLabels": map[string]any{"stats-role": r}}}
	}
	udp := func(port int64) []any { return []any{map[string]any{"protocol": "UDP", "port": port}} }
	cnp := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "crd.seine.io/v1beta1", "kind": "ClusterNetworkPolicy",
		"metadata": map[string]any{"name": "stats-cnp"},
		"spec": map[string]any{"tier": "application", "priority": 10.0, "appliedTo": []any{role("server")},
			"ingress": []any{
				map[string]any{"name": "allow-udp", "action": "Allow", "from": []any{role("client")}, "ports": udp(8081)},
				map[string]any{"name": "drop-udp", "action": "Drop", "from": []any{role("client")}, "ports": udp(9999)},
			}},
	}}
	if err := e.createOrUpdate(dc.Resource(crdv1.ClusterNetworkPoliciesResource), cnp); err != nil {
		t.Fatal(err)
	}
	tcp, p8080 := corev1.ProtocolTCP, intstr.FromInt32(8080)
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "stats-k8s"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"stats-role": "server"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"stats-role": "client"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &p8080}},
			}},
		},
	}
	if _, err := e.cs.NetworkingV1().NetworkPolicies("default").Create(e.ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = dc.Resource(crdv1.ClusterNetworkPoliciesResource).Delete(e.ctx, "stats-cnp", metav1.DeleteOptions{})
		_ = e.cs.NetworkingV1().NetworkPolicies("default").Delete(e.ctx, "stats-k8s", metav1.DeleteOptions{})
	})
	e.waitPolicyRealized(dc, "stats-cnp", 2)
	e.waitPolicyRealized(dc, "stats-k8s", 2)

	// The probes. An allowed UDP probe is one request (6 bytes of
	// payload: a 48-byte frame) and one reply (the server's name and a
	// newline); a dropped one is every datagram it sent (probe.Sent).
	ns := e.podNS(client)
	var want struct{ allow, drop, tcp statsv1.TrafficStats }
	udpProbes := func(n int) {
		t.Helper()
		for _, s := range servers {
			for range n {
				reply, err := probe.Probe(e.ctx, ns, "udp", s.Status.PodIP+":8081", 3*time.Second)
				if err != nil || strings.TrimSpace(reply) != s.Name {
					t.Fatalf("allowed udp probe to %s: %q, %v", s.Name, reply, err)
				}
				want.allow.Sessions++
				want.allow.Packets += 2
				want.allow.Bytes += 48 + int64(42+len(reply))
			}
		}
	}
	const n, m = 5, 2
	udpProbes(n)
	for _, s := range servers {
		for range m {
			_, err := probe.Probe(e.ctx, ns, "udp", s.Status.PodIP+":9999", 600*time.Millisecond)
			if !errors.Is(err, probe.ErrTimeout) {
				t.Fatalf("dropped udp probe to %s: %v, want a timeout", s.Name, err)
			}
			sent := int64(probe.Sent(err))
			want.drop.Sessions += sent
			want.drop.Packets += sent
			want.drop.Bytes += 48 * sent
		}
	}
	for _, s := range servers {
		for range 3 {
			if _, err := probe.Probe(e.ctx, ns, "tcp", s.Status.PodIP+":8080", 3*time.Second); err != nil {
				t.Fatalf("tcp probe to %s: %v", s.Name, err)
			}
			want.tcp.Sessions++
		}
	}
	t.Logf("sent: allowed udp %+v, dropped udp %+v, tcp sessions %d", want.allow, want.drop, want.tcp.Sessions)

	check := func(step string) {
		t.Helper()
		e.waitStats(step, func() []string {
			var bad []string
			rules, err := e.policyStats(dc, "seineclusternetworkpolicystats", "", "stats-cnp")
			if err != nil {
				return []string{err.Error()}
			}
			if rules["allow-udp"] != want.allow || rules["drop-udp"] != want.drop {
				bad = append(bad, fmt.Sprintf("stats-cnp: allow-udp %+v, drop-udp %+v; want %+v and %+v", rules["allow-udp"], rules["drop-udp"], want.allow, want.drop))
			}
			rules, err = e.policyStats(dc, "networkpolicystats", "default", "stats-k8s")
			if err != nil {
				return append(bad, err.Error())
			}
			// A TCP connection of the probe: handshake, the server's line,
			// the closes: at least 5 packets of at least 54 bytes.
			if got := rules["ingress-0"]; got.Sessions != want.tcp.Sessions || got.Packets < 5*got.Sessions || got.Bytes < 54*got.Packets {
				bad = append(bad, fmt.Sprintf("stats-k8s: ingress-0 %+v, want %d sessions", got, want.tcp.Sessions))
			}
			return bad
		})
	}
	check("probes counted across node-2 and node-3")
	// The agents' per-node totals (never per rule) add up to the same.
	e.waitStats("seine_agent_policy_sessions_total", func() []string {
		total := 0.0
		for _, n := range e.c.NodeList() {
			code, body, err := lab.HTTPGetInNS(e.ctx, e.c.NetNSPath(n.Name), "http://127.0.0.1:10350/metrics")
			if err != nil || code != 200 {
				return []string{fmt.Sprintf("%s /metrics: %d %v", n.Name, code, err)}
			}
			for _, l := range strings.Split(body, "\n") {
				if v, ok := strings.CutPrefix(l, "seine_agent_policy_sessions_total "); ok {
					f, _ := strconv.ParseFloat(v, 64)
					total += f
				}
			}
		}
		if want := float64(want.allow.Sessions + want.drop.Sessions + want.tcp.Sessions); total != want {
			return []string{fmt.Sprintf("sum of seine_agent_policy_sessions_total %v, want %v", total, want)}
		}
		return nil
	})
	out, err := e.c.Kubectl(e.ctx, "get", "networkpolicystats", "-A")
	if err != nil || !strings.Contains(out, "SESSIONS") || !strings.Contains(out, "stats-k8s") {
		t.Errorf("kubectl get networkpolicystats -A: %v\n%s", err, out)
	}
	t.Logf("kubectl get networkpolicystats -A:\n%s", out)
	out, _ = e.c.Kubectl(e.ctx, "get", "seineclusternetworkpolicystats", "stats-cnp", "-o", "yaml")
	t.Logf("kubectl get seineclusternetworkpolicystats stats-cnp -o yaml:\n%s", out)

	// The controller keeps nothing: the nodes' next reports bring the
	// totals back whole.
	if err := e.c.StopController(); err != nil {
		t.Fatal(err)
	}
	if err := e.c.StartController(e.ctx); err != nil {
		t.Fatal(err)
	}
	check("after a seine-controller restart")

	// ovs-vswitchd restarts on node-2: the agent installs its flows
	// again, with counters from zero; the totals stay, and count on.
	if err := e.ovs("node-2").RestartVswitchd(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.waitFor("node-1 -> node-2 after the vswitchd restart", 30*time.Second, func() error {
		_, err := probe.Probe(e.ctx, ns, "tcp", servers[0].Status.PodIP+":8080", time.Second)
		if err == nil {
			want.tcp.Sessions++
		}
		return err
	})
	check("after ovs-vswitchd restarted on node-2")
	udpProbes(1)
	check("one more probe to each server after the vswitchd restart")

	// A server node's agent restarts: its totals come from its file (now
	// more than the switch's counters) and the switch's counters, which
	// the replay keeps; nothing is counted twice or lost, and new
	// traffic counts on.
	e.stopAgent("node-2")
	e.startAgent("node-2")
	time.Sleep(5 * time.Second) // a few reads of the restarted agent
	check("after node-2's agent restarted")
	udpProbes(1)
	check("one more probe to each server after the restart")
}

// waitPolicyRealized waits until the internal policy of the user policy
// name is realized on its span of nodes nodes.
func (e *env) waitPolicyRealized(dc dynamic.Interface, name string, nodes int64) {
	e.t.Helper()
	gvr := schema.GroupVersionResource{Group: "controlplane.seine.io", Version: "v1beta1", Resource: "networkpolicies"}
	e.waitStats(name+" realized", func() []string {
		l, err := dc.Resource(gvr).List(e.ctx, metav1.ListOptions{})
		if err != nil {
			return []string{err.Error()}
		}
		for _, it := range l.Items {
			if n, _, _ := unstructured.NestedString(it.Object, "sourceRef", "name"); n != name {
				continue
			}
			phase, _, _ := unstructured.NestedString(it.Object, "status", "phase")
			desired, _, _ := unstructured.NestedInt64(it.Object, "status", "desiredNodes")
			realized, _, _ := unstructured.NestedInt64(it.Object, "status", "realizedNodes")
			if phase == "Realized" && desired == nodes && realized == desired {
				return nil
			}
			return []string{fmt.Sprintf("phase %s, %d/%d nodes", phase, realized, desired)}
		}
		return []string{"no internal policy yet"}
	})
}

// policyStats reads a stats object and returns its rules' totals by name.
func (e *env) policyStats(dc dynamic.Interface, resource, namespace, name string) (map[string]statsv1.TrafficStats, error) {
	gvr := statsv1.SchemeGroupVersion.WithResource(resource)
	var r dynamic.ResourceInterface = dc.Resource(gvr)
	if namespace != "" {
		r = dc.Resource(gvr).Namespace(namespace)
	}
	u, err := r.Get(e.ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", resource, name, err)
	}
	var ps statsv1.NetworkPolicyStats
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &ps); err != nil {
		return nil, err
	}
	out := map[string]statsv1.TrafficStats{}
	for _, r := range ps.RuleTrafficStats {
		out[r.Name] = r.TrafficStats
	}
	return out, nil
}

// waitStats calls check until it finds nothing wrong, for 60 s at the most
// (agents read their counters every 2 s in the lab and report a change at
// once, and unchanged totals every 12 s).
func (e *env) waitStats(step string, check func() []string) {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		bad := check()
		if len(bad) == 0 {
			e.t.Logf("policy stats: %s: as expected", step)
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("policy stats: %s:\n  %s", step, strings.Join(bad, "\n  "))
		}
		time.Sleep(500 * time.Millisecond)
	}
}
