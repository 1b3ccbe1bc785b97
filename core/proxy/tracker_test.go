package proxy

import (
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestServiceStates feeds Services and slices to a tracker on node-1 (zone
// a) and compares the desired state of ns/web with the expected text.
func TestServiceStates(t *testing.T) {
	web := func(mod func(*corev1.Service), ports ...string) *corev1.Service {
		if len(ports) == 0 {
			ports = []string{"http:80"}
		}
		s := svc("ns", "web", "10.96.0.10", ports...)
		if mod != nil {
			mod(s)
		}
		return s
	}
	nodePort := func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeNodePort
		s.Spec.Ports[0].NodePort = 30080
	}
	etpLocalLB := func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		s.Spec.Ports[0].NodePort = 30080
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Spec.HealthCheckNodePort = 31000
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.0.2.10"}}
	}
	http := []string{"http:8080"}
	cases := []struct {
		name   string
		svc    *corev1.Service
		slices []*discoveryv1.EndpointSlice
		want   string
	}{{
		name: "no slices: no endpoints",
		svc:  web(nil),
		want: "http/TCP 10.96.0.10:80 no-endpoints cluster=[]",
	}, {
		name: "ready endpoints only; sorted",
		svc:  web(nil),
		slices: []*discoveryv1.EndpointSlice{slice("ns", "web", "web-1", http,
			ep{addr: "10.244.2.5", node: "node-2"}, ep{addr: "10.244.1.5", node: "node-1"},
			ep{addr: "10.244.1.6", node: "node-1", state: "unready"})},
		want: "http/TCP 10.96.0.10:80 cluster=[10.244.1.5:8080 10.244.2.5:8080]",
	}, {
		name: "named target port resolved per slice, endpoints merged across slices",
		svc:  web(nil),
		slices: []*discoveryv1.EndpointSlice{
			slice("ns", "web", "web-1", http, ep{addr: "10.244.1.5", node: "node-1"}),
			slice("ns", "web", "web-2", []string{"http:9090"}, ep{addr: "10.244.2.5", node: "node-2"}),
		},
		want: "http/TCP 10.96.0.10:80 cluster=[10.244.1.5:8080 10.244.2.5:9090]",
	}, {
		name: "an address in two slices: the one not terminating wins",
		svc:  web(nil),
		slices: []*discoveryv1.EndpointSlice{
			slice("ns", "web", "a", http, ep{addr: "10.244.1.5", node: "node-1", state: "terminating"}),
			slice("ns", "web", "b", http, ep{addr: "10.244.1.5", node: "node-1"}),
		},
		want: "http/TCP 10.96.0.10:80 cluster=[10.244.1.5:8080]",
	}, {
		name: "multiple ports, protocols joined by name and protocol",
		svc:  web(nil, "dns:53/UDP", "dns:53/TCP"),
		slices: []*discoveryv1.EndpointSlice{slice("ns", "web", "w", []string{"dns:5353/UDP", "dns:5354/TCP"},
			ep{addr: "10.244.1.5", node: "node-1"})},
		want: "dns/TCP 10.96.0.10:53 cluster=[10.244.1.5:5354]\n  dns/UDP 10.96.0.10:53 cluster=[10.244.1.5:5353]",
	}, {
		name: "no ready endpoint: fall back to serving terminating ones",
		svc:  web(nil),
		slices: []*discoveryv1.EndpointSlice{slice("ns", "web", "w", http,
			ep{addr: "10.244.1.5", node: "node-1", state: "terminating"},
			ep{addr: "10.244.2.5", node: "node-2", state: "gone"},
			ep{addr: "10.244.2.6", node: "node-2", state: "unready"})},
		want: "http/TCP 10.96.0.10:80 cluster=[10.244.1.5:8080(terminating)]",
	}, {
		name: "only unready and non-serving: rejected",
		svc:  web(nil),
		slices: []*discoveryv1.EndpointSlice{slice("ns", "web", "w", http,
			ep{addr: "10.244.2.5", node: "node-2", state: "gone"},
			ep{addr: "10.244.2.6", node: "node-2", state: "unready"})},
		want: "http/TCP 10.96.0.10:80 no-endpoints cluster=[]",
	}, {
		name: "NodePort",
		svc:  web(nodePort),
		slices: []*discoveryv1.EndpointSlice{slice("ns", "web", "w", http,
			ep{addr: "10.244.2.5", node: "node-2"})},
		want: "http/TCP 10.96.0.10:80 nodePort=30080 cluster=[10.244.2.5:8080]",
	}, {
		name: "LoadBalancer with externalTrafficPolicy Local: local endpoints, health check port",
		svc:  web(etpLocalLB),
		slices: []*discoveryv1.EndpointSlice{slice("ns", "web", "w", http,
			ep{addr: "10.244.2.5", node: "node-2"}, ep{addr: "10.244.1.5", node: "node-1"})},
		want: "http/TCP 10.96.0.10:80 nodePort=30080 lb=[192.0.2.10] etp=Local hc=31000 cluster=[10.244.1.5:8080 10.244.2.5:8080] local=[10.244.1.5:8080]",
	}, {
		name: "externalTrafficPolicy Local without local endpoints: local empty, still has endpoints",
		svc:  web(etpLocalLB),
		slices: []*discoveryv1.EndpointSlice{slice("ns", "web", "w", http,
			ep{addr: "10.244.2.5", node: "node-2"})},
		want: "http/TCP 10.96.0.10:80 nodePort=30080 lb=[192.0.2.10] etp=Local hc=31000 cluster=[10.244.2.5:8080] local=[]",
	}, {
		name: "externalTrafficPolicy Local: falls back to local serving terminating endpoints",
		svc:  web(etpLocalLB),
		slices: []*discoveryv1.EndpointSlice{slice("ns", "web", "w", http,
			ep{addr: "10.244.2.5", node: "node-2"}, ep{addr: "10.244.1.5", node: "node-1", state: "terminating"})},
		want: "http/TCP 10.96.0.10:80 nodePort=30080 lb=[192.0.2.10] etp=Local hc=31000 cluster=[10.244.2.5:8080] local=[10.244.1.5:8080(terminating)]",
	}, {
		name: "externalTrafficPolicy Local on a ClusterIP Service without external IPs means nothing",
		svc:  web(func(s *corev1.Service) { s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal }),
		slices: []*discoveryv1.EndpointSlice{slice("ns", "web", "w", http,
			ep{addr: "10.244.2.5", node: "node-2"})},
		want: "http/TCP 10.96.0.10:80 cluster=[10.244.2.5:8080]",
	}, {
		name: "internalTrafficPolicy Local: no cluster endpoints at all",
		svc: web(func(s *corev1.Service) {
			s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal)
		}),
		slices: []*discoveryv1.EndpointSlice{slice("ns", "web", "w", http,
			ep{addr: "10.244.2.5", node: "node-2"}, ep{addr: "10.244.1.5", node: "node-1"})},
		want: "http/TCP 10.96.0.10:80 itp=Local local=[10.244.1.5:8080]",
	}, {
		name: "internalTrafficPolicy Local, endpoints elsewhere only: dropped, not rejected",
		svc: web(func(s *corev1.Service) {
			s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal)
		}),
		slices: []*discoveryv1.EndpointSlice{slice("ns", "web", "w", http,
			ep{addr: "10.244.2.5", node: "node-2"})},
		want: "http/TCP 10.96.0.10:80 itp=Local local=[]",
	}, {
		name: "zone hints: this node's zone",
		svc:  web(nil),
		slices: []*discoveryv1.EndpointSlice{slice("ns", "web", "w", http,
			ep{addr: "10.244.1.5", node: "node-1", zones: []string{"a"}},
			ep{addr: "10.244.2.5", node: "node-2", zones: []string{"b"}},
			ep{addr: "10.244.3.5", node: "node-3", zones: []string{"a"}})},
		want: "http/TCP 10.96.0.10:80 cluster=[10.244.1.5:8080 10.244.3.5:8080]",
	}, {
		name: "zone hints, one ready endpoint without: hints ignored",
		svc:  web(nil),
		slices: []*discoveryv1.EndpointSlice{slice("ns", "web", "w", http,
			ep{addr: "10.244.1.5", node: "node-1", zones: []string{"a"}},
			ep{addr: "10.244.2.5", node: "node-2"})},
		want: "http/TCP 10.96.0.10:80 cluster=[10.244.1.5:8080 10.244.2.5:8080]",
	}, {
		name: "zone hints, none for this zone: hints ignored",
		svc:  web(nil),
		slices: []*discoveryv1.EndpointSlice{slice("ns", "web", "w", http,
			ep{addr: "10.244.1.5", node: "node-1", zones: []string{"b"}},
			ep{addr: "10.244.2.5", node: "node-2", zones: []string{"c"}})},
		want: "http/TCP 10.96.0.10:80 cluster=[10.244.1.5:8080 10.244.2.5:8080]",
	}, {
		name: "node hints (PreferSameNode) beat zone hints",
		svc:  web(nil),
		slices: []*discoveryv1.EndpointSlice{slice("ns", "web", "w", http,
			ep{addr: "10.244.1.5", node: "node-1", zones: []string{"a"}, nodes: []string{"node-1"}},
			ep{addr: "10.244.3.5", node: "node-3", zones: []string{"a"}, nodes: []string{"node-3"}})},
		want: "http/TCP 10.96.0.10:80 cluster=[10.244.1.5:8080]",
	}, {
		name: "ClientIP affinity: default and explicit timeouts",
		svc: web(func(s *corev1.Service) {
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		}),
		want: "http/TCP 10.96.0.10:80 affinity=10800s no-endpoints cluster=[]",
	}, {
		name: "ClientIP affinity of a whole day",
		svc: web(func(s *corev1.Service) {
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr(int32(86400))}}
		}),
		want: "http/TCP 10.96.0.10:80 affinity=86400s no-endpoints cluster=[]",
	}, {
		name: "external IPs, load balancer IPs (Proxy mode and IPv6 ones left out), source ranges",
		svc: web(func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
			s.Spec.ExternalIPs = []string{"192.0.2.20", "2001:db8::1"}
			s.Spec.LoadBalancerSourceRanges = []string{" 198.51.100.0/24", "203.0.113.7/32", "2001:db8::/32"}
			proxyMode := corev1.LoadBalancerIPModeProxy
			s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{
				{IP: "192.0.2.11"}, {IP: "192.0.2.12", IPMode: &proxyMode}, {Hostname: "lb.example"}, {IP: "192.0.2.10"}}
		}),
		want: "http/TCP 10.96.0.10:80 externalIPs=[192.0.2.20] lb=[192.0.2.10 192.0.2.11] sourceRanges=[198.51.100.0/24 203.0.113.7/32] no-endpoints cluster=[]",
	}, {
		name: "a source range covering everything restricts nothing",
		svc: web(func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
			s.Spec.LoadBalancerSourceRanges = []string{"198.51.100.0/24", "0.0.0.0/0"}
			s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.0.2.10"}}
		}),
		want: "http/TCP 10.96.0.10:80 lb=[192.0.2.10] no-endpoints cluster=[]",
	}, {
		name: "IPv6 endpoints are the other family's",
		svc:  web(nil),
		slices: []*discoveryv1.EndpointSlice{func() *discoveryv1.EndpointSlice {
			s := slice("ns", "web", "w6", http, ep{addr: "fd00::5", node: "node-1"})
			s.AddressType = discoveryv1.AddressTypeIPv6
			return s
		}(), slice("ns", "web", "w4", http, ep{addr: "10.244.1.5", node: "node-1"})},
		want: "http/TCP 10.96.0.10:80 cluster=[10.244.1.5:8080]",
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr := newTracker(t, "node-1")
			tr.SetNodeLabels(map[string]string{corev1.LabelTopologyZone: "a"})
			tr.UpdateService(c.svc)
			for _, s := range c.slices {
				tr.UpdateSlice(s)
			}
			got := tr.Service("ns/web").String()
			if want := "ns/web\n  " + c.want; got != want {
				t.Errorf("got\n%s\nwant\n%s", got, want)
			}
		})
	}
}

