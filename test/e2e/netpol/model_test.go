package netpol

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8slabels "k8s.io/apimachinery/pkg/labels"
)

// model is a reference evaluation of the Kubernetes NetworkPolicy semantics
// over the suite's nine pods. It runs every case without a lab, so a wrong
// hand-written expectation fails here, not as a false alarm against Seine.
// It is deliberately naive: every probe is evaluated from the API objects.
type model struct {
	pods      []podRef
	podLabels map[podRef]map[string]string
	nsLabels  map[string]map[string]string
	policies  map[string]map[string]*networkingv1.NetworkPolicy // namespace -> name -> policy
	ports     []corev1.ContainerPort                            // every pod's
}

var _ env = (*model)(nil)

func newModel() *model {
	m := &model{
		pods: suitePods(), podLabels: map[podRef]map[string]string{}, nsLabels: map[string]map[string]string{},
		policies: map[string]map[string]*networkingv1.NetworkPolicy{}, ports: serverPorts(true),
	}
	for _, p := range m.pods {
		m.podLabels[p] = map[string]string{"pod": p.name}
	}
	for _, ns := range namespaceNames {
		m.nsLabels[ns] = map[string]string{nsNameLabel: ns}
		m.policies[ns] = map[string]*networkingv1.NetworkPolicy{}
	}
	return m
}

// ipOf gives pod i of namespace n the address 10.244.n.(i+2).
func (m *model) ipOf(pod string) string {
	ref := parsePodRef(pod)
	for i, ns := range namespaceNames {
		for j, name := range podNames {
			if ref == (podRef{ns, name}) {
				return fmt.Sprintf("10.244.%d.%d", i, j+2)
			}
		}
	}
	panic("no pod " + pod)
}

func (m *model) allow() *reach { return newReach(m.pods, true) }

func (m *model) create(t *testing.T, ns string, p *networkingv1.NetworkPolicy) {
	t.Helper()
	if _, ok := m.policies[ns][p.Name]; ok {
		t.Fatalf("create NetworkPolicy %s/%s: already exists", ns, p.Name)
	}
	m.policies[ns][p.Name] = defaulted(p)
}

func (m *model) update(t *testing.T, ns string, p *networkingv1.NetworkPolicy) {
	t.Helper()
	if _, ok := m.policies[ns][p.Name]; !ok {
		t.Fatalf("update NetworkPolicy %s/%s: not found", ns, p.Name)
	}
	m.policies[ns][p.Name] = defaulted(p)
}

func (m *model) deletePolicy(t *testing.T, ns, name string) {
	t.Helper()
	if _, ok := m.policies[ns][name]; !ok {
		t.Fatalf("delete NetworkPolicy %s/%s: not found", ns, name)
	}
	delete(m.policies[ns], name)
}

func (m *model) labelPod(t *testing.T, pod, key, value string) {
	setLabel(m.podLabels[parsePodRef(pod)], key, value)
}

func (m *model) labelNS(t *testing.T, ns, key, value string) { setLabel(m.nsLabels[ns], key, value) }

func setLabel(l map[string]string, key, value string) {
	if value == "" {
		delete(l, key)
	} else {
		l[key] = value
	}
}

// defaulted copies p with what the apiserver defaults: a port's protocol
// is TCP when unset.
func defaulted(p *networkingv1.NetworkPolicy) *networkingv1.NetworkPolicy {
	p = p.DeepCopy()
	fix := func(ports []networkingv1.NetworkPolicyPort) {
		for i := range ports {
			if ports[i].Protocol == nil {
				ports[i].Protocol = protoPtr(corev1.ProtocolTCP)
			}
		}
	}
	for i := range p.Spec.Ingress {
		fix(p.Spec.Ingress[i].Ports)
	}
	for i := range p.Spec.Egress {
		fix(p.Spec.Egress[i].Ports)
	}
	return p
}

// expect compares each check with the model's verdicts at once (the model
// has no propagation delay).
func (m *model) expect(t *testing.T, step string, checks ...check) {
	t.Helper()
	var bad []string
	for _, c := range checks {
		got := m.matrix(t, c.t)
		if len(c.want.diff(got)) > 0 {
			bad = append(bad, render(c.t, c.want, got))
		}
	}
	if len(bad) > 0 {
		t.Fatalf("%s: the case's expectation disagrees with the NetworkPolicy semantics (observed = the model):\n%s", step, strings.Join(bad, ""))
	}
}

func (m *model) matrix(t *testing.T, tg target) *observed {
	o := newObserved(m.pods)
	for i, from := range m.pods {
		for j, to := range m.pods {
			if i == j {
				continue
			}
			o.cells[i][j] = cell{v: dropped}
			if m.allowed(t, from, to, tg) {
				o.cells[i][j] = cell{v: answered}
			}
		}
	}
	return o
}

// allowed: the source's egress and the destination's ingress both admit it.
func (m *model) allowed(t *testing.T, from, to podRef, tg target) bool {
	return m.admits(t, from, to, to, tg, networkingv1.PolicyTypeEgress) &&
		m.admits(t, to, from, to, tg, networkingv1.PolicyTypeIngress)
}

// admits says whether the policies selecting subject, of type dir, admit
// traffic with peer at the other end; dst is the pod that receives (its
// container ports resolve named ports). A pod no policy of that type
// selects is not isolated in that direction.
func (m *model) admits(t *testing.T, subject, peer, dst podRef, tg target, dir networkingv1.PolicyType) bool {
	isolated := false
	for _, name := range sortedKeys(m.policies[subject.ns]) {
		p := m.policies[subject.ns][name]
		if !hasType(p, dir) || !matches(t, &p.Spec.PodSelector, m.podLabels[subject]) {
			continue
		}
		isolated = true
		if dir == networkingv1.PolicyTypeIngress {
			for _, r := range p.Spec.Ingress {
				if m.peersMatch(t, subject.ns, r.From, peer) && m.portsMatch(r.Ports, dst, tg) {
					return true
				}
			}
		} else {
			for _, r := range p.Spec.Egress {
				if m.peersMatch(t, subject.ns, r.To, peer) && m.portsMatch(r.Ports, dst, tg) {
					return true
				}
			}
		}
	}
	return !isolated
}

