package policy

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
)

// fakeNode is the agent as the controller sees it, with a switch that
// applies bundles to a flow table.
type fakeNode struct {
	mu      sync.Mutex
	pods    []Pod
	round   pipeline.Round
	flows   map[string]*openflow.Flow // by Key
	bundles [][]string                // the flow-mods of each bundle
	fail    error
	// failOnce clears fail after it failed one bundle; commitThenFail
	// applies one bundle and then reports its error.
	failOnce       bool
	commitThenFail error
	dumps          int
}

func newFakeNode(pods ...Pod) *fakeNode {
	return &fakeNode{pods: pods, round: 1, flows: map[string]*openflow.Flow{}}
}

func (n *fakeNode) LocalPods() []Pod {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.pods)
}

func (n *fakeNode) NodeSources() []netip.Addr { return []netip.Addr{netip.MustParseAddr("10.244.1.1")} }

func (n *fakeNode) Install(ctx context.Context, fn func(Writer, pipeline.Round) error) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return fn(n, n.round)
}

// Bundle applies msgs all or nothing.
func (n *fakeNode) Bundle(_ context.Context, msgs ...openflow.Message) error {
	if err := n.fail; err != nil {
		if n.failOnce {
			n.fail, n.failOnce = nil, false
		}
		return err
	}
	if err := n.commitThenFail; err != nil {
		n.commitThenFail = nil
		defer func() { n.bundles = n.bundles[:len(n.bundles)-1] }()
		if berr := n.Bundle(context.Background(), msgs...); berr != nil {
			return berr
		}
		return err
	}
	var texts []string
	for _, m := range msgs {
		fm := m.(*openflow.FlowMod)
		texts = append(texts, fm.String())
		switch fm.Command {
		case openflow.FlowAdd:
			n.flows[fm.Flow.Key()] = fm.Flow
		case openflow.FlowDeleteStrict:
			if _, ok := n.flows[fm.Flow.Key()]; !ok {
				return fmt.Errorf("delete of a missing flow %s", fm)
			}
			delete(n.flows, fm.Flow.Key())
		default:
			return fmt.Errorf("unexpected flow-mod %s", fm)
		}
	}
	n.bundles = append(n.bundles, texts)
	return nil
}

// DumpFlows returns the flows whose cookie matches, as a switch does.
func (n *fakeNode) DumpFlows(_ context.Context, table uint8, cookie, mask uint64) ([]openflow.FlowStats, error) {
	var out []openflow.FlowStats
	for _, f := range n.flows {
		if (table == openflow.TableAll || f.TableID() == table) && f.CookieValue()&mask == cookie&mask {
			out = append(out, openflow.FlowStats{Flow: f})
		}
	}
	n.dumps++
	return out, nil
}

// table renders the fake switch's flows like pipeline.Text.
func (n *fakeNode) table() string {
	var fs []*openflow.Flow
	for _, f := range n.flows {
		fs = append(fs, f)
	}
	pipeline.Sort(fs)
	return pipeline.Text(fs)
}

func quietLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Objects for tests.

var (
	webPod = Pod{Namespace: "default", Name: "web-0", OFPort: 10, IPs: []netip.Addr{netip.MustParseAddr("10.244.1.10")}}
	dbPod  = Pod{Namespace: "default", Name: "db-0", OFPort: 11, IPs: []netip.Addr{netip.MustParseAddr("10.244.1.11")}}
)

func member(ns, name, ip string, named ...controlplane.NamedPort) controlplane.GroupMember {
	return controlplane.GroupMember{Pod: controlplane.PodReference{Namespace: ns, Name: name},
		IPs: []controlplane.IPAddress{netip.MustParseAddr(ip).AsSlice()}, NamedPorts: named}
}

func atg(name string, ms ...controlplane.GroupMember) *controlplane.AppliedToGroup {
	return &controlplane.AppliedToGroup{ObjectMeta: metav1.ObjectMeta{Name: name}, Members: ms}
}

func ag(name string, ms ...controlplane.GroupMember) *controlplane.AddressGroup {
	return &controlplane.AddressGroup{ObjectMeta: metav1.ObjectMeta{Name: name}, Members: ms}
}

func netpol(name string, gen int64, appliedTo []string, types []controlplane.PolicyType, rules ...controlplane.NetworkPolicyRule) *controlplane.NetworkPolicy {
	return &controlplane.NetworkPolicy{
		ObjectMeta:      metav1.ObjectMeta{Name: name, UID: typesUID("uid-" + name), Generation: gen},
		AppliedToGroups: appliedTo, PolicyTypes: types, Rules: rules,
	}
}

func typesUID(s string) types.UID { return types.UID(s) }

func tcp(port int) controlplane.Service {
	p := intstr.FromInt32(int32(port))
	return controlplane.Service{Protocol: controlplane.ProtocolTCP, Port: &p}
}

func named(proto controlplane.Protocol, name string) controlplane.Service {
	p := intstr.FromString(name)
	return controlplane.Service{Protocol: proto, Port: &p}
}

func block(cidr string, except ...string) controlplane.IPBlock {
	ipnet := func(s string) controlplane.IPNet {
		p := netip.MustParsePrefix(s)
		return controlplane.IPNet{IP: p.Addr().AsSlice(), PrefixLength: int32(p.Bits())}
	}
	b := controlplane.IPBlock{CIDR: ipnet(cidr)}
	for _, e := range except {
		b.Except = append(b.Except, ipnet(e))
	}
	return b
}

var (
	ingressOnly = []controlplane.PolicyType{controlplane.PolicyTypeIngress}
	egressOnly  = []controlplane.PolicyType{controlplane.PolicyTypeEgress}
)

// renderSet prints a PolicySet compactly for comparisons.
func renderSet(s pipeline.PolicySet) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "isolated ingress %v egress %v\n", s.IngressIsolated, s.EgressIsolated)
	rules := slices.Clone(s.Rules)
	slices.SortFunc(rules, func(a, b pipeline.PolicyRule) int {
		return strings.Compare(a.Policy+"/"+a.Key, b.Policy+"/"+b.Key)
	})
	for _, r := range rules {
		fmt.Fprintf(&sb, "%s/%s %s targets=%v peers=", r.Policy, r.Key, r.Direction, r.Targets)
		for i, p := range r.Peers {
			if i > 0 {
				sb.WriteString(",")
			}
			sb.WriteString(p.CIDR.String())
			for _, e := range p.Except {
				sb.WriteString("-" + e.String())
			}
		}
		sb.WriteString(" services=")
		for i, s := range r.Services {
			if i > 0 {
				sb.WriteString(",")
			}
			fmt.Fprintf(&sb, "%d:%d", s.Protocol, s.Port)
			if s.EndPort != 0 {
				fmt.Fprintf(&sb, "-%d", s.EndPort)
			}
		}
		if r.Tier != pipeline.TierNone {
			fmt.Fprintf(&sb, " tier=%d %s prio=%d", r.Tier, r.Action, r.Priority)
		}
		sb.WriteString("\n")
	}
	return sb.String()
}