func TestSkippedServices(t *testing.T) {
	withLabel := func(k, v string) *corev1.Service {
		s := svc("ns", "web", "10.96.0.10", ":80")
		s.Labels = map[string]string{k: v}
		return s
	}
	external := svc("ns", "web", "", ":80")
	external.Spec.Type, external.Spec.ExternalName = corev1.ServiceTypeExternalName, "example.com"
	headless := svc("ns", "web", "None", ":80")
	badAffinity := svc("ns", "web", "10.96.0.10", ":80")
	badAffinity.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	badAffinity.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr(int32(86401))}}
	cases := []struct {
		name      string
		proxyName string
		svc       *corev1.Service
		skipped   string // "" = proxied
	}{
		{"another proxy's", "", withLabel(LabelServiceProxyName, "other"), "label service.kubernetes.io/service-proxy-name=other"},
		{"another proxy's, we have a name", "seine", withLabel(LabelServiceProxyName, "other"), "label service.kubernetes.io/service-proxy-name=other"},
		{"ours by name", "seine", withLabel(LabelServiceProxyName, "seine"), ""},
		{"named but we have no name", "", withLabel(LabelServiceProxyName, "seine"), "label service.kubernetes.io/service-proxy-name=seine"},
		{"headless label", "", withLabel(LabelHeadless, ""), "label service.kubernetes.io/headless"},
		{"ExternalName", "", external, "type ExternalName"},
		{"clusterIP None", "", headless, "no cluster IP"},
		{"affinity beyond a day", "", badAffinity, "invalid: sessionAffinityConfig.clientIP.timeoutSeconds 86401: want 1..86400"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr, err := New(Config{NodeName: "node-1", ProxyName: c.proxyName})
			if err != nil {
				t.Fatal(err)
			}
			tr.UpdateService(c.svc)
			got := tr.Service("ns/web")
			if c.skipped == "" {
				if got == nil {
					t.Fatalf("not proxied: %s", tr.Skipped("ns/web"))
				}
				return
			}
			if got != nil {
				t.Fatalf("proxied: %s", got)
			}
			if why := tr.Skipped("ns/web"); why != c.skipped {
				t.Errorf("skipped because %q, want %q", why, c.skipped)
			}
		})
	}
	// A Service that loses the label is proxied again, with the endpoints
	// kept meanwhile.
	tr := newTracker(t, "node-1")
	tr.UpdateService(withLabel(LabelServiceProxyName, "other"))
	tr.UpdateSlice(slice("ns", "web", "w", []string{":8080"}, ep{addr: "10.244.1.5", node: "node-1"}))
	tr.UpdateService(svc("ns", "web", "10.96.0.10", ":80"))
	if got, want := tr.Service("ns/web").String(), "ns/web\n  /TCP 10.96.0.10:80 cluster=[10.244.1.5:8080]"; got != want {
		t.Errorf("after the label went: %s, want %s", got, want)
	}
}

