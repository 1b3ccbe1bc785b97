package policy

import (
	"testing"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
)

// An egress rule to everyone on a named port arrives as an AddressGroup of
// every pod plus the match-all ipBlocks: it allows that port to the pods
// that name it, each at its own number, and the blocks add nothing.
func TestResolveEgressNamedPortToEveryone(t *testing.T) {
	p80 := controlplane.NamedPort{Name: "serve-80-tcp", Port: 80, Protocol: controlplane.ProtocolTCP}
	p8080 := controlplane.NamedPort{Name: "serve-80-tcp", Port: 8080, Protocol: controlplane.ProtocolTCP}
	all := controlplane.NetworkPolicyPeer{AddressGroups: []string{"all"},
		IPBlocks: []controlplane.IPBlock{block("0.0.0.0/0"), block("::/0")}}
	s := State{
		AppliedToGroups: map[string]*controlplane.AppliedToGroup{"x": atg("x", member("default", "web-0", "10.244.1.10", p80))},
		AddressGroups: map[string]*controlplane.AddressGroup{"all": ag("all",
			member("default", "web-0", "10.244.1.10", p80), member("y", "b", "10.244.2.5", p80),
			member("y", "c", "10.244.3.6", p8080), member("z", "none", "10.244.3.7"))},
		NetworkPolicies: map[string]*controlplane.NetworkPolicy{"p": netpol("p", 1, []string{"x"}, egressOnly,
			controlplane.NetworkPolicyRule{Direction: controlplane.DirectionOut, To: all,
				Services: []controlplane.Service{named("TCP", "serve-80-tcp")}})},
	}
	r := resolve(s, []Pod{webPod, dbPod}, nodeSrc)
	if len(r.problems) > 0 {
		t.Fatalf("problems: %v", r.problems)
	}
	want := `isolated ingress [] egress [10]
uid-p/0/6/80 egress targets=[10] peers=10.244.1.10/32,10.244.2.5/32 services=6:80
uid-p/0/6/8080 egress targets=[10] peers=10.244.3.6/32 services=6:8080
`
	if got := renderSet(r.set); got != want {
		t.Errorf("resolved:\n%s\nwant:\n%s", got, want)
	}
}
