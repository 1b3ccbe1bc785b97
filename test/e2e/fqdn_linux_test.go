package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/net/dns/dnsmessage"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/seine-cni/seine/core/controller"
	"github.com/seine-cni/seine/test/lab/probe"
)

// checkDomainNames shows the upstream ClusterNetworkPolicy's domainNames
// with real packets (the lab has the API's experimental CRD: the standard
// one prunes domainNames): a DNS server on the lab's external host answers
// www.fqdn.test with the external host's address (TTL 1). An Admin policy
// on the client pods allows DNS to that server, Accepts the domain names
// *.fqdn.test, and Denies every other address. For each client (one per
// node given: the Windows flow set's and a Linux node's): the external
// host's TCP port is denied until the pod resolves the name, answers the
// first connection right after the answer, stays denied to a pod address
// the client never resolved, and is denied again once the answer's TTL,
// raised to the agent's 5 s floor, has passed.
func (e *env) checkDomainNames(clients []*corev1.Pod, other *corev1.Pod) {
	e.t.Helper()
	start := time.Now()
	ext := e.c.ExternalIP()
	extNS := e.c.NetNSPath("ext")
	stopDNS := e.serveDNS(extNS, ext, map[string]string{"www.fqdn.test.": ext}, 1)
	defer stopDNS()
	stop, err := probe.Serve(e.ctx, extNS, "ext", []corev1.ContainerPort{{ContainerPort: 9090, Protocol: corev1.ProtocolTCP}})
	defer stop()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, p := range clients {
		patch := `{"metadata":{"labels":{"fqdn-client":"yes"}}}`
		if _, err := e.cs.CoreV1().Pods(p.Namespace).Patch(e.ctx, p.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			e.t.Fatal(err)
		}
	}
	ups := e.dynamic().Resource(controller.UpstreamClusterNetworkPoliciesResource)
	e.t.Cleanup(func() { _ = ups.Delete(e.ctx, "fqdn-allow-list", metav1.DeleteOptions{}) })
	subject := map[string]any{"pods": map[string]any{"namespaceSelector": map[string]any{}, "podSelector": map[string]any{"matchLabels": map[string]any{"fqdn-client": "yes"}}}}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "policy.networking.k8s.io/v1beta1", "kind": "ClusterNetworkPolicy",
		"metadata": map[string]any{"name": "fqdn-allow-list"},
		"spec": map[string]any{"tier": "Admin", "priority": int64(10), "subject": subject, "egress": []any{
			map[string]any{"name": "dns", "action": "Accept", "to": []any{map[string]any{"networks": []any{ext + "/32"}}},
				"protocols": []any{map[string]any{"udp": map[string]any{"destinationPort": map[string]any{"number": int64(53)}}}}},
			map[string]any{"name": "names", "action": "Accept", "to": []any{map[string]any{"domainNames": []any{"*.fqdn.test"}}}},
			map[string]any{"name": "deny", "action": "Deny", "to": []any{map[string]any{"networks": []any{"0.0.0.0/0"}}}},
		}},
	}}
	if err := e.createOrUpdate(ups, u); err != nil {
		e.t.Fatal(err)
	}
	got, err := ups.Get(e.ctx, "fqdn-allow-list", metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	if names, _, _ := unstructured.NestedSlice(got.Object, "spec", "egress"); len(names) != 3 || !strings.Contains(fmt.Sprint(names[1]), "fqdn.test") {
		e.t.Fatalf("the kube-apiserver kept %v of the egress rules (domainNames pruned?)", names)
	}
	e.waitUpstreamRealized(ups, "fqdn-allow-list")

	tcpExt := ext + ":9090"
	verdict := func(nsPath, addr string) string {
		reply, err := probe.Probe(e.ctx, nsPath, "tcp", addr, time.Second)
		v := probeVerdict(reply, err, "ext")
		if v == "?" {
			v = fmt.Sprintf("? (%v, reply %q)", err, reply)
		}
		return v
	}
	for _, c := range clients {
		nsPath := e.podNS(c)
		who := fmt.Sprintf("%s on %s", c.Name, c.Spec.NodeName)
		e.waitTiers(who+": the external host denied before any answer", func() []string {
			if v := verdict(nsPath, tcpExt); v != "X" {
				return []string{"external host tcp/9090: " + v + ", want X"}
			}
			return nil
		})
		addrs, err := resolveIn(nsPath, ext, "www.fqdn.test.")
		answered := time.Now()
		if err != nil || len(addrs) != 1 || addrs[0].String() != ext {
			e.t.Fatalf("%s: www.fqdn.test resolved to %v (%v), want %s", who, addrs, err, ext)
		}
		// The first connection right after the answer: the agent released
		// the answer only once the address was allowed.
		if v := verdict(nsPath, tcpExt); v != "." {
			out, _ := e.ovs(c.Spec.NodeName).Ofctl(e.ctx, "-O", "OpenFlow15", "dump-flows", "br-int", "table=45")
			dns, _ := e.ovs(c.Spec.NodeName).Ofctl(e.ctx, "-O", "OpenFlow15", "dump-flows", "br-int", "table=75")
			e.t.Fatalf("%s: the first connection to %s right after the answer: %s, want .\n%s\n%s", who, tcpExt, v, out, dns)
		}
		if v := verdict(nsPath, other.Status.PodIP+":8080"); v != "X" {
			e.t.Errorf("%s: a pod address it never resolved (%s): %s, want X", who, other.Status.PodIP, v)
		}
		var expired time.Duration
		for {
			expired = time.Since(answered)
			if verdict(nsPath, tcpExt) != "." || expired > 20*time.Second {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		if v := verdict(nsPath, tcpExt); v != "X" || expired < 4*time.Second || expired > 15*time.Second {
			e.t.Errorf("%s: the address stopped being allowed %s after the answer (TTL 1 s, floor 5 s); now %s", who, expired.Round(100*time.Millisecond), v)
		} else {
			e.t.Logf("%s: allowed right after the answer, denied again %s after it (TTL 1 s, floor 5 s)", who, expired.Round(100*time.Millisecond))
		}
	}
	e.t.Logf("domain-name checks took %s", time.Since(start).Round(time.Millisecond))
}

// serveDNS answers A queries for names (an address each, TTL ttl) on
// addr:53 inside the network namespace nsPath; other names get NXDOMAIN.
func (e *env) serveDNS(nsPath, addr string, names map[string]string, ttl uint32) (stop func()) {
	e.t.Helper()
	var pc net.PacketConn
	if err := ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
		var err error
		pc, err = net.ListenPacket("udp", net.JoinHostPort(addr, "53"))
		return err
	}); err != nil {
		e.t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var m dnsmessage.Message
			if err := m.Unpack(buf[:n]); err != nil || len(m.Questions) != 1 {
				continue
			}
			q := m.Questions[0]
			m.Header.Response, m.Header.Authoritative = true, true
			if a, ok := names[strings.ToLower(q.Name.String())]; ok && q.Type == dnsmessage.TypeA {
				m.Answers = []dnsmessage.Resource{{Header: dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: ttl},
					Body: &dnsmessage.AResource{A: netip.MustParseAddr(a).As4()}}}
			} else {
				m.Header.RCode = dnsmessage.RCodeNameError
			}
			if out, err := m.Pack(); err == nil {
				_, _ = pc.WriteTo(out, from)
			}
		}
	}()
	return func() { pc.Close() }
}

// resolveIn asks server:53 for name's A records from inside the network
// namespace nsPath, as the pod's resolver would (three tries, 2 s each).
func resolveIn(nsPath, server, name string) ([]netip.Addr, error) {
	q := dnsmessage.Message{Header: dnsmessage.Header{ID: 0x5e1e, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	msg, err := q.Pack()
	if err != nil {
		return nil, err
	}
	var conn net.Conn
	if err := ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
		conn, err = net.Dial("udp", net.JoinHostPort(server, "53"))
		return err
	}); err != nil {
		return nil, err
	}
	defer conn.Close()
	var last error
	for range 3 {
		if _, err := conn.Write(msg); err != nil {
			return nil, err
		}
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 1500)
		n, err := conn.Read(buf)
		if err != nil {
			last = err
			continue
		}
		var m dnsmessage.Message
		if err := m.Unpack(buf[:n]); err != nil {
			return nil, err
		}
		var out []netip.Addr
		for _, a := range m.Answers {
			if r, ok := a.Body.(*dnsmessage.AResource); ok {
				out = append(out, netip.AddrFrom4(r.A))
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("no answer: %w", last)
}
