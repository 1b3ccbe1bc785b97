package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/seine-cni/seine/core/agent/proxier"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/core/proxy"
	"github.com/seine-cni/seine/ovs/openflow"
	"github.com/seine-cni/seine/platform"
)

// setupProxy creates the service proxy and its informers (Services,
// EndpointSlices and, without configured service CIDRs, ServiceCIDRs).
func (a *Agent) setupProxy(reg prometheus.Registerer) error {
	m, err := proxier.NewMetrics(reg)
	if err != nil {
		return fmt.Errorf("proxy metrics: %w", err)
	}
	a.healthChecks = proxier.NewHealthChecks(a.log.With("component", "proxy-healthcheck"), nil)
	pc, err := proxier.New(proxier.Config{
		NodeName: a.cfg.NodeName, ProxyName: a.cfg.Proxy.ServiceProxyName,
		Node: svcNode{a}, Logger: a.log.With("component", "proxy"),
		Conntrack: ctFlusher{a}, Metrics: m, HealthChecks: a.healthChecks,
		Installed: a.poke,
	})
	if err != nil {
		return err
	}
	a.proxy = pc
	svcs := a.factory.Core().V1().Services().Informer()
	slices_ := a.factory.Discovery().V1().EndpointSlices().Informer()
	// The caches keep only what the proxy (and flow export) read: at
	// 10,000 Services and 100,000 endpoints the API's EndpointSlices were
	// the largest part of the agent's heap, beside the tracker's own
	// parsed copy of the same endpoints.
	if err := svcs.SetTransform(trimService); err != nil {
		return fmt.Errorf("service informer: %w", err)
	}
	if err := slices_.SetTransform(parseSlice); err != nil {
		return fmt.Errorf("endpointslice informer: %w", err)
	}
	synced, err := feedProxy(svcs, slices_, pc)
	if err != nil {
		return err
	}
	a.proxySynced = append(a.proxySynced, synced...)
	return nil
}

// proxyFeed is what the informers feed: the proxy controller.
type proxyFeed interface {
	UpdateService(*corev1.Service)
	DeleteService(namespace, name string)
	UpdateParsedSlice(*proxy.Slice)
	DeleteParsedSlice(*proxy.Slice)
}

// feedProxy adds pc's handlers to the Service and EndpointSlice informers.
// The returned funcs report that the handlers have been handed every
// object of the informers' first lists: the proxy is primed after them.
func feedProxy(svcs, slices_ cache.SharedIndexInformer, pc proxyFeed) ([]cache.InformerSynced, error) {
	// The registrations' HasSynced, not the informers': a cache holds
	// the first list before its handlers have seen it (with thousands of
	// objects, long before).
	sr, err := svcs.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { withService(o, pc.UpdateService) },
		UpdateFunc: func(_, o any) { withService(o, pc.UpdateService) },
		DeleteFunc: func(o any) {
			if s, ok := tombstone(o).(*corev1.Service); ok {
				pc.DeleteService(s.Namespace, s.Name)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("service informer: %w", err)
	}
	er, err := slices_.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { withSlice(o, pc.UpdateParsedSlice) },
		UpdateFunc: func(_, o any) { withSlice(o, pc.UpdateParsedSlice) },
		DeleteFunc: func(o any) { withSlice(tombstone(o), pc.DeleteParsedSlice) },
	})
	if err != nil {
		return nil, fmt.Errorf("endpointslice informer: %w", err)
	}
	return []cache.InformerSynced{sr.HasSynced, er.HasSynced}, nil
}

// watchServiceCIDRs follows the cluster's ServiceCIDR objects when the
// configuration names no service CIDRs (both proxy modes route or skip
// them).
func (a *Agent) watchServiceCIDRs() error {
	if len(a.cfg.Proxy.ServiceCIDRs) > 0 {
		return nil
	}
	inf := a.factory.Networking().V1().ServiceCIDRs()
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { a.poke() }, UpdateFunc: func(any, any) { a.poke() }, DeleteFunc: func(any) { a.poke() },
	}); err != nil {
		return fmt.Errorf("servicecidr informer: %w", err)
	}
	a.serviceCIDRLister = inf.Lister()
	a.proxySynced = append(a.proxySynced, inf.Informer().HasSynced)
	return nil
}

