package proxy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Labels that keep a Service (and its EndpointSlices) away from a proxy.
const (
	// LabelServiceProxyName names the proxy that handles the Service; a
	// Service carrying it is left to that proxy.
	LabelServiceProxyName = "service.kubernetes.io/service-proxy-name"
	// LabelHeadless marks headless Services (no cluster IP to proxy); the
	// EndpointSlice controller puts it on their slices too.
	LabelHeadless = "service.kubernetes.io/headless"
)

// DefaultAffinitySeconds is the ClientIP affinity timeout of a Service that
// does not set one (the API's default, 3 hours).
const DefaultAffinitySeconds = 10800

// MaxAffinitySeconds is the largest timeout the API accepts (one day).
const MaxAffinitySeconds = 86400

// servicePort is a Service port before its endpoints are known.
type servicePort struct {
	Port // endpoints and HasEndpoints unset
}

// serviceInfo is the part of a Service the tracker keeps.
type serviceInfo struct {
	namespace, name string
	ports           []servicePort // sorted by Key
}

// skipReason says why a Service is not proxied by a proxy named proxyName
// ("" when it is).
func skipReason(s *corev1.Service, proxyName string) string {
	if name, ok := s.Labels[LabelServiceProxyName]; ok && (proxyName == "" || name != proxyName) {
		return fmt.Sprintf("label %s=%s", LabelServiceProxyName, name)
	}
	if _, ok := s.Labels[LabelHeadless]; ok {
		return "label " + LabelHeadless
	}
	if s.Spec.Type == corev1.ServiceTypeExternalName {
		return "type ExternalName"
	}
	if s.Spec.ClusterIP == "" || s.Spec.ClusterIP == corev1.ClusterIPNone {
		return "no cluster IP"
	}
	return ""
}