// An EndpointSlice labelled service.kubernetes.io/headless is not the
// proxy's, as kube-proxy watches only slices without that label: a
// Service whose only slice takes it has no endpoints (the upstream spec
// "should implement service.kubernetes.io/headless" labels the slice of a
// selectorless Service and wants it unreachable), and has them again when
// the label goes.
func TestHeadlessSlicesAreNotProxied(t *testing.T) {
	tr := newTracker(t, "node-1")
	tr.UpdateService(svc("ns", "web", "10.96.0.10", ":80"))
	s := slice("ns", "web", "w", []string{":8080"}, ep{addr: "10.244.1.5", node: "node-1"})
	tr.UpdateSlice(s)
	const proxied = "ns/web\n  /TCP 10.96.0.10:80 cluster=[10.244.1.5:8080]"
	if got := tr.Service("ns/web").String(); got != proxied {
		t.Fatalf("before the label: %s, want %s", got, proxied)
	}
	tr.Changed()
	labelled := s.DeepCopy()
	labelled.Labels[LabelHeadless] = ""
	tr.UpdateSlice(labelled)
	if got := tr.Changed(); !slices.Equal(got, []string{"ns/web"}) {
		t.Errorf("changes after the label came: %v", got)
	}
	if got := tr.Service("ns/web").String(); !strings.Contains(got, "no-endpoints") {
		t.Errorf("with its only slice labelled headless: %s, want no endpoints", got)
	}
	tr.UpdateSlice(s)
	if got := tr.Service("ns/web").String(); got != proxied {
		t.Errorf("after the label went: %s, want %s", got, proxied)
	}
}

