package proxier

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"

	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/openflow"
)

// replay does what the agent's full replay does with ReplayMessages.
func replay(t *testing.T, c *Controller, n *fakeNode) {
	t.Helper()
	_, msgs, flows, err := c.ReplayMessages(*n.node, n.round)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range flows {
		msgs = append(msgs, flowMod(openflow.FlowAdd, f))
	}
	if err := n.Bundle(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
}

func syncOK(t *testing.T, c *Controller) {
	t.Helper()
	if err := c.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func countKinds(msgs []openflow.Message) (groupMods, flowAdds, flowDels, groupDels int) {
	for _, m := range msgs {
		switch m := m.(type) {
		case *openflow.GroupMod:
			if m.Command == openflow.GroupDelete {
				groupDels++
			} else {
				groupMods++
			}
		case *openflow.FlowMod:
			if m.Command == openflow.FlowAdd {
				flowAdds++
			} else {
				flowDels++
			}
		}
	}
	return
}

// A primed controller's Services are installed by the replay; later
// changes install only what changed, one Service at a time.
func TestSyncInstallsWhatChanged(t *testing.T) {
	n := newFakeNode()
	c := newController(t, n, nil)
	for _, name := range []string{"a", "b", "web"} {
		c.UpdateService(service(name, "10.96.0."+map[string]string{"a": "1", "b": "2", "web": "10"}[name], 80, nil))
		c.UpdateSlice(slice(name, "10.244.1.5@node-1", "10.244.2.5@node-2"))
	}
	c.Prime()
	replay(t, c, n)
	if got := strings.Count(n.text(), "group_id="); got != 3 {
		t.Fatalf("%d groups after the replay, want 3:\n%s", got, n.text())
	}
	before := len(n.bundles)
	syncOK(t, c)
	if len(n.bundles) != before {
		t.Fatalf("a sync without changes sent %d bundles", len(n.bundles)-before)
	}
	// One endpoint of web goes: only web's group is replaced.
	c.UpdateSlice(slice("web", "10.244.1.5@node-1"))
	syncOK(t, c)
	gm, fa, fd, gd := countKinds(n.lastBundle())
	if gm != 1 || fa != 0 || fd != 0 || gd != 0 {
		t.Errorf("endpoint change: %d group mods, %d flow adds, %d flow deletes, %d group deletes; want only 1 group mod",
			gm, fa, fd, gd)
	}
	if strings.Contains(n.text(), "10.244.2.5:8080),exec") && strings.Count(n.text(), "10.244.2.5") != 2 {
		t.Errorf("web still balances to the removed endpoint:\n%s", n.text())
	}
	// web goes: its flows and group go, the others stay.
	c.DeleteService("default", "web")
	syncOK(t, c)
	if strings.Contains(n.text(), "10.96.0.10") || strings.Count(n.text(), "group_id=") != 2 {
		t.Errorf("after deleting web:\n%s", n.text())
	}
}

// A change of traffic policy that moves a frontend to another group adds
// the new group before the flows that use it and deletes the old one after
// them (antrea-io/antrea#3301 failed with OFPBAC_BAD_OUT_GROUP there).
func TestSyncOrdersGroupsAroundFlows(t *testing.T) {
	n := newFakeNode()
	c := newController(t, n, nil)
	c.UpdateService(service("web", "10.96.0.10", 80, nil))
	c.UpdateSlice(slice("web", "10.244.1.5@node-1", "10.244.2.5@node-2"))
	c.Prime()
	replay(t, c, n)
	local := corev1.ServiceInternalTrafficPolicyLocal
	c.UpdateService(service("web", "10.96.0.10", 80, func(s *corev1.Service) { s.Spec.InternalTrafficPolicy = &local }))
	syncOK(t, c)
	msgs := n.lastBundle()
	firstAdd, lastFlow, groupDel := -1, -1, -1
	for i, m := range msgs {
		switch m := m.(type) {
		case *openflow.GroupMod:
			if m.Command == openflow.GroupDelete {
				groupDel = i
			} else if firstAdd < 0 {
				firstAdd = i
			}
		case *openflow.FlowMod:
			lastFlow = i
		}
	}
	if firstAdd != 0 || groupDel < lastFlow || groupDel < 0 {
		t.Errorf("bundle order: group add at %d, last flow-mod at %d, group delete at %d:\n%v", firstAdd, lastFlow, groupDel, msgs)
	}
	if !strings.Contains(n.text(), "nat(dst=10.244.1.5:8080)") || strings.Contains(n.text(), "nat(dst=10.244.2.5:8080)") {
		t.Errorf("internalTrafficPolicy Local:\n%s", n.text())
	}
}

// After a bundle whose outcome is unknown the next sync clears the
// Service's flows by cookie and installs them again, in the same bundle.
func TestSyncAfterUnknownOutcome(t *testing.T) {
	n := newFakeNode()
	c := newController(t, n, nil)
	c.UpdateService(service("web", "10.96.0.10", 80, nil))
	c.UpdateSlice(slice("web", "10.244.1.5@node-1"))
	c.Prime()
	replay(t, c, n)
	c.UpdateSlice(slice("web", "10.244.1.6@node-1"))
	n.failNext, n.commitThenFail = errors.New("connection closed"), true
	if err := c.Sync(context.Background()); err == nil {
		t.Fatal("the sync did not fail")
	}
	syncOK(t, c)
	msgs := n.lastBundle()
	clear := false
	for _, m := range msgs {
		if fm, ok := m.(*openflow.FlowMod); ok && fm.Command == openflow.FlowDelete && fm.Flow.TableID() == openflow.TableAll {
			clear = true
		}
	}
	if !clear || !strings.Contains(n.text(), "nat(dst=10.244.1.6:8080)") {
		t.Errorf("retry after an unknown outcome: cleared by cookie %v:\n%s", clear, n.text())
	}
	// A rejected bundle changed nothing: the retry is an ordinary diff.
	c.UpdateSlice(slice("web", "10.244.1.7@node-1"))
	n.failNext = &openflow.Error{Msg: &openflow.ErrorMsg{Type: openflow.ErrTypeBundleFailed}}
	if err := c.Sync(context.Background()); err == nil {
		t.Fatal("the sync did not fail")
	}
	syncOK(t, c)
	for _, m := range n.lastBundle() {
		if fm, ok := m.(*openflow.FlowMod); ok && fm.Command == openflow.FlowDelete {
			t.Errorf("a definite failure cleared flows: %s", openflow.Describe(fm))
		}
	}
	if !strings.Contains(n.text(), "nat(dst=10.244.1.7:8080)") {
		t.Errorf("after the retry:\n%s", n.text())
	}
}

// An endpoint of a Service with affinity that goes takes its learned
// flows along (they carry its cookie), and only its own: the learned
// flows of the Service's other endpoint and of another Service with
// affinity stay. The learned flows are put in the switch as OVS's learn
// action would (round 0, category affinity, the endpoint's AffinityID);
// the fake switch deletes by cookie and mask as OVS does.
func TestSyncForgetsLearnedEndpoints(t *testing.T) {
	n := newFakeNode()
	c := newController(t, n, nil)
	sticky := func(s *corev1.Service) { s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP }
	c.UpdateService(service("web", "10.96.0.10", 80, sticky))
	c.UpdateSlice(slice("web", "10.244.1.5@node-1", "10.244.2.5@node-2"))
	c.UpdateService(service("api", "10.96.0.11", 80, sticky))
	c.UpdateSlice(slice("api", "10.244.1.6@node-1"))
	c.Prime()
	replay(t, c, n)
	learned := func(svc, ep, client string) string {
		c.instMu.Lock()
		id := pipeline.AffinityID(c.installed["default/"+svc].ids["http/TCP"], netip.MustParseAddrPort(ep))
		c.instMu.Unlock()
		f := openflow.NewFlow(uint8(pipeline.SessionAffinity), 200).
			Cookie(uint64(pipeline.NewCookie(0, pipeline.CategoryAffinity, id))).
			Match(openflow.NewMatch().IP().IPSrcAddr(netip.MustParseAddr(client)).IPDstAddr(netip.MustParseAddr(map[string]string{"web": "10.96.0.10", "api": "10.96.0.11"}[svc])))
		k := key(f)
		n.mu.Lock()
		n.flows[k] = f
		n.mu.Unlock()
		return k
	}
	gone, webKept, apiKept := learned("web", "10.244.2.5:8080", "10.244.1.8"), learned("web", "10.244.1.5:8080", "10.244.1.9"), learned("api", "10.244.1.6:8080", "10.244.1.9")
	c.UpdateSlice(slice("web", "10.244.1.5@node-1"))
	syncOK(t, c)
	var dels []string
	for _, m := range n.lastBundle() {
		if fm, ok := m.(*openflow.FlowMod); ok && fm.Command == openflow.FlowDelete && fm.Flow.TableID() == uint8(pipeline.SessionAffinity) {
			dels = append(dels, openflow.Describe(fm))
		}
	}
	if len(dels) != 1 {
		t.Errorf("%d learned-flow deletes, want 1: %v", len(dels), dels)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, w := range []struct {
		key, what string
		want      bool
	}{{gone, "web's learned flow of the endpoint that went", false}, {webKept, "web's learned flow of the endpoint that stays", true}, {apiKept, "api's learned flow", true}} {
		if _, ok := n.flows[w.key]; ok != w.want {
			t.Errorf("%s: in the switch %v, want %v (deletes %v)", w.what, ok, w.want, dels)
		}
	}
}

// The network programming latency counts from the slice's
// last-change-trigger-time to the flows installed; a failed sync keeps
// the trigger time for its retry.
func TestProgrammingDuration(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	n := newFakeNode()
	c := newController(t, n, func(cfg *Config) { cfg.Metrics = m })
	c.UpdateService(service("web", "10.96.0.10", 80, nil))
	c.Prime()
	replay(t, c, n)
	s := slice("web", "10.244.1.5@node-1")
	s.Annotations = map[string]string{corev1.EndpointsLastChangeTriggerTime: time.Now().Add(-2 * time.Second).Format(time.RFC3339Nano)}
	c.UpdateSlice(s)
	n.failNext = &openflow.Error{Msg: &openflow.ErrorMsg{Type: openflow.ErrTypeBundleFailed}}
	if err := c.Sync(context.Background()); err == nil {
		t.Fatal("the sync did not fail")
	}
	syncOK(t, c)
	var pb dto.Metric
	if err := m.ProgrammingDuration.Write(&pb); err != nil {
		t.Fatal(err)
	}
	if h := pb.GetHistogram(); h.GetSampleCount() != 1 || h.GetSampleSum() < 2 || h.GetSampleSum() > 60 {
		t.Errorf("programming duration: %d samples, sum %.3f s; want 1 of 2 s and a little", h.GetSampleCount(), h.GetSampleSum())
	}
}

// TestHostAddresses: the host's routed addresses and node ports are
// counted as Services are installed and removed (the agent reads them
// after every sync instead of every Service): an external IP two Services
// share stays until the last one goes.
func TestHostAddresses(t *testing.T) {
	n := newFakeNode()
	c := newController(t, n, nil)
	ext := func(ips ...string) func(*corev1.Service) {
		return func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeNodePort
			s.Spec.ExternalIPs = ips
			s.Spec.Ports[0].NodePort = 30000 + s.Spec.Ports[0].Port
		}
	}
	c.UpdateService(service("a", "10.96.0.1", 80, ext("192.0.2.1", "192.0.2.2")))
	c.UpdateService(service("b", "10.96.0.2", 81, ext("192.0.2.2")))
	c.Prime()
	replay(t, c, n)
	got := func() string {
		ips, ports := c.HostAddresses()
		return fmt.Sprint(ips, ports)
	}
	if g := got(); g != "[192.0.2.1 192.0.2.2] [{6 30080} {6 30081}]" {
		t.Fatalf("after the replay: %s", g)
	}
	c.DeleteService("default", "a")
	syncOK(t, c)
	if g := got(); g != "[192.0.2.2] [{6 30081}]" {
		t.Errorf("a deleted: %s, want b's", g)
	}
	c.UpdateService(service("b", "10.96.0.2", 81, nil))
	syncOK(t, c)
	if g := got(); g != "[] []" {
		t.Errorf("b a ClusterIP: %s, want nothing", g)
	}
}
