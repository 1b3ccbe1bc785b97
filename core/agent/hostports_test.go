package agent

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/seine-cni/seine/cni"
	"github.com/seine-cni/seine/core/pipeline"
)

// withPortMappings is req with the runtime's portMappings (the
// capability the conflist declares).
func withPortMappings(r *cni.Request, mappings string) *cni.Request {
	r.NetConf = &cni.NetConf{RuntimeConfig: map[string]json.RawMessage{"portMappings": json.RawMessage(mappings)}}
	return r
}

// Host ports from ADD to DEL: the upstream spec's three pods on one port
// (127.0.0.1 TCP, the node IP TCP and UDP) are mapped (host DNAT, flows,
// external_ids); a fourth on every address over TCP is refused with the
// pod that holds it and leaves nothing behind; a restarted agent keeps the
// mappings and still refuses it; DEL frees the port.
func TestHostPorts(t *testing.T) {
	w := newWorld(t, twoNodesSlice()...)
	a, stop := w.start()
	waitReady(t, a)
	ctx := context.Background()
	pods := []struct{ id, name, mappings, ext, host string }{
		{"c1", "pod1", `[{"hostPort":54323,"containerPort":8080,"protocol":"tcp","hostIP":"127.0.0.1"}]`,
			"tcp/127.0.0.1:54323:8080", "host port tcp/54323 127.0.0.1:54323 -> 10.244.1.2:8080"},
		{"c2", "pod2", `[{"hostPort":54323,"containerPort":8080,"protocol":"tcp","hostIP":"172.30.0.11"}]`,
			"tcp/172.30.0.11:54323:8080", "host port tcp/54323 172.30.0.11:54323 -> 10.244.1.3:8080"},
		{"c3", "pod3", `[{"hostPort":54323,"containerPort":8080,"protocol":"udp","hostIP":"172.30.0.11"}]`,
			"udp/172.30.0.11:54323:8080", "host port udp/54323 172.30.0.11:54323 -> 10.244.1.4:8080"},
	}
	for _, p := range pods {
		if _, err := a.Add(ctx, withPortMappings(w.req(cni.CmdAdd, p.id, p.name), p.mappings)); err != nil {
			t.Fatalf("ADD %s: %v", p.name, err)
		}
	}
	check := func(when string) {
		t.Helper()
		dump := w.backend.FakeNodePorts.Dump()
		for _, p := range pods {
			if !strings.Contains(dump, p.host) {
				t.Errorf("%s: host DNAT lacks %q:\n%s", when, p.host, dump)
			}
		}
		got := map[string]string{}
		for _, name := range w.db.podPorts() {
			info, _ := w.db.GetPort(ctx, name)
			got[info.ExternalIDs[extName]] = info.ExternalIDs[extHostPorts]
		}
		for _, p := range pods {
			if got[p.name] != p.ext {
				t.Errorf("%s: %s's external_ids[%s] = %q, want %q", when, p.name, extHostPorts, got[p.name], p.ext)
			}
		}
		if !strings.Contains(w.sw.text(), "udp,in_port=") || !strings.Contains(w.sw.text(), "nw_dst=172.30.0.11,tp_dst=54323 actions=") {
			t.Errorf("%s: no host port flows:\n%s", when, w.sw.text())
		}
	}
	check("after ADD")
	conflict := `[{"hostPort":54323,"containerPort":80,"protocol":"TCP"}]`
	refused := func(a *Agent, when string) {
		t.Helper()
		_, err := a.Add(ctx, withPortMappings(w.req(cni.CmdAdd, "c4", "web"), conflict))
		if err == nil || !strings.Contains(err.Error(), "host port tcp/*:54323:80: pod default/pod") || !strings.Contains(err.Error(), "already in use") {
			t.Errorf("%s: ADD of a pod on a taken host port: %v", when, err)
		}
		if n := w.sw.count(pipeline.CategoryPod, pipeline.PodID("default", "web")); n != 0 {
			t.Errorf("%s: the refused pod left %d flows", when, n)
		}
		if len(w.db.podPorts()) != len(pods) {
			t.Errorf("%s: pod ports %v", when, w.db.podPorts())
		}
	}
	refused(a, "before restart")

	stop()
	b, _ := w.start()
	waitReady(t, b)
	check("after restart")
	refused(b, "after restart")

	if err := b.Del(ctx, w.req(cni.CmdDel, "c2", "pod2")); err != nil {
		t.Fatal(err)
	}
	if dump := w.backend.FakeNodePorts.Dump(); strings.Contains(dump, "10.244.1.3") {
		t.Errorf("host DNAT after DEL of pod2:\n%s", dump)
	}
	// pod1 (127.0.0.1) still holds TCP 54323 on one address: every
	// address is refused, the node IP is free.
	if _, err := b.Add(ctx, withPortMappings(w.req(cni.CmdAdd, "c4", "web"), conflict)); err == nil {
		t.Error("every address over TCP 54323 taken while pod1 holds 127.0.0.1")
	}
	if _, err := b.Add(ctx, withPortMappings(w.req(cni.CmdAdd, "c5", "web"), `[{"hostPort":54323,"containerPort":80,"hostIP":"172.30.0.11"}]`)); err != nil {
		t.Errorf("the node IP's TCP 54323 after pod2 left: %v", err)
	}
	// A bad mapping is the network configuration's error.
	if _, err := b.Add(ctx, withPortMappings(w.req(cni.CmdAdd, "c6", "web6"), `[{"hostPort":0,"containerPort":80}]`)); cniCode(err) != 7 {
		t.Errorf("ADD with host port 0: code %d (%v), want 7", cniCode(err), err)
	}
}

// A UDP host port's stale conntrack entries in the bridge (a pod that sent
// to the node IP's port before the mapping, committed as plain traffic and
// never DNATed while its source port stays) are flushed when the pod with
// the port is added; TCP needs nothing.
func TestHostPortsFlushUDPConntrack(t *testing.T) {
	w := newWorld(t, twoNodesSlice()...)
	vsd := newFakeVswitchd()
	w.vswitchd = vsd.dial
	a, _ := w.start()
	waitReady(t, a)
	ctx := context.Background()
	m := `[{"hostPort":54323,"containerPort":8080,"protocol":"udp"},{"hostPort":54324,"containerPort":8080,"protocol":"tcp"}]`
	if _, err := a.Add(ctx, withPortMappings(w.req(cni.CmdAdd, "c1", "dns"), m)); err != nil {
		t.Fatal(err)
	}
	vsd.mu.Lock()
	calls := strings.Join(vsd.calls, "\n")
	vsd.mu.Unlock()
	if want := "dpctl/flush-conntrack zone=65520 ct_nw_proto=17,ct_nw_dst=172.30.0.11,ct_tp_dst=54323"; !strings.Contains(calls, want) {
		t.Errorf("no %q among the calls to ovs-vswitchd:\n%s", want, calls)
	}
	if strings.Contains(calls, "54324") {
		t.Errorf("TCP host port flushed:\n%s", calls)
	}
}
