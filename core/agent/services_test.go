package agent

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"

	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/core/proxy"
	"github.com/seine-cni/seine/ovs/openflow"
)

func webService() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"},
			ExternalIPs: []string{"192.0.2.20"},
			Ports:       []corev1.ServicePort{{Name: "http", Port: 80, NodePort: 30080, Protocol: corev1.ProtocolTCP}}},
	}
}

func webSlice(ips ...string) *discoveryv1.EndpointSlice {
	pn, port, proto := "http", int32(8080), corev1.ProtocolTCP
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &pn, Port: &port, Protocol: &proto}},
	}
	for _, ip := range ips {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}})
	}
	return s
}

// groupBuckets counts the buckets of the switch's groups.
func (s *fakeSwitch) groupText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var lines []string
	for _, g := range s.groups {
		lines = append(lines, g.String())
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// The agent proxies Services: their flows and groups are installed with
// the node's in the first replay, follow endpoint changes, come back after
// ovs-vswitchd restarts, and go with the Service; the host routes the
// service CIDR and external IPs into OVS and redirects its own node-port
// connections.
func TestServices(t *testing.T) {
	w := newWorld(t, twoNodesSlice()...)
	w.cfg.Proxy.ServiceCIDRs = []string{"10.96.0.0/16"}
	ctx := context.Background()
	if _, err := w.kube.CoreV1().Services("default").Create(ctx, webService(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.kube.DiscoveryV1().EndpointSlices("default").Create(ctx, webSlice("10.244.1.5", "10.244.2.5"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	a, _ := w.start()
	waitReady(t, a)
	// Installed before ready, by the first replay.
	if !strings.Contains(w.sw.text(), "nw_dst=10.96.0.10,tp_dst=80") || strings.Count(w.sw.groupText(), "bucket=") != 2 {
		t.Fatalf("service not installed with the node's flows:\n%s\n%s", w.sw.text(), w.sw.groupText())
	}
	if w.sw.count(pipeline.CategoryService, pipeline.ServiceID("default/web")) == 0 {
		t.Error("no flow carries web's cookie")
	}
	poll(t, "service routes", func() (bool, string) {
		d := w.backend.FakeHostRules.Dump()
		return strings.Contains(d, "10.96.0.0/16 via 169.254.0.253") && strings.Contains(d, "192.0.2.20/32 via 169.254.0.253") &&
			strings.Contains(d, "169.254.0.252/32 via 169.254.0.253") &&
			// answers to what the bridge hands the host from 169.254.0.253
			// (endpoints outside the pod network) go back to the gateway
			strings.Contains(d, "route 169.254.0.253/32 dev "), d
	})
	if d := w.backend.FakeNodePorts.Dump(); d != "tcp/30080 -> 169.254.0.252, masquerade forwarded from 169.254.0.253" {
		t.Errorf("node ports: %s", d)
	}

	// An endpoint goes.
	if _, err := w.kube.DiscoveryV1().EndpointSlices("default").Update(ctx, webSlice("10.244.1.5"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "one bucket", func() (bool, string) {
		g := w.sw.groupText()
		return strings.Count(g, "bucket=") == 1 && !strings.Contains(g, "10.244.2.5"), g
	})

	// ClientIP affinity for the API's longest timeout (a day, beyond
	// OpenFlow's 16-bit idle_timeout): the endpoint's DNAT learns the
	// client's choice, without an idle timeout (the proxy sweeps those).
	if strings.Contains(w.sw.text(), "learn(") {
		t.Fatalf("learn flows without affinity:\n%s", w.sw.text())
	}
	sticky := webService()
	sticky.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	day := int32(86400)
	sticky.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: &day}}
	if _, err := w.kube.CoreV1().Services("default").Update(ctx, sticky, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "affinity learned by the endpoint's DNAT", func() (bool, string) {
		txt := w.sw.text()
		for _, l := range strings.Split(txt, "\n") {
			if strings.Contains(l, "table=43") && strings.Contains(l, "learn(table=41,priority=") &&
				strings.Contains(l, "nat(dst=10.244.1.5:8080)") && !strings.Contains(l, "idle_timeout") {
				return true, ""
			}
		}
		return false, txt
	})

	// Scaled to zero: the Service rejects (a packet-in through the reject
	// meter, answered with a TCP RST or ICMP unreachable), its group goes.
	if _, err := w.kube.DiscoveryV1().EndpointSlices("default").Update(ctx, webSlice(), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "reject without endpoints", func() (bool, string) {
		txt := w.sw.text()
		return strings.Contains(txt, "nw_dst=10.96.0.10,tp_dst=80 actions=controller(userdata=01,meter_id=1)") &&
			w.sw.groupText() == "", txt + "\n" + w.sw.groupText()
	})
	w.sw.mu.Lock()
	meter := w.sw.meters[pipeline.ServiceRejectMeter]
	w.sw.mu.Unlock()
	if meter == nil {
		t.Error("the reject meter is not installed")
	}
	// Back to one endpoint, without affinity.
	if _, err := w.kube.CoreV1().Services("default").Update(ctx, webService(), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.kube.DiscoveryV1().EndpointSlices("default").Update(ctx, webSlice("10.244.1.5"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "one bucket again", func() (bool, string) {
		g, txt := w.sw.groupText(), w.sw.text()
		return strings.Count(g, "bucket=") == 1 && !strings.Contains(txt, "controller(userdata=01") && !strings.Contains(txt, "learn("), g + "\n" + txt
	})

	// A learned affinity flow (round 0) outlives a full replay; the
	// service's flows move to the new round.
	learned := openflow.NewFlow(uint8(pipeline.SessionAffinity), 200).
		Cookie(uint64(pipeline.NewCookie(0, pipeline.CategoryAffinity, 42))).
		Match(openflow.NewMatch().IP().IPSrcAddr(netip.MustParseAddr("10.244.1.9")))
	if err := w.sw.BundleFlows(ctx, openflow.FlowAdd, []*openflow.Flow{learned}); err != nil {
		t.Fatal(err)
	}
	if err := w.sw.Do(ctx, func(fw FlowWriter) error {
		if err := a.lockFlows(ctx); err != nil {
			return err
		}
		defer a.unlockFlows()
		return a.replayFlows(ctx, fw)
	}); err != nil {
		t.Fatal(err)
	}
	if w.sw.count(pipeline.CategoryAffinity, 42) != 1 {
		t.Errorf("the learned flow did not survive the replay:\n%s", w.sw.text())
	}
	if rs := w.sw.rounds(); len(rs) != 2 || rs[0] != 0 {
		t.Errorf("rounds after the replay %v, want the learned flows' 0 and one round", rs)
	}

	// ovs-vswitchd restarts: groups and flows come back.
	if err := w.sw.restart(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(w.sw.text(), "nw_dst=10.96.0.10,tp_dst=80") || strings.Count(w.sw.groupText(), "bucket=") != 1 {
		t.Fatalf("after a vswitchd restart:\n%s\n%s", w.sw.text(), w.sw.groupText())
	}

	// The Service goes.
	if err := w.kube.CoreV1().Services("default").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "web's flows gone", func() (bool, string) {
		return w.sw.count(pipeline.CategoryService, pipeline.ServiceID("default/web")) == 0 && w.sw.groupText() == "",
			w.sw.text() + "\n" + w.sw.groupText()
	})
	poll(t, "web's routes gone", func() (bool, string) {
		d := w.backend.FakeHostRules.Dump()
		return !strings.Contains(d, "192.0.2.20") && strings.Contains(d, "10.96.0.0/16"), d
	})
	// No node port left; the masquerade of what the bridge hands the host
	// stays while the proxy runs (external IPs of later Services need it).
	if d := w.backend.FakeNodePorts.Dump(); d != "masquerade forwarded from 169.254.0.253" {
		t.Errorf("node ports after the Service went: %s", d)
	}
}

// In the kube-proxy mode the agent installs no service flow, routes only
// the service CIDRs to the gateway (the host's own connections to a
// cluster IP need a route before kube-proxy DNATs them) and tells the host
// rules they are kube-proxy's (traffic to them kube-proxy did not DNAT is
// left to its REJECT): Service traffic is the host's.
func TestKubeProxyMode(t *testing.T) {
	w := newWorld(t, twoNodesSlice()...)
	w.cfg.Proxy.Mode = ProxyModeKubeProxy
	w.cfg.Proxy.ServiceCIDRs = []string{"10.96.0.0/16"}
	ctx := context.Background()
	if _, err := w.kube.CoreV1().Services("default").Create(ctx, webService(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	a, _ := w.start()
	waitReady(t, a)
	if w.sw.count(pipeline.CategoryService, 0) != 0 || strings.Contains(w.sw.text(), "table=44") && strings.Contains(w.sw.text(), "nat(src=") {
		t.Errorf("service flows in the kube-proxy mode:\n%s", w.sw.text())
	}
	poll(t, "the service CIDR routed to the gateway", func() (bool, string) {
		d := w.backend.FakeHostRules.Dump()
		return strings.Contains(d, "route 10.96.0.0/16 via 169.254.0.253") && strings.Contains(d, "kube-proxy 10.96.0.0/16"), d
	})
	if d := w.backend.FakeHostRules.Dump(); strings.Contains(d, "192.0.2.20") {
		t.Errorf("an external IP routed in the kube-proxy mode (kube-proxy's):\n%s", d)
	}
	// Pod traffic to the service CIDR goes to the host unjudged (egress
	// policy judges it when the host sends it back DNATed).
	if !strings.Contains(w.sw.text(), "table=45, priority=64700,ip,reg0=0x3/0xf,nw_dst=10.96.0.0/16 actions=goto_table:60") {
		t.Errorf("no egress bypass for the service CIDR:\n%s", w.sw.text())
	}
}

// An agent told to follow ServiceCIDR objects by an apiserver that does
// not serve them (Kubernetes before 1.33) stops with an error naming the
// setting that fixes it, instead of waiting for an informer that never
// syncs.
func TestServiceCIDRAPIMissing(t *testing.T) {
	w := newWorld(t, twoNodesSlice()...)
	serveResources(w.kube, "networking.k8s.io/v1", "networkpolicies", "ingresses")
	a, err := New(Options{Config: w.cfg, Logger: testLogger(t), Kube: w.kube, OVSDB: w.db, Backend: w.backend, NewSwitch: w.sw.factory})
	if err != nil {
		t.Fatal(err)
	}
	noCNISocketUnderWine(a)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = a.Run(ctx)
	if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "proxy.serviceCIDRs") {
		t.Fatalf("Run = %v (context: %v), want an error naming proxy.serviceCIDRs before the deadline", err, ctx.Err())
	}

	// With the service CIDRs configured, the same apiserver is fine.
	w.cfg.Proxy.ServiceCIDRs = []string{"10.96.0.0/16"}
	_, stop := w.start()
	stop()
}

// TestServiceCachesKeepWhatTheProxyReads: the Service and EndpointSlice
// informers cache only what the proxy reads. At 10,000 Services and
// 100,000 endpoints the cached EndpointSlices were the largest part of the
// agent's heap, beside the tracker's own parsed copy of them: the cache now
// holds the parsed slice (proxy.Slice), and Services lose their
// annotations, managed fields and selector. The Service is still proxied
// from them.
func TestServiceCachesKeepWhatTheProxyReads(t *testing.T) {
	w := newWorld(t, twoNodesSlice()...)
	w.cfg.Proxy.ServiceCIDRs = []string{"10.96.0.0/16"}
	ctx := context.Background()
	svc := webService()
	svc.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat("x", 4096)}
	svc.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}}
	svc.Spec.Selector = map[string]string{"app": "web"}
	if _, err := w.kube.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sl := webSlice("10.244.1.5", "10.244.2.5")
	host, zone := "web-0", "zone-a"
	for i := range sl.Endpoints {
		sl.Endpoints[i].TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: "web-" + sl.Endpoints[i].Addresses[0], UID: "0123456789abcdef"}
		sl.Endpoints[i].Hostname, sl.Endpoints[i].Zone = &host, &zone
	}
	if _, err := w.kube.DiscoveryV1().EndpointSlices("default").Create(ctx, sl, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	a, _ := w.start()
	waitReady(t, a)
	if strings.Count(w.sw.groupText(), "bucket=") != 2 {
		t.Fatalf("web not installed with its 2 endpoints:\n%s", w.sw.groupText())
	}
	for _, o := range a.factory.Discovery().V1().EndpointSlices().Informer().GetStore().List() {
		if _, ok := o.(*discoveryv1.EndpointSlice); ok {
			t.Errorf("the EndpointSlice cache holds the API object %T, want the proxy's parsed slice", o)
		}
	}
	for _, o := range a.factory.Core().V1().Services().Informer().GetStore().List() {
		s, ok := o.(*corev1.Service)
		if !ok {
			t.Fatalf("service cache holds %T", o)
		}
		if len(s.Annotations) > 0 || len(s.ManagedFields) > 0 || len(s.Spec.Selector) > 0 {
			t.Errorf("cached Service %s keeps %d annotations, %d managed fields, selector %v", s.Name, len(s.Annotations), len(s.ManagedFields), s.Spec.Selector)
		}
		if s.Spec.ClusterIP != "10.96.0.10" || len(s.Spec.Ports) != 1 || s.Spec.Ports[0].NodePort != 30080 || len(s.Spec.ExternalIPs) != 1 {
			t.Errorf("cached Service %s lost what the proxy reads: %+v", s.Name, s.Spec)
		}
	}
}

// blockingFeed is a proxy whose Service handler waits for release.
type blockingFeed struct{ release chan struct{} }

func (f blockingFeed) UpdateService(*corev1.Service)  { <-f.release }
func (f blockingFeed) DeleteService(string, string)   {}
func (f blockingFeed) UpdateParsedSlice(*proxy.Slice) {}
func (f blockingFeed) DeleteParsedSlice(*proxy.Slice) {}

// TestProxyWaitsForItsHandlers: the agent primes the proxy (its first
// replay installs every Service) once the proxy's handlers have been
// handed the first lists, not once the informers' caches hold them. At
// 10,000 Services the handlers lagged the caches: the lab benchmark's cold
// start installed part of the Services in ordinary syncs after the replay
// (86 MB of them), the replay having deleted their previous flows.
func TestProxyWaitsForItsHandlers(t *testing.T) {
	kube := fake.NewClientset(webService(), webSlice("10.244.1.5"))
	f := informers.NewSharedInformerFactory(kube, 0)
	svcs, sls := f.Core().V1().Services().Informer(), f.Discovery().V1().EndpointSlices().Informer()
	feed := blockingFeed{release: make(chan struct{})}
	synced, err := feedProxy(svcs, sls, feed)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	f.Start(ctx.Done())
	defer func() { cancel(); f.Shutdown() }()
	if !cache.WaitForCacheSync(ctx.Done(), svcs.HasSynced, sls.HasSynced) {
		t.Fatal("caches never synced")
	}
	time.Sleep(100 * time.Millisecond)
	all := func() bool {
		for _, s := range synced {
			if !s() {
				return false
			}
		}
		return true
	}
	if all() {
		t.Error("the proxy's informers report synced while its Service handler has not returned")
	}
	close(feed.release)
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		t.Error("never synced after the handler returned")
	}
}