// TestChangedIsPerService checks the O(what changed) contract: an event
// marks only its own Service.
func TestChangedIsPerService(t *testing.T) {
	tr := newTracker(t, "node-1")
	for _, n := range []string{"a", "b", "c"} {
		tr.UpdateService(svc("ns", n, "10.96.0.1", ":80"))
	}
	if got := tr.Changed(); !slices.Equal(got, []string{"ns/a", "ns/b", "ns/c"}) {
		t.Fatalf("first changes %v", got)
	}
	if got := tr.Changed(); len(got) != 0 {
		t.Fatalf("changes again %v", got)
	}
	tr.UpdateSlice(slice("ns", "b", "b-1", []string{":8080"}, ep{addr: "10.244.1.5"}))
	tr.UpdateSlice(slice("ns", "", "orphan", []string{":8080"}, ep{addr: "10.244.1.6"}))
	if got := tr.Changed(); !slices.Equal(got, []string{"ns/b"}) {
		t.Fatalf("after a slice of b: %v", got)
	}
	tr.DeleteService("ns", "c")
	tr.Retry("ns/a")
	if got := tr.Changed(); !slices.Equal(got, []string{"ns/a", "ns/c"}) {
		t.Fatalf("after deleting c and retrying a: %v", got)
	}
	if s := tr.Service("ns/c"); s != nil {
		t.Errorf("deleted service: %s", s)
	}
	// A new zone re-evaluates every Service, an unchanged one nothing.
	tr.SetNodeLabels(map[string]string{corev1.LabelTopologyZone: "z"})
	if got := tr.Changed(); !slices.Equal(got, []string{"ns/a", "ns/b"}) {
		t.Fatalf("after a zone change: %v", got)
	}
	tr.SetNodeLabels(map[string]string{corev1.LabelTopologyZone: "z", "other": "x"})
	if got := tr.Pending(); got != 0 {
		t.Fatalf("%d changes after an unrelated label", got)
	}
	if got := tr.Keys(); !slices.Equal(got, []string{"ns/a", "ns/b"}) {
		t.Errorf("keys %v", got)
	}
	// Deleting the last slice leaves the Service without endpoints.
	tr.DeleteSlice(slice("ns", "b", "b-1", nil))
	if got := tr.Service("ns/b").String(); !strings.Contains(got, "no-endpoints") {
		t.Errorf("after the slice went: %s", got)
	}
}

