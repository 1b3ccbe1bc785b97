package agent

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/seine-cni/seine/cni"
	"github.com/seine-cni/seine/core/agent/policy"
	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
)

// resumed is an NXT_RESUME the fake switch took, with its flows then.
type resumed struct {
	pin   *openflow.PacketIn
	flows int
	text  string
}

// flowTextLocked is every flow, one a line; s.mu held.
func (s *fakeSwitch) flowTextLocked() string {
	var lines []string
	for _, f := range s.flows {
		lines = append(lines, f.String())
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func (s *fakeSwitch) resumes() []resumed {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.resumed)
}

func (s *fakeSwitch) hasFlow(part string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Contains(s.flowTextLocked(), part)
}

// webToNames is a tiered policy on pod web: egress Allow to the pattern,
// then Drop of everything.
func webToNames(pattern string) policy.State {
	prio, tp := 10.0, int32(250)
	allow, drop := controlplane.RuleActionAllow, controlplane.RuleActionDrop
	return policy.State{
		AppliedToGroups: map[string]*controlplane.AppliedToGroup{"web": {ObjectMeta: metav1.ObjectMeta{Name: "web"},
			Members: []controlplane.GroupMember{{Pod: controlplane.PodReference{Namespace: "default", Name: "web"}}}}},
		NetworkPolicies: map[string]*controlplane.NetworkPolicy{"names": {
			ObjectMeta:      metav1.ObjectMeta{Name: "names", UID: types.UID("uid-names"), Generation: 1},
			AppliedToGroups: []string{"web"}, TierPriority: &tp, Tier: "application", Priority: &prio,
			Rules: []controlplane.NetworkPolicyRule{
				{Direction: controlplane.DirectionOut, To: controlplane.NetworkPolicyPeer{DomainNames: []string{pattern}}, Action: &allow, Priority: 0},
				{Direction: controlplane.DirectionOut, To: controlplane.NetworkPolicyPeer{IPBlocks: []controlplane.IPBlock{{CIDR: controlplane.IPNet{IP: make(controlplane.IPAddress, 4)}}}}, Action: &drop, Priority: 1},
			}}},
	}
}

// dnsAnswerFrame is an Ethernet/IPv4/UDP frame from a DNS server to pod
// with an answer: name A addr, ttl seconds.
func dnsAnswerFrame(t *testing.T, pod netip.Addr, name string, addr netip.Addr, ttl uint32) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 1, Response: true})
	_ = b.StartQuestions()
	_ = b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	_ = b.StartAnswers()
	_ = b.AResource(dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(name), Class: dnsmessage.ClassINET, TTL: ttl}, dnsmessage.AResource{A: addr.As4()})
	msg, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	f := make([]byte, 14, 64+len(msg))
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := []byte{0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 96, 0, 10}
	binary.BigEndian.PutUint16(ip[2:], uint16(28+len(msg)))
	ip = append(ip, pod.AsSlice()...)
	udp := []byte{0, 53, 0x9c, 0x40, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(msg)))
	return append(append(append(f, ip...), udp...), msg...)
}

// TestDomainNamePeers: a rule naming a pattern puts the DNS answers' flow
// on the bridge; an answer for a matching name is resumed only once the
// rule's flows hold its address; the address goes when its TTL (raised to
// the floor) has passed; the last pattern gone takes the flow with it.
func TestDomainNamePeers(t *testing.T) {
	w := newWorld(t, twoNodesSlice()...)
	a, stop := w.start()
	defer stop()
	waitReady(t, a)
	ctx := context.Background()
	res, err := a.Add(ctx, w.req(cni.CmdAdd, "c1", "web"))
	if err != nil {
		t.Fatal(err)
	}
	pod, _ := netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
	a.fqdn.mu.Lock()
	a.fqdn.cache.MinTTL = time.Second
	a.fqdn.mu.Unlock()

	const dnsFlow = "table=75, priority=64950,ct_state=-new+trk,udp,reg0=0x30/0xf0,tp_src=53 actions=controller(userdata=06,pause,meter_id=4),goto_table:90"
	if err := a.fqdn.Sync(ctx, webToNames("*.example.com")); err != nil {
		t.Fatal(err)
	}
	if !w.sw.hasFlow(dnsFlow) {
		t.Fatalf("no DNS flow:\n%s", w.sw.policyFlowText())
	}
	w.sw.mu.Lock()
	_, meter := w.sw.meters[pipeline.DNSResponseMeter]
	w.sw.mu.Unlock()
	if !meter {
		t.Error("no DNS meter")
	}
	const learned = "nw_dst=192.0.2.7"
	if w.sw.hasFlow(learned) {
		t.Fatal("an address before any answer")
	}

	// An answer for a name the pattern does not match teaches nothing and
	// is resumed at once; one it matches is resumed after its address is
	// a peer of the rule.
	for _, tc := range []struct {
		name string
		addr string
	}{{"www.example.org.", "198.51.100.1"}, {"www.example.com.", "192.0.2.7"}} {
		a.onPacketIn(&openflow.PacketIn{Packet: dnsAnswerFrame(t, pod, tc.name, netip.MustParseAddr(tc.addr), 1),
			Userdata: []byte{pipeline.PacketInDNSResponse}, Continuation: []byte{1, 2, 3}})
	}
	poll(t, "two answers resumed", func() (bool, string) {
		rs := w.sw.resumes()
		return len(rs) == 2, fmt.Sprint(len(rs), " resumed")
	})
	rs := w.sw.resumes()
	if strings.Contains(rs[0].text, "198.51.100.1") || !strings.Contains(rs[1].text, learned) {
		t.Fatalf("at the second answer's resume the flows were:\n%s", rs[1].text)
	}
	if string(rs[1].pin.Continuation) != string([]byte{1, 2, 3}) {
		t.Errorf("resumed with continuation %x", rs[1].pin.Continuation)
	}
	t.Logf("learned flows: %s", grepLines(rs[1].text, learned))

	// TTL 1 s (the floor here is 1 s): the address goes.
	poll(t, "the address expired", func() (bool, string) { return !w.sw.hasFlow(learned), "still there" })

	// No pattern left: the DNS flow goes too.
	if err := a.fqdn.Sync(ctx, isolateDB()); err != nil {
		t.Fatal(err)
	}
	if w.sw.hasFlow("tp_src=53") {
		t.Error("the DNS flow stayed without patterns")
	}
}

func grepLines(s, part string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, part) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
