package proxier

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
)

// fakeNode is a bridge in memory: flows by key, groups by ID. A bundle is
// all or nothing and fails, as OVS does, when a flow names a missing
// group; deleting a group deletes the flows that use it.
type fakeNode struct {
	mu             sync.Mutex
	node           *pipeline.NodeConfig
	round          pipeline.Round
	flows          map[string]*openflow.Flow
	groups         map[uint32]*openflow.GroupEntry
	bundles        [][]openflow.Message
	applied        []openflow.Message
	failNext       error
	commitThenFail bool
}

func newFakeNode() *fakeNode {
	m := func(s string) net.HardwareAddr { x, _ := net.ParseMAC(s); return x }
	return &fakeNode{
		node: &pipeline.NodeConfig{
			Name: "node-1", OS: pipeline.OSLinux, Topology: pipeline.BridgedUplink, Mode: pipeline.Encap, Tunnel: pipeline.Geneve,
			NodeIPs: []netip.Addr{netip.MustParseAddr("172.30.0.11")}, NodeMAC: m("52:54:00:00:00:11"),
			PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}, ClusterPodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
			GatewayIP: netip.MustParseAddr("10.244.1.1"), GatewayMAC: m("0a:58:0a:f4:01:01"),
			Ports: pipeline.Ports{Tunnel: 1, Gateway: 2, Uplink: 3}, ServiceProxy: true,
		},
		round: 1, flows: map[string]*openflow.Flow{}, groups: map[uint32]*openflow.GroupEntry{},
	}
}

func (n *fakeNode) Install(ctx context.Context, fn func(Writer, *pipeline.NodeConfig, pipeline.Round) error) error {
	n.mu.Lock()
	node, r := n.node, n.round
	n.mu.Unlock()
	if node == nil {
		return ErrNotReady
	}
	c := *node
	return fn(n, &c, r)
}

func (n *fakeNode) Bundle(_ context.Context, msgs ...openflow.Message) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	// Kept as the switch reads them (an Encoded group_mod as a GroupMod).
	msgs = slices.Clone(msgs)
	for i, m := range msgs {
		msgs[i] = openflow.Decoded(m)
	}
	n.bundles = append(n.bundles, msgs)
	if err := n.failNext; err != nil && !n.commitThenFail {
		n.failNext = nil
		return err
	}
	flows, groups := maps.Clone(n.flows), maps.Clone(n.groups)
	for i, m := range msgs {
		switch m := m.(type) {
		case *openflow.FlowMod:
			f := m.Flow
			switch m.Command {
			case openflow.FlowAdd:
				for _, g := range groupsOf(f) {
					if groups[g] == nil {
						return fmt.Errorf("message %d: %s uses missing group %d", i, f, g)
					}
				}
				flows[key(f)] = f
			case openflow.FlowDeleteStrict:
				delete(flows, key(f))
			case openflow.FlowDelete:
				for k, x := range flows {
					if (f.TableID() == openflow.TableAll || x.TableID() == f.TableID()) && x.CookieValue()&m.CookieMask == f.CookieValue()&m.CookieMask {
						delete(flows, k)
					}
				}
			}
		case *openflow.GroupMod:
			g := m.Group
			switch m.Command {
			case openflow.GroupAdd, openflow.GroupAddOrModify, openflow.GroupModify:
				c := *g
				groups[g.ID] = &c
			case openflow.GroupInsertBuckets:
				c := *groups[g.ID]
				c.Buckets = append(slices.Clone(c.Buckets), g.Buckets...)
				groups[g.ID] = &c
			case openflow.GroupDelete:
				for id := range groups {
					if g.ID == openflow.GroupAll || id == g.ID {
						delete(groups, id)
						for k, f := range flows {
							if slices.Contains(groupsOf(f), id) {
								delete(flows, k)
							}
						}
					}
				}
			}
		}
	}
	n.flows, n.groups = flows, groups
	if err := n.failNext; err != nil {
		n.failNext, n.commitThenFail = nil, false
		return err // committed, but the caller cannot know
	}
	return nil
}

func (n *fakeNode) Apply(_ context.Context, msgs ...openflow.Message) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.applied = append(n.applied, msgs...)
	return nil
}

func (n *fakeNode) DumpFlows(_ context.Context, table uint8, cookie, mask uint64) ([]openflow.FlowStats, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []openflow.FlowStats
	for _, f := range n.flows {
		if (table == openflow.TableAll || f.TableID() == table) && f.CookieValue()&mask == cookie&mask {
			out = append(out, openflow.FlowStats{Flow: f})
		}
	}
	return out, nil
}

func key(f *openflow.Flow) string { return flowKey(f) }

func groupsOf(f *openflow.Flow) []uint32 {
	acts, _ := openflow.DecodeInstructions(f.InstructionBytes())
	var out []uint32
	for _, a := range acts {
		if g, ok := a.(openflow.Group); ok {
			out = append(out, uint32(g))
		}
	}
	return out
}

// text renders the bridge: flows sorted, then groups, without cookies'
// rounds.
func (n *fakeNode) text() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var lines []string
	for _, f := range n.flows {
		lines = append(lines, f.String())
	}
	slices.Sort(lines)
	for _, id := range slices.Sorted(maps.Keys(n.groups)) {
		lines = append(lines, n.groups[id].String())
	}
	return strings.Join(lines, "\n")
}

func (n *fakeNode) lastBundle() []openflow.Message {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.bundles) == 0 {
		return nil
	}
	return n.bundles[len(n.bundles)-1]
}

func newController(t *testing.T, n *fakeNode, mod func(*Config)) *Controller {
	t.Helper()
	cfg := Config{NodeName: "node-1", Node: n, Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func service(name, ip string, port int32, mod func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip},
			Ports: []corev1.ServicePort{{Name: "http", Port: port, Protocol: corev1.ProtocolTCP}}},
	}
	if mod != nil {
		mod(s)
	}
	return s
}

// slice is an EndpointSlice of Service name, port http/TCP 8080, with
// ready endpoints "ip@node".
func slice(name string, eps ...string) *discoveryv1.EndpointSlice {
	pn, port, proto := "http", int32(8080), corev1.ProtocolTCP
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &pn, Port: &port, Protocol: &proto}},
	}
	for _, e := range eps {
		ip, node, _ := strings.Cut(e, "@")
		nn := node
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, NodeName: &nn})
	}
	return s
}