func TestTriggerTimes(t *testing.T) {
	tr := newTracker(t, "node-1")
	tr.UpdateService(svc("ns", "web", "10.96.0.10", ":80"))
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 123000000, time.UTC)
	s := slice("ns", "web", "w", []string{":8080"}, ep{addr: "10.244.1.5"})
	s.Annotations = map[string]string{corev1.EndpointsLastChangeTriggerTime: t0.Format(time.RFC3339Nano)}
	tr.UpdateSlice(s)
	bad := s.DeepCopy()
	bad.Annotations[corev1.EndpointsLastChangeTriggerTime] = "yesterday"
	tr.UpdateSlice(bad)
	deleting := s.DeepCopy()
	deleting.DeletionTimestamp = &metav1.Time{Time: t0}
	tr.UpdateSlice(deleting)
	got := tr.TriggerTimes("ns/web")
	if len(got) != 1 || !got[0].Equal(t0) {
		t.Fatalf("trigger times %v, want [%v]", got, t0)
	}
	if got := tr.TriggerTimes("ns/web"); len(got) != 0 {
		t.Errorf("trigger times kept after taking them: %v", got)
	}
}

func TestStaleUDP(t *testing.T) {
	mk := func(mod func(*corev1.Service), eps ...ep) *Service {
		tr := newTracker(t, "node-1")
		s := svc("ns", "dns", "10.96.0.10", "dns:53/UDP", "dns-tcp:53/TCP")
		s.Spec.Type = corev1.ServiceTypeNodePort
		s.Spec.Ports[0].NodePort = 30053
		s.Spec.ExternalIPs = []string{"192.0.2.20"}
		if mod != nil {
			mod(s)
		}
		tr.UpdateService(s)
		tr.UpdateSlice(slice("ns", "dns", "d", []string{"dns:5353/UDP", "dns-tcp:5353/TCP"}, eps...))
		return tr.Service("ns/dns")
	}
	two := mk(nil, ep{addr: "10.244.1.5"}, ep{addr: "10.244.2.5"})
	one := mk(nil, ep{addr: "10.244.1.5"})
	render := func(s []StaleUDP) string {
		var out []string
		for _, x := range s {
			out = append(out, x.String())
		}
		return strings.Join(out, "; ")
	}
	cases := []struct {
		name     string
		old, new *Service
		want     string
	}{
		{"first endpoint", mk(nil), one, "udp 10.96.0.10:53 -> *; udp 192.0.2.20:53 -> *; udp *:30053 -> *"},
		{"last endpoint removed", one, mk(nil), "udp 10.96.0.10:53 -> 10.244.1.5:5353; udp 192.0.2.20:53 -> 10.244.1.5:5353; udp *:30053 -> 10.244.1.5:5353"},
		{"endpoint removed", two, one, "udp 10.96.0.10:53 -> 10.244.2.5:5353; udp 192.0.2.20:53 -> 10.244.2.5:5353; udp *:30053 -> 10.244.2.5:5353"},
		{"endpoint added", one, two, ""},
		{"endpoint terminating but serving keeps its flows", two,
			mk(nil, ep{addr: "10.244.1.5"}, ep{addr: "10.244.2.5", state: "terminating"}), ""},
		{"endpoint unready", two, mk(nil, ep{addr: "10.244.1.5"}, ep{addr: "10.244.2.5", state: "unready"}),
			"udp 10.96.0.10:53 -> 10.244.2.5:5353; udp 192.0.2.20:53 -> 10.244.2.5:5353; udp *:30053 -> 10.244.2.5:5353"},
		{"service deleted", one, nil, "udp 10.96.0.10:53 -> *; udp 192.0.2.20:53 -> *; udp *:30053 -> *"},
		{"external IP and node port changed", one, mk(func(s *corev1.Service) {
			s.Spec.ExternalIPs = nil
			s.Spec.Ports[0].NodePort = 30054
		}, ep{addr: "10.244.1.5"}), "udp 192.0.2.20:53 -> *; udp *:30053 -> *; udp *:30054 -> *"},
		{"new service", nil, one, "udp 10.96.0.10:53 -> *; udp 192.0.2.20:53 -> *; udp *:30053 -> *"},
		{"new service without endpoints", nil, mk(nil), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := render(StaleUDPEntries(c.old, c.new)); got != c.want {
				t.Errorf("got  %s\nwant %s", got, c.want)
			}
		})
	}
}

