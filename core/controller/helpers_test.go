package controller

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
)

type testEnv struct {
	t      *testing.T
	c      *Controller
	client *fake.Clientset
}

// start runs a controller over a fake clientset holding objs and waits
// until it has computed everything.
func start(t *testing.T, objs ...runtime.Object) *testEnv {
	t.Helper()
	return startWith(t, nil, objs...)
}

// startWith is start with a hook that may register more informers (of
// other factories it starts with ctx) before the controller runs.
func startWith(t *testing.T, more func(ctx context.Context, c *Controller), objs ...runtime.Object) *testEnv {
	t.Helper()
	client := fake.NewSimpleClientset(objs...)
	factory := informers.NewSharedInformerFactory(client, 0)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := New(factory, log)
	if err != nil {
		t.Fatalf("new controller: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if more != nil {
		more(ctx, c)
	}
	done := make(chan error, 1)
	factory.Start(ctx.Done())
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		factory.Shutdown()
	})
	e := &testEnv{t: t, c: c, client: client}
	e.settle()
	return e
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Logf("%s", strings.TrimSpace(string(b)))
	return len(b), nil
}

// settle waits until the informers have delivered the client's state and
// the controller is idle: the store versions must stay put across two idle
// observations, since informer events arrive asynchronously.
func (e *testEnv) settle() {
	e.t.Helper()
	var last [3]uint64
	stable := 0
	err := wait.PollUntilContextTimeout(context.Background(), 5*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		if !e.c.Idle() {
			stable = 0
			return false, nil
		}
		v := [3]uint64{e.c.AppliedToGroups.Version(), e.c.AddressGroups.Version(), e.c.NetworkPolicies.Version()}
		if v == last {
			stable++
		} else {
			stable, last = 0, v
		}
		return stable >= 4, nil
	})
	if err != nil {
		e.t.Fatalf("controller did not settle: %v", err)
	}
}

// waitFor polls until the dump equals want, and fails with a diff otherwise.
func (e *testEnv) waitFor(want string) {
	e.t.Helper()
	want = strings.TrimSpace(want)
	var got string
	err := wait.PollUntilContextTimeout(context.Background(), 5*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		got = strings.TrimSpace(e.dump())
		return e.c.Idle() && got == want, nil
	})
	if err != nil {
		e.t.Fatalf("state:\n%s\n\nwant:\n%s", got, want)
	}
}