// errNoServiceCIDRAPI: the agent follows ServiceCIDR objects and the
// apiserver does not serve them.
var errNoServiceCIDRAPI = errors.New("the kube-apiserver serves no networking.k8s.io/v1 ServiceCIDRs (Kubernetes before 1.33): set proxy.serviceCIDRs in the agent's configuration")

// requireServiceCIDRAPI checks, when the agent follows ServiceCIDR
// objects, that the apiserver serves them: on one that does not, their
// informer would never sync and the agent would wait for it forever. A
// discovery that fails is retried; only a definite "not served" stops the
// agent.
func (a *Agent) requireServiceCIDRAPI(ctx context.Context) error {
	if a.serviceCIDRLister == nil {
		return nil
	}
	var served bool
	err := retry(ctx, a.log, "discover networking.k8s.io/v1", func(context.Context) error {
		l, err := a.kube.Discovery().ServerResourcesForGroupVersion(networkingv1.SchemeGroupVersion.String())
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		served = slices.ContainsFunc(l.APIResources, func(r metav1.APIResource) bool { return r.Name == "servicecidrs" })
		return nil
	})
	if err != nil {
		return err
	}
	if !served {
		return errNoServiceCIDRAPI
	}
	return nil
}

// kubeProxyServiceCIDRs are the service CIDRs the pipeline needs: in the
// kube-proxy mode only (Seine's proxy matches the Services themselves).
func (a *Agent) kubeProxyServiceCIDRs() []netip.Prefix {
	if a.proxy != nil {
		return nil
	}
	return a.serviceCIDRs()
}

func tombstone(o any) any {
	if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
		return t.Obj
	}
	return o
}

func withService(o any, fn func(*corev1.Service)) {
	if s, ok := o.(*corev1.Service); ok {
		fn(s)
	}
}

func withSlice(o any, fn func(*proxy.Slice)) {
	if s, ok := o.(*proxy.Slice); ok {
		fn(s)
	}
}

// parseSlice is the EndpointSlice informer's transform: the cache and the
// proxy's tracker keep one parsed copy of each slice (proxy.ParseSlice).
func parseSlice(o any) (any, error) {
	if s, ok := o.(*discoveryv1.EndpointSlice); ok {
		return proxy.ParseSlice(s), nil
	}
	return o, nil
}

// trimService is the Service informer's transform: the fields the proxy
// (core/proxy parseService, skipReason) and flow export (cluster IPs) read.
// Annotations (kubectl's last-applied copy of the whole object), managed
// fields, the selector and the status' conditions go.
func trimService(o any) (any, error) {
	s, ok := o.(*corev1.Service)
	if !ok {
		return o, nil
	}
	t := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name, UID: s.UID,
			ResourceVersion: s.ResourceVersion, DeletionTimestamp: s.DeletionTimestamp, Labels: s.Labels},
		Spec: s.Spec,
	}
	t.Spec.Selector = nil
	t.Status.LoadBalancer = s.Status.LoadBalancer
	return t, nil
}

// serviceCIDRs are the service address ranges routed into OVS: the
// configured ones, else those of the cluster's ServiceCIDR objects.
func (a *Agent) serviceCIDRs() []netip.Prefix {
	if cidrs, _ := a.cfg.serviceCIDRs(); len(cidrs) > 0 || a.serviceCIDRLister == nil {
		return cidrs
	}
	objs, err := a.serviceCIDRLister.List(everything)
	if err != nil {
		a.log.Error("list servicecidrs", "err", err)
		return nil
	}
	var out []netip.Prefix
	for _, o := range objs {
		out = append(out, serviceCIDRsOf(o)...)
	}
	slices.SortFunc(out, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
	return slices.Compact(out)
}

func serviceCIDRsOf(o *networkingv1.ServiceCIDR) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range o.Spec.CIDRs {
		if p, err := netip.ParsePrefix(s); err == nil && p.Addr().Is4() {
			out = append(out, p.Masked())
		}
	}
	return out
}