func TestEqual(t *testing.T) {
	a := newTracker(t, "node-1")
	a.UpdateService(svc("ns", "web", "10.96.0.10", ":80"))
	a.UpdateSlice(slice("ns", "web", "w", []string{":8080"}, ep{addr: "10.244.1.5", node: "node-2", zones: []string{"x"}}))
	s1 := a.Service("ns/web")
	if !Equal(s1, a.Service("ns/web")) {
		t.Error("the same state is not equal to itself")
	}
	a.UpdateSlice(slice("ns", "web", "w", []string{":8080"}, ep{addr: "10.244.1.5", node: "node-1"}))
	if Equal(s1, a.Service("ns/web")) {
		t.Error("an endpoint that became local is not a change")
	}
	if !Equal(nil, nil) || Equal(s1, nil) {
		t.Error("nil handling")
	}
}

// TestEndpointSize: an Endpoint stays 56 bytes (100,000 of them in the
// tracker and as many in the installed Services at 10,000 Services); it
// was 96 with two hint slices.
func TestEndpointSize(t *testing.T) {
	if n := unsafe.Sizeof(Endpoint{}); n > 56 {
		t.Errorf("Endpoint is %d bytes, want at most 56", n)
	}
}

// TestParsedSliceIsKept: the tracker keeps the parsed slice it is given
// (the agent's informer cache holds the same value), and a slice of the
// other family adds no endpoints.
func TestParsedSliceIsKept(t *testing.T) {
	tr, _ := New(Config{NodeName: "node-1"})
	tr.UpdateService(svc("ns", "web", "10.96.0.10", "http:80"))
	s := ParseSlice(slice("ns", "web", "web-1", []string{"http:8080"}, ep{addr: "10.0.0.1", node: "node-1"}))
	tr.UpdateParsedSlice(s)
	if l := tr.slices["ns/web"]; len(l) != 1 || l[0] != s {
		t.Error("the tracker keeps a copy of the parsed slice, not the slice")
	}
	v6 := slice("ns", "web", "web-2", []string{"http:8080"}, ep{addr: "fd00::1", node: "node-1"})
	v6.AddressType = "IPv6"
	tr.UpdateSlice(v6)
	got := tr.Service("ns/web")
	if got == nil || len(got.Ports[0].ClusterEndpoints) != 1 {
		t.Fatalf("web: %s", got)
	}
	if e := got.Ports[0].ClusterEndpoints[0]; e.String() != "10.0.0.1:8080" || !e.Local {
		t.Errorf("web's endpoint %s local=%v, want 10.0.0.1:8080 on this node", e, e.Local)
	}
	if c, ok := s.DeepCopyObject().(*Slice); !ok || c == s || len(c.Endpoints) != 1 || c.Service != "web" {
		t.Errorf("DeepCopyObject: %#v", c)
	}
}