// dump renders the three stores as sorted text, naming groups by their
// normalized selectors so expectations are readable.
func (e *testEnv) dump() string {
	c := e.c
	c.mu.Lock()
	names := map[string]string{}
	for n, g := range c.atgs {
		names[n] = "{" + g.sel.normalized() + "}"
	}
	for n, g := range c.ags {
		names[n] = "{" + g.sel.normalized() + "}"
	}
	c.mu.Unlock()
	name := func(n string) string {
		if s, ok := names[n]; ok {
			return s
		}
		return "?" + n
	}
	var lines []string
	for n, it := range c.AppliedToGroups.List("") {
		lines = append(lines, fmt.Sprintf("atg %s members=%s span=%v", name(n), members(it.Object.Members), it.Span.Nodes()))
	}
	for n, it := range c.AddressGroups.List("") {
		lines = append(lines, fmt.Sprintf("ag %s members=%s span=%v", name(n), members(it.Object.Members), it.Span.Nodes()))
	}
	for _, it := range c.NetworkPolicies.List("") {
		p := it.Object
		var atgs []string
		for _, n := range p.AppliedToGroups {
			atgs = append(atgs, name(n))
		}
		s := fmt.Sprintf("np %s/%s types=%v atg=%v span=%v", p.SourceRef.Namespace, p.SourceRef.Name, p.PolicyTypes, atgs, it.Span.Nodes())
		if t := p.SourceRef.Type; t == controlplane.SeineClusterNetworkPolicy || t == controlplane.UpstreamClusterNetworkPolicy || t == controlplane.SeineNetworkPolicy {
			kind, name := "cnp", p.SourceRef.Name
			switch t {
			case controlplane.UpstreamClusterNetworkPolicy:
				kind = "upstream-cnp"
			case controlplane.SeineNetworkPolicy:
				kind, name = "snp", p.SourceRef.Namespace+"/"+name
			}
			s = fmt.Sprintf("%s %s types=%v atg=%v span=%v", kind, name, p.PolicyTypes, atgs, it.Span.Nodes())
			if p.TierPriority != nil {
				s += fmt.Sprintf(" tier=%s/%d", p.Tier, *p.TierPriority)
			}
			if p.Priority != nil {
				s += fmt.Sprintf(" priority=%g", *p.Priority)
			}
			if p.TranslationError != "" {
				s += " error=" + p.TranslationError
			}
		}
		for _, r := range p.Rules {
			peer := r.From
			if r.Direction == controlplane.DirectionOut {
				peer = r.To
			}
			var ps []string
			for _, n := range peer.AddressGroups {
				ps = append(ps, name(n))
			}
			for _, b := range peer.IPBlocks {
				ps = append(ps, ipNetString(b.CIDR))
				for _, x := range b.Except {
					ps = append(ps, "except:"+ipNetString(x))
				}
			}
			for _, d := range peer.DomainNames {
				ps = append(ps, "fqdn:"+d)
			}
			var svcs []string
			for _, sv := range r.Services {
				x := string(sv.Protocol)
				if sv.Port != nil {
					x += "/" + sv.Port.String()
				}
				if sv.EndPort != nil {
					x += fmt.Sprintf("-%d", *sv.EndPort)
				}
				svcs = append(svcs, x)
			}
			s += fmt.Sprintf("\n  %s peers=%v services=%v priority=%d", r.Direction, ps, svcs, r.Priority)
			if r.Action != nil {
				s += fmt.Sprintf(" action=%s", *r.Action)
			}
			if r.Name != "" {
				s += " name=" + r.Name
			}
			if r.EnableLogging {
				s += " log"
			}
			if len(r.AppliedToGroups) > 0 {
				var rs []string
				for _, n := range r.AppliedToGroups {
					rs = append(rs, name(n))
				}
				s += fmt.Sprintf(" appliedTo=%v", rs)
			}
		}
		lines = append(lines, s)
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func ipNetString(n controlplane.IPNet) string {
	a, _ := netip.AddrFromSlice(n.IP)
	return netip.PrefixFrom(a, int(n.PrefixLength)).String()
}

func members(ms []controlplane.GroupMember) string {
	var out []string
	for _, m := range ms {
		s := m.Pod.Namespace + "/" + m.Pod.Name + "@" + m.NodeName
		if m.Node != "" {
			s = "node:" + m.Node
		}
		for _, ip := range m.IPs {
			a, _ := netip.AddrFromSlice(ip)
			s += "," + a.String()
		}
		for _, p := range m.NamedPorts {
			s += fmt.Sprintf(",%s=%s/%d", p.Name, p.Protocol, p.Port)
		}
		out = append(out, s)
	}
	return "[" + strings.Join(out, " ") + "]"
}

func ns(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func pod(namespace, name, node, ip string, labels map[string]string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
	}
	if ip != "" {
		p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	}
	return p
}

func sel(kv ...string) *metav1.LabelSelector {
	s := &metav1.LabelSelector{MatchLabels: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func policy(namespace, name string, podSel *metav1.LabelSelector, ptypes []networkingv1.PolicyType) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, UID: types.UID(namespace + "-" + name)},
		Spec:       networkingv1.NetworkPolicySpec{PodSelector: *podSel, PolicyTypes: ptypes},
	}
}

func port(p intstr.IntOrString, proto corev1.Protocol) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Port: &p, Protocol: &proto}
}

type runtimeObject = runtime.Object