// parseService reads what the proxy needs from s for one IP family. A
// Service without a cluster IP of that family has no ports. Errors name
// fields the API server should have refused; such a Service is not
// proxied.
func parseService(s *corev1.Service, v6 bool) (*serviceInfo, error) {
	si := &serviceInfo{namespace: s.Namespace, name: s.Name}
	family := func(a netip.Addr) bool { return a.Unmap().Is6() == v6 }
	var clusterIP netip.Addr
	ips := s.Spec.ClusterIPs
	if len(ips) == 0 {
		ips = []string{s.Spec.ClusterIP}
	}
	for _, ip := range ips {
		a, err := netip.ParseAddr(strings.TrimSpace(ip))
		if err != nil {
			return nil, fmt.Errorf("clusterIP %q: %w", ip, err)
		}
		if family(a.Unmap()) {
			clusterIP = a.Unmap()
			break
		}
	}
	if !clusterIP.IsValid() {
		return si, nil // served by the other family's proxy
	}
	var externalIPs, lbIPs []netip.Addr
	for _, ip := range s.Spec.ExternalIPs {
		a, err := netip.ParseAddr(strings.TrimSpace(ip))
		if err != nil {
			return nil, fmt.Errorf("externalIP %q: %w", ip, err)
		}
		if family(a.Unmap()) && !slices.Contains(externalIPs, a.Unmap()) {
			externalIPs = append(externalIPs, a.Unmap())
		}
	}
	for _, ing := range s.Status.LoadBalancer.Ingress {
		// An ingress in Proxy mode is a load balancer that proxies to the
		// node ports itself: its IP is not ours to answer.
		if ing.IP == "" || (ing.IPMode != nil && *ing.IPMode != corev1.LoadBalancerIPModeVIP) {
			continue
		}
		a, err := netip.ParseAddr(strings.TrimSpace(ing.IP))
		if err != nil {
			return nil, fmt.Errorf("load balancer ingress IP %q: %w", ing.IP, err)
		}
		if family(a.Unmap()) && !slices.Contains(lbIPs, a.Unmap()) {
			lbIPs = append(lbIPs, a.Unmap())
		}
	}
	sortAddrs(externalIPs)
	sortAddrs(lbIPs)
	var ranges []netip.Prefix
	for _, r := range s.Spec.LoadBalancerSourceRanges {
		p, err := netip.ParsePrefix(strings.TrimSpace(r))
		if err != nil {
			return nil, fmt.Errorf("loadBalancerSourceRanges %q: %w", r, err)
		}
		if !family(p.Addr()) {
			continue
		}
		if p.Bits() == 0 {
			ranges = nil // everyone may connect
			break
		}
		if !slices.Contains(ranges, p.Masked()) {
			ranges = append(ranges, p.Masked())
		}
	}
	slices.SortFunc(ranges, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	var affinity uint32
	if s.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		affinity = DefaultAffinitySeconds
		if c := s.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			t := *c.ClientIP.TimeoutSeconds
			if t <= 0 || t > MaxAffinitySeconds {
				return nil, fmt.Errorf("sessionAffinityConfig.clientIP.timeoutSeconds %d: want 1..%d", t, MaxAffinitySeconds)
			}
			affinity = uint32(t)
		}
	}
	// As the API's helpers define it: a NodePort or LoadBalancer Service,
	// or a ClusterIP one with external IPs.
	externallyAccessible := s.Spec.Type == corev1.ServiceTypeNodePort || s.Spec.Type == corev1.ServiceTypeLoadBalancer ||
		len(s.Spec.ExternalIPs) > 0
	etpLocal := externallyAccessible && s.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
	itpLocal := s.Spec.InternalTrafficPolicy != nil && *s.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
	var hcPort uint16
	if s.Spec.Type == corev1.ServiceTypeLoadBalancer && etpLocal && s.Spec.HealthCheckNodePort > 0 {
		if s.Spec.HealthCheckNodePort > 65535 {
			return nil, fmt.Errorf("healthCheckNodePort %d", s.Spec.HealthCheckNodePort)
		}
		hcPort = uint16(s.Spec.HealthCheckNodePort)
	}
	seen := map[string]bool{}
	for _, sp := range s.Spec.Ports {
		proto, err := protoNumber(sp.Protocol)
		if err != nil {
			return nil, fmt.Errorf("port %q: %w", sp.Name, err)
		}
		if sp.Port <= 0 || sp.Port > 65535 || sp.NodePort < 0 || sp.NodePort > 65535 {
			return nil, fmt.Errorf("port %q: port %d, nodePort %d out of range", sp.Name, sp.Port, sp.NodePort)
		}
		p := Port{
			Name: sp.Name, Protocol: proto, Port: uint16(sp.Port), ClusterIP: clusterIP,
			NodePort: uint16(sp.NodePort), ExternalIPs: externalIPs, LoadBalancerIPs: lbIPs,
			AffinitySeconds: affinity, ExternalLocal: etpLocal, InternalLocal: itpLocal,
			HealthCheckNodePort: hcPort,
		}
		if len(lbIPs) > 0 {
			p.SourceRanges = ranges
		}
		if seen[p.Key()] {
			return nil, fmt.Errorf("port %q/%s listed twice", sp.Name, sp.Protocol)
		}
		seen[p.Key()] = true
		si.ports = append(si.ports, servicePort{p})
	}
	slices.SortFunc(si.ports, func(a, b servicePort) int { return strings.Compare(a.Key(), b.Key()) })
	return si, nil
}

func protoNumber(p corev1.Protocol) (uint8, error) {
	switch p {
	case corev1.ProtocolTCP, "":
		return ProtoTCP, nil
	case corev1.ProtocolUDP:
		return ProtoUDP, nil
	case corev1.ProtocolSCTP:
		return ProtoSCTP, nil
	}
	return 0, fmt.Errorf("unknown protocol %q", p)
}

func sortAddrs(a []netip.Addr) { slices.SortFunc(a, netip.Addr.Compare) }