// TestSlicesOfOneService: slices come and go in any order; the Service has
// the endpoints of those that remain.
func TestSlicesOfOneService(t *testing.T) {
	tr, _ := New(Config{NodeName: "node-1"})
	tr.UpdateService(svc("ns", "web", "10.96.0.10", "http:80"))
	addr := map[string]string{"web-a": "10.0.0.1", "web-b": "10.0.0.2", "web-c": "10.0.0.3"}
	for _, n := range []string{"web-b", "web-a", "web-c"} {
		tr.UpdateSlice(slice("ns", "web", n, []string{"http:8080"}, ep{addr: addr[n], node: "node-2"}))
	}
	tr.UpdateSlice(slice("ns", "web", "web-b", []string{"http:8080"}, ep{addr: "10.0.0.4", node: "node-2"}))
	if got := endpointList(tr.Service("ns/web").Ports[0].ClusterEndpoints); got != "[10.0.0.1:8080 10.0.0.3:8080 10.0.0.4:8080]" {
		t.Errorf("three slices, b replaced: %s", got)
	}
	tr.DeleteSlice(slice("ns", "web", "web-a", nil))
	if got := endpointList(tr.Service("ns/web").Ports[0].ClusterEndpoints); got != "[10.0.0.3:8080 10.0.0.4:8080]" {
		t.Errorf("a deleted: %s", got)
	}
	tr.DeleteSlice(slice("ns", "web", "web-b", nil))
	tr.DeleteSlice(slice("ns", "web", "web-c", nil))
	if _, ok := tr.slices["ns/web"]; ok {
		t.Error("web's slices stay after the last was deleted")
	}
	if got := tr.Service("ns/web"); got == nil || len(got.Ports[0].ClusterEndpoints) != 0 || got.Ports[0].HasEndpoints {
		t.Errorf("web without slices: %s", got)
	}
}
