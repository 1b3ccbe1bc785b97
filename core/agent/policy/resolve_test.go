package policy

import (
	"net/netip"
	"strings"
	"testing"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/pipeline"
)

var nodeSrc = []netip.Addr{netip.MustParseAddr("10.244.1.1")}

func TestResolve(t *testing.T) {
	http := controlplane.NamedPort{Name: "http", Port: 8080, Protocol: controlplane.ProtocolTCP}
	http2 := controlplane.NamedPort{Name: "http", Port: 9090, Protocol: controlplane.ProtocolTCP}
	dns := controlplane.NamedPort{Name: "dns", Port: 53, Protocol: controlplane.ProtocolUDP}
	end := int32(2000)
	rng := tcp(1000)
	rng.EndPort = &end
	s := State{
		AppliedToGroups: map[string]*controlplane.AppliedToGroup{
			// web-0 is local, web-1 is on another node.
			"web": atg("web", member("default", "web-0", "10.244.1.10", http), member("default", "web-1", "10.244.2.10", http2)),
			"db":  atg("db", member("default", "db-0", "10.244.1.11")),
			"far": atg("far", member("default", "other", "10.244.2.99")),
		},
		AddressGroups: map[string]*controlplane.AddressGroup{
			"clients": ag("clients", member("default", "c-0", "10.244.2.5"), member("default", "c-1", "10.244.3.6")),
			"servers": ag("servers", member("default", "s-0", "10.244.2.7", http, dns), member("default", "s-1", "10.244.3.8", http2)),
		},
		NetworkPolicies: map[string]*controlplane.NetworkPolicy{
			// Ingress to web from clients on a named port, and from a CIDR on
			// a range.
			"allow-web": netpol("allow-web", 3, []string{"web"}, ingressOnly,
				controlplane.NetworkPolicyRule{Direction: controlplane.DirectionIn,
					From: controlplane.NetworkPolicyPeer{AddressGroups: []string{"clients"}}, Services: []controlplane.Service{named("TCP", "http")}},
				controlplane.NetworkPolicyRule{Direction: controlplane.DirectionIn,
					From: controlplane.NetworkPolicyPeer{IPBlocks: []controlplane.IPBlock{block("172.16.0.0/12", "172.16.1.0/24")}}, Services: []controlplane.Service{rng}},
			),
			// db isolated both ways, egress to servers on named ports
			// (resolved per server) and TCP 443 anywhere.
			"db-out": netpol("db-out", 7, []string{"db"}, []controlplane.PolicyType{controlplane.PolicyTypeIngress, controlplane.PolicyTypeEgress},
				controlplane.NetworkPolicyRule{Direction: controlplane.DirectionOut,
					To:       controlplane.NetworkPolicyPeer{AddressGroups: []string{"servers"}, IPBlocks: []controlplane.IPBlock{block("192.168.0.0/16")}},
					Services: []controlplane.Service{named("TCP", "http"), named("UDP", "dns"), tcp(443)}},
			),
			// Applies to no local pod: nothing on this node.
			"far-only": netpol("far-only", 1, []string{"far"}, ingressOnly),
		},
	}
	r := resolve(s, []Pod{webPod, dbPod}, nodeSrc)
	if len(r.problems) > 0 {
		t.Fatalf("problems: %v", r.problems)
	}
	want := `isolated ingress [10 11] egress [11]
uid-allow-web/0/6/8080 ingress targets=[10] peers=10.244.2.5/32,10.244.3.6/32 services=6:8080
uid-allow-web/1 ingress targets=[10] peers=172.16.0.0/12-172.16.1.0/24 services=6:1000-2000
uid-db-out/0 egress targets=[11] peers=10.244.2.7/32,10.244.3.8/32,192.168.0.0/16 services=6:443
uid-db-out/0/17/53 egress targets=[11] peers=10.244.2.7/32 services=17:53
uid-db-out/0/6/8080 egress targets=[11] peers=10.244.2.7/32 services=6:8080
uid-db-out/0/6/9090 egress targets=[11] peers=10.244.3.8/32 services=6:9090
`
	if got := renderSet(r.set); got != want {
		t.Errorf("resolved:\n%s\nwant:\n%s", got, want)
	}
	if r.gens["allow-web"] != 3 || r.gens["db-out"] != 7 || r.gens["far-only"] != 1 {
		t.Errorf("generations %v", r.gens)
	}
}