// proxyHostState adds what the proxy needs from the host's routes to hs:
// the service CIDRs, the Services' external and load-balancer IPs and the
// node-port target, routed into OVS through the gateway. It returns the
// node ports whose host connections the backend redirects there.
//
// In the kube-proxy mode only the service CIDRs are routed there: the
// host's own connection to a cluster IP needs a route before kube-proxy's
// OUTPUT DNAT rewrites it (a node without a default route otherwise fails
// with "network is unreachable"); once DNATed the packet follows the
// endpoint's route, so the gateway route only decides the source address.
func (a *Agent) proxyHostState(hs *platform.HostState) platform.NodePortState {
	var nps platform.NodePortState
	var hostRoutes []platform.ServiceRoute
	routes := map[netip.Prefix]bool{}
	for _, p := range a.serviceCIDRs() {
		routes[p] = true
	}
	if a.proxy == nil {
		if a.cfg.Proxy.Mode == ProxyModeKubeProxy {
			hs.KubeProxyCIDRs = slices.Collect(maps.Keys(routes))
			slices.SortFunc(hs.KubeProxyCIDRs, comparePrefix)
			hs.ServiceRoutes = serviceRoutes(routes)
			if len(hs.ServiceRoutes) > 0 {
				hs.ServiceNextHopMAC = pipeline.ServiceNextHopMAC
			}
		}
		return nps
	}
	hs.ServiceNextHopMAC = pipeline.ServiceNextHopMAC
	// The host's own service connections (every topology) and outside
	// clients' (bridged uplink) to endpoints outside the pod network reach
	// the host from ServiceNextHopIP (pipeline, ServiceSNAT): its answers
	// go back through the gateway (the neighbour entry of the other service
	// routes gives it the MAC), and what it forwards to other nodes is
	// masqueraded.
	hostRoutes = append(hostRoutes, platform.ServiceRoute{CIDR: netip.PrefixFrom(pipeline.ServiceNextHopIP, 32)})
	nps.Forwarded = pipeline.ServiceNextHopIP
	// The proxy counts them as Services come and go: this runs after every
	// service change and reads no Service.
	ips, ports := a.proxy.HostAddresses()
	for _, ip := range ips {
		routes[netip.PrefixFrom(ip, 32)] = true
	}
	if len(ports) > 0 {
		routes[netip.PrefixFrom(pipeline.NodePortVirtualIP, 32)] = true
		nps.Target = pipeline.NodePortVirtualIP
		for _, np := range ports {
			nps.Ports = append(nps.Ports, platform.NodePort{Protocol: np.Protocol, Port: np.Port})
		}
	}
	hs.ServiceRoutes = append(serviceRoutes(routes), hostRoutes...)
	return nps
}

// serviceRoutes routes the prefixes to the service next hop, sorted.
func serviceRoutes(routes map[netip.Prefix]bool) []platform.ServiceRoute {
	var cidrs []netip.Prefix
	for p := range routes {
		cidrs = append(cidrs, p)
	}
	slices.SortFunc(cidrs, comparePrefix)
	var out []platform.ServiceRoute
	for _, p := range cidrs {
		out = append(out, platform.ServiceRoute{CIDR: p, NextHop: pipeline.ServiceNextHopIP})
	}
	return out
}