func hasType(p *networkingv1.NetworkPolicy, dir networkingv1.PolicyType) bool {
	for _, ty := range p.Spec.PolicyTypes {
		if ty == dir {
			return true
		}
	}
	return false
}

// peersMatch: no peer admits everyone; otherwise one peer must match.
func (m *model) peersMatch(t *testing.T, policyNS string, peers []networkingv1.NetworkPolicyPeer, p podRef) bool {
	if len(peers) == 0 {
		return true
	}
	for _, peer := range peers {
		switch {
		case peer.IPBlock != nil:
			ip := netip.MustParseAddr(m.ipOf(p.String()))
			if !netip.MustParsePrefix(peer.IPBlock.CIDR).Contains(ip) {
				continue
			}
			excepted := false
			for _, e := range peer.IPBlock.Except {
				excepted = excepted || netip.MustParsePrefix(e).Contains(ip)
			}
			if !excepted {
				return true
			}
		case peer.NamespaceSelector != nil:
			if matches(t, peer.NamespaceSelector, m.nsLabels[p.ns]) &&
				(peer.PodSelector == nil || matches(t, peer.PodSelector, m.podLabels[p])) {
				return true
			}
		case peer.PodSelector != nil:
			if p.ns == policyNS && matches(t, peer.PodSelector, m.podLabels[p]) {
				return true
			}
		}
	}
	return false
}

// portsMatch: no port admits every port; a named port resolves against the
// receiving pod's container ports of the same protocol.
func (m *model) portsMatch(ports []networkingv1.NetworkPolicyPort, dst podRef, tg target) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		if *p.Protocol != tg.proto {
			continue
		}
		switch {
		case p.Port == nil:
			return true
		case p.Port.StrVal != "":
			for _, cp := range m.ports {
				if cp.Name == p.Port.StrVal && cp.Protocol == tg.proto && cp.ContainerPort == tg.port {
					return true
				}
			}
		case p.EndPort != nil:
			if tg.port >= p.Port.IntVal && tg.port <= *p.EndPort {
				return true
			}
		case p.Port.IntVal == tg.port:
			return true
		}
	}
	return false
}

func matches(t *testing.T, s *metav1.LabelSelector, l map[string]string) bool {
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		t.Fatalf("selector %v: %v", s, err)
	}
	return sel.Matches(k8slabels.Set(l))
}

// TestCasesAgainstModel runs every policy case on the model: each expected
// matrix must be what the NetworkPolicy semantics give.
func TestCasesAgainstModel(t *testing.T) {
	names := map[string]bool{}
	for _, c := range policyCases() {
		if names[c.name] {
			t.Errorf("two cases named %s", c.name)
		}
		names[c.name] = true
		t.Run(c.name, func(t *testing.T) { c.run(t, newModel()) })
	}
}

// TestModelCatchesWrongExpectations: the model is not a rubber stamp.
func TestModelCatchesWrongExpectations(t *testing.T) {
	m := newModel()
	m.create(t, "x", ingressPolicy("x-a-allows-x-b", podLabel("a"), in(peers(fromPods(podLabel("b"))))))
	for _, tc := range []struct {
		name string
		want *reach
	}{
		{"forgot that other namespaces are denied", m.allow().set("x/*", "x/a", false).set("x/b", "x/a", true)},
		{"denied x/b too", m.allow().set("*", "x/a", false)},
		{"isolated egress as well", m.allow().set("*", "x/a", false).set("x/b", "x/a", true).set("x/a", "*", false)},
	} {
		got := m.matrix(t, tcp80)
		if len(tc.want.diff(got)) == 0 {
			t.Errorf("%s: the model agreed with a wrong expectation", tc.name)
		}
	}
	// A named port without a protocol is TCP: a UDP name then matches nothing.
	m2 := newModel()
	m2.create(t, "x", ingressPolicy("udp-name-as-tcp", podLabel("a"), in(nil, named("serve-80-udp"))))
	if m2.allowed(t, parsePodRef("y/a"), parsePodRef("x/a"), udp80) {
		t.Error("a named port with the protocol left unset (TCP) admitted UDP")
	}
}

// TestSteadyUpdatesKeepDenied: every update of the steady-traffic case keeps
// every pod but x/b out of x/a, on the model, so a leak seen in the lab is
// Seine's and not the case's.
func TestSteadyUpdatesKeepDenied(t *testing.T) {
	m := newModel()
	m.create(t, "x", steadyPolicy(fromPods(podLabel("b"))))
	closed := m.allow().set("*", "x/a", false).set("x/b", "x/a", true)
	for cycle := 0; cycle < 2; cycle++ {
		for _, u := range steadyUpdates(t, m) {
			u.do()
			for _, tg := range []target{tcp80, udp80} {
				got := m.matrix(t, tg)
				for _, bad := range closed.diff(got) {
					if bad.allow { // x/b may be cut off for a moment (the recreate)
						continue
					}
					t.Errorf("after %q (cycle %d) %s", u.name, cycle, bad)
				}
			}
		}
		// The cycle ends where it started.
		m.expect(t, "end of cycle", on(tcp80, closed), on(udp80, closed))
	}
}