// A named port resolved against local targets splits them by number.
func TestResolveNamedPortIngressSplitsTargets(t *testing.T) {
	a := controlplane.NamedPort{Name: "web", Port: 80, Protocol: controlplane.ProtocolTCP}
	b := controlplane.NamedPort{Name: "web", Port: 8080, Protocol: controlplane.ProtocolTCP}
	s := State{
		AppliedToGroups: map[string]*controlplane.AppliedToGroup{"g": atg("g", member("default", "web-0", "10.244.1.10", a), member("default", "db-0", "10.244.1.11", b))},
		AddressGroups:   map[string]*controlplane.AddressGroup{},
		NetworkPolicies: map[string]*controlplane.NetworkPolicy{"p": netpol("p", 1, []string{"g"}, ingressOnly,
			controlplane.NetworkPolicyRule{Direction: controlplane.DirectionIn,
				From:     controlplane.NetworkPolicyPeer{IPBlocks: []controlplane.IPBlock{block("0.0.0.0/0")}},
				Services: []controlplane.Service{named("TCP", "web"), named("UDP", "web")}})},
	}
	got := renderSet(resolve(s, []Pod{webPod, dbPod}, nodeSrc).set)
	want := `isolated ingress [10 11] egress []
uid-p/0/6/80 ingress targets=[10] peers=0.0.0.0/0 services=6:80
uid-p/0/6/8080 ingress targets=[11] peers=0.0.0.0/0 services=6:8080
`
	if got != want {
		t.Errorf("resolved:\n%s\nwant:\n%s", got, want)
	}
}

// A policy whose AppliedToGroup is missing is skipped; one whose
// AddressGroup is missing still isolates its pods without that rule. Both
// are reported and not realized.
func TestResolveMissingGroup(t *testing.T) {
	s := State{
		AppliedToGroups: map[string]*controlplane.AppliedToGroup{"g": atg("g", member("default", "web-0", "10.244.1.10"))},
		NetworkPolicies: map[string]*controlplane.NetworkPolicy{
			"bad":  netpol("bad", 1, []string{"nope"}, egressOnly),
			"bad2": netpol("bad2", 1, []string{"g"}, ingressOnly, controlplane.NetworkPolicyRule{Direction: controlplane.DirectionIn, From: controlplane.NetworkPolicyPeer{AddressGroups: []string{"gone"}}}),
			"ok":   netpol("ok", 1, []string{"g"}, egressOnly),
		},
	}
	r := resolve(s, []Pod{webPod}, nodeSrc)
	all := strings.Join(r.problems, "\n")
	if len(r.problems) != 2 || !strings.Contains(all, "appliedToGroup nope is missing") || !strings.Contains(all, "addressGroup gone is missing") {
		t.Errorf("problems %v", r.problems)
	}
	if got := renderSet(r.set); got != "isolated ingress [10] egress [10]\n" {
		t.Errorf("resolved:\n%s", got)
	}
	if _, ok := r.gens["bad"]; ok {
		t.Errorf("a skipped policy counts as realized: %v", r.gens)
	}
	if _, ok := r.gens["bad2"]; ok {
		t.Errorf("an incomplete policy counts as realized: %v", r.gens)
	}
	if r.gens["ok"] != 1 {
		t.Errorf("generations %v", r.gens)
	}
	if len(r.failed) != 0 {
		t.Errorf("missing groups are transient, not failures: %v", r.failed)
	}
}

// A rule whose peers the controller could not translate comes with an
// empty peer (core/controller, TranslationError): it must allow nothing
// while the policy keeps its pods isolated, never read as "from anyone".
func TestRuleWithoutPeersAllowsNothing(t *testing.T) {
	s := State{
		AppliedToGroups: map[string]*controlplane.AppliedToGroup{"db": atg("db", member("default", "db-0", "10.244.1.11"))},
		NetworkPolicies: map[string]*controlplane.NetworkPolicy{"legacy": netpol("legacy", 2, []string{"db"}, ingressOnly,
			controlplane.NetworkPolicyRule{Direction: controlplane.DirectionIn, Services: []controlplane.Service{tcp(80)}})},
	}
	r := resolve(s, []Pod{dbPod}, nodeSrc)
	flows, err := pipeline.PolicyFlows(r.set, 1)
	if err != nil {
		t.Fatal(err)
	}
	got := pipeline.Text(flows)
	if !strings.Contains(got, "reg1=0xb actions=drop") || strings.Contains(got, "conj") {
		t.Errorf("want only db-0's isolation, got:\n%s", got)
	}
	if r.gens["legacy"] != 2 || len(r.failed) != 0 {
		t.Errorf("realized %v, failed %v: the node enforces what it was given", r.gens, r.failed)
	}
}