// syncNodePorts redirects the host's own node-port connections, when the
// backend can.
func (a *Agent) syncNodePorts(ctx context.Context, nps platform.NodePortState) error {
	r, ok := a.backend.(platform.NodePortRedirector)
	if !ok {
		if (len(nps.Ports) > 0 || len(nps.HostPorts) > 0) && !a.noNodePortsLogged {
			a.noNodePortsLogged = true
			a.log.Warn("this backend cannot redirect the host's own connections to its node ports and pods' host ports",
				"err", platform.ErrNotSupported)
		}
		return nil
	}
	return r.SyncNodePorts(ctx, nps)
}

// svcNode is the agent as the proxy controller sees it.
type svcNode struct{ a *Agent }

// Install runs fn on the live connection under the flow lock, so service
// changes and full replays (which include the Services) never interleave,
// with the node's configuration and the round its flows carry.
func (n svcNode) Install(ctx context.Context, fn func(proxier.Writer, *pipeline.NodeConfig, pipeline.Round) error) error {
	a := n.a
	return a.doLocked(ctx, a.sw.Do, func(w FlowWriter, node *pipeline.NodeConfig, round pipeline.Round) error {
		pw, ok := w.(proxier.Writer)
		if !ok {
			return fmt.Errorf("openflow connection %T cannot apply bundles of groups and flows", w)
		}
		if node == nil {
			return proxier.ErrNotReady
		}
		copied := *node
		return fn(pw, &copied, round)
	})
}

// ctFlusher flushes conntrack entries through ovs-vswitchd.
type ctFlusher struct{ a *Agent }

func (f ctFlusher) FlushConntrack(ctx context.Context, zone uint16, orig, reply string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := f.a.vswitchd(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	args := []string{"dpctl/flush-conntrack", fmt.Sprintf("zone=%d", zone), orig}
	if reply != "" {
		args = append(args, reply)
	}
	if _, err := c.Call(ctx, args[0], args[1:]...); err != nil {
		return fmt.Errorf("%v: %w", args, err)
	}
	return nil
}

// onPacketIn takes the bridge's packet-ins.
func (a *Agent) onPacketIn(pi *openflow.PacketIn) {
	a.m.PacketIn(packetInReason(pi))
	if a.fqdn != nil && a.fqdn.handlePacketIn(pi) {
		return
	}
	if a.proxy != nil && a.proxy.HandlePacketIn(pi) {
		return
	}
	if tf := a.tf.Load(); tf != nil && tf.HandlePacketIn(pi) {
		return
	}
	if a.handlePolicyLog(pi) {
		return
	}
	if a.handlePolicyReject(pi) {
		return
	}
	a.log.Debug("packet-in nobody asked for", "table", pi.TableID, "cookie", fmt.Sprintf("%#x", pi.Cookie))
}

// replayServices is the part of a full replay the proxy owns: the meters
// (outside the bundle; OVS refuses meter mods in one), then the groups,
// deleted and added again, in the bundle before every flow. The caller
// holds the flow lock, not a.mu.
func (a *Agent) replayServices(ctx context.Context, w FlowWriter, r pipeline.Round) ([]openflow.Message, []*openflow.Flow, error) {
	if a.proxy == nil {
		return nil, nil, nil
	}
	pw, ok := w.(proxier.Writer)
	if !ok {
		return nil, nil, fmt.Errorf("openflow connection %T cannot apply bundles of groups and flows", w)
	}
	a.mu.Lock()
	node := *a.node
	a.mu.Unlock()
	meters, msgs, flows, err := a.proxy.ReplayMessages(node, r)
	if err != nil {
		return nil, nil, err
	}
	for _, m := range meters {
		if err := pw.Apply(ctx, openflow.ModifyMeter(m)); err != nil {
			if err := pw.Apply(ctx, openflow.AddMeter(m)); err != nil {
				return nil, nil, fmt.Errorf("meter %d: %w", m.ID, err)
			}
		}
	}
	return msgs, flows, nil
}

func comparePrefix(x, y netip.Prefix) int {
	if c := x.Addr().Compare(y.Addr()); c != 0 {
		return c
	}
	return x.Bits() - y.Bits()
}
