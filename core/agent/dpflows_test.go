package agent

import (
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/seine-cni/seine/core/agent/policy"
	"github.com/seine-cni/seine/core/pipeline"
)

// testdata/dpctl-dump-flows-m.txt is `ovs-appctl dpctl/dump-flows -m` of a
// test/agenttest node (OVS 3.1, netdev) with db-0 (10.244.1.2, isolated,
// TCP 5432 and UDP 53 allowed from web-0) and web-0 (10.244.1.3), after
// web-0 opened TCP 5432 and UDP 53 and db-0 was refused TCP 80. Its last
// two lines are written by hand: masked addresses and ports, and a key
// this parser cannot read.
func TestDatapathFlowsConcernedByPolicyChanges(t *testing.T) {
	out, err := os.ReadFile("testdata/dpctl-dump-flows-m.txt")
	if err != nil {
		t.Fatal(err)
	}
	flows := parseDatapathFlows(string(out))
	if len(flows) != 12 {
		t.Fatalf("%d flows parsed, want 12", len(flows))
	}
	db, web := netip.MustParseAddr("10.244.1.2"), netip.MustParseAddr("10.244.1.3")
	tcp := func(p uint16) pipeline.PolicyService {
		return pipeline.PolicyService{Protocol: pipeline.ProtoTCP, Port: p}
	}
	host := func(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, 32) }
	for _, c := range []struct {
		name string
		n    policy.Narrowed
		want []string // ufid prefixes
	}{
		// web-0 leaves db-0's TCP 5432 peers: the flow that let its new
		// connection in goes (and the unreadable one), not its established
		// connection's, nor the UDP one, nor anything before conntrack.
		{"web-0 no longer on tcp/5432", policy.Narrowed{Direction: pipeline.PolicyIngress, Targets: []netip.Addr{db},
			Peers: []netip.Prefix{host(web)}, Services: []pipeline.PolicyService{tcp(5432)}}, []string{"f631b44a", "77777777-0000-4000-8000-000000000002"}},
		{"10.244.2.0/24 no longer on tcp/5433", policy.Narrowed{Direction: pipeline.PolicyIngress, Targets: []netip.Addr{db},
			Peers: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}, Services: []pipeline.PolicyService{tcp(5433)}},
			[]string{"77777777-0000-4000-8000-000000000001", "77777777-0000-4000-8000-000000000002"}},
		{"db-0 newly isolated", policy.Narrowed{Direction: pipeline.PolicyIngress, Targets: []netip.Addr{db}},
			[]string{"f631b44a", "f3e3dd79", "77777777-0000-4000-8000-000000000001", "77777777-0000-4000-8000-000000000002"}},
		// web-0's egress to db-0: its two new connections (the refused SYN
		// of db-0, a drop flow with every address wildcarded, stays).
		{"web-0's egress to db-0", policy.Narrowed{Direction: pipeline.PolicyEgress, Targets: []netip.Addr{web}, Peers: []netip.Prefix{host(db)}},
			[]string{"f631b44a", "f3e3dd79", "77777777-0000-4000-8000-000000000002"}},
		{"another pod", policy.Narrowed{Direction: pipeline.PolicyIngress, Targets: []netip.Addr{netip.MustParseAddr("10.244.1.9")}},
			[]string{"77777777-0000-4000-8000-000000000002"}},
		{"everything", policy.Narrowed{}, nil},
	} {
		var got []string
		for _, f := range flows {
			if f.concernedBy(c.n) {
				got = append(got, f.ufid)
			}
		}
		if c.want == nil {
			if len(got) != len(flows) {
				t.Errorf("%s: %d flows concerned, want all %d", c.name, len(got), len(flows))
			}
			continue
		}
		ok := len(got) == len(c.want)
		for _, w := range c.want {
			ok = ok && slices.ContainsFunc(got, func(u string) bool { return strings.HasPrefix(u, w) })
		}
		if !ok {
			t.Errorf("%s: concerned %v, want %v", c.name, got, c.want)
		}
	}
}

// The cached drops a DNS answer must open (OpenDatapath): flows that drop
// a new connection's packet to the address; the refused SYN of db-0 (its
// destination wildcarded) and the unreadable line, nothing that forwards.
func TestDatapathDropsOfNewConnections(t *testing.T) {
	out, err := os.ReadFile("testdata/dpctl-dump-flows-m.txt")
	if err != nil {
		t.Fatal(err)
	}
	flows := parseDatapathFlows(string(out))
	var got []string
	for _, f := range flows {
		if f.dropsNewTo([]netip.Addr{netip.MustParseAddr("10.244.1.3")}) {
			got = append(got, f.ufid)
		}
	}
	want := []string{"a04d822c-78ac-4edc-aa85-7636f434804c", "77777777-0000-4000-8000-000000000002"}
	if !slices.Equal(got, want) {
		t.Errorf("drops of new connections to 10.244.1.3: %v, want %v", got, want)
	}
	for _, f := range flows {
		if f.dropsNewTo(nil) && !f.unrecogn {
			t.Errorf("%s drops new connections to no address", f.ufid)
		}
	}
}
