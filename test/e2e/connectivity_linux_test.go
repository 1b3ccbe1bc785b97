package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// TestConnectivity: pods on three nodes reach every other pod by ICMP, TCP
// and UDP, in each traffic mode the lab can run (one lab per mode). Every
// lab node runs the bridged-uplink topology, whose flows are those a
// Windows node builds (core/pipeline's TestWindowsNode keeps them
// identical), so these are also the Windows flows' packets.
func TestConnectivity(t *testing.T) {
	for _, tc := range []struct{ mode, tunnel string }{
		{"encap", "geneve"},
		{"encap", "vxlan"},
		{"noEncap", "geneve"},
		{"hybrid", "geneve"},
		{"encap", "gre"},
	} {
		name := tc.mode
		if tc.mode != "noEncap" {
			name += "-" + tc.tunnel
		}
		t.Run(name, func(t *testing.T) {
			e := upLab(t, tc.mode, tc.tunnel)
			pods := e.deploy("web", 6)
			checkSpread(t, pods)
			e.pingMatrix(pods)
			for _, proto := range []string{"tcp", "udp"} {
				port := map[string]string{"tcp": "8080", "udp": "8081"}[proto]
				m, bad, err := e.c.ProbeMatrix(e.ctx, pods, proto, port)
				if err != nil {
					t.Fatal(err)
				}
				if bad > 0 {
					t.Errorf("%s: %d pod pairs could not reach each other:\n%s", proto, bad, m)
				} else {
					t.Logf("%s: all %d pods reach each other", proto, len(pods))
				}
			}
			if tc.mode == "noEncap" {
				e.checkNoEncapDirect(pods)
			}
			// The Service matrix, in both traffic modes (the Geneve labs).
			if tc.tunnel == "geneve" && tc.mode != "hybrid" {
				e.checkServices(pods, "web")
				e.checkDNSPolicy()
				if tc.mode == "encap" {
					e.checkInventory(pods)
					e.checkTieredPolicy(pods)
					e.checkServiceLifecycle(pods)
					e.checkLargeServices(pods)
				}
			}
			if tc.tunnel == "geneve" && tc.mode == "encap" {
				start := time.Now()
				big := e.deploy("big", 30)
				t.Logf("a 30-replica Deployment became Ready in %s", time.Since(start).Round(time.Millisecond))
				if len(big) != 30 {
					t.Errorf("%d ready pods, want 30", len(big))
				}
			}
			// Last: it leaves a pod isolated until the lab goes.
			start := time.Now()
			e.checkTraceflow(pods, tc.mode)
			t.Logf("traceflow checks took %s", time.Since(start).Round(time.Millisecond))
		})
	}
}

// explainLostEcho logs what tells a lost first packet from a broken path:
// whether a second echo gets through, and both nodes' tunnel neighbour
// caches (a missing next hop there drops the packet while OVS ARPs).
func (e *env) explainLostEcho(ns string, from, to *corev1.Pod) {
	e.t.Helper()
	again := pingOnce(e.ctx, ns, netip.MustParseAddr(to.Status.PodIP))
	e.t.Logf("%s -> %s: a second echo: %v", from.Name, to.Name, again)
	for _, n := range []string{from.Spec.NodeName, to.Spec.NodeName} {
		out, err := e.ovs(n).Appctl(e.ctx, "ovs-vswitchd", "tnl/neigh/show")
		e.t.Logf("%s tnl/neigh/show now (%v):\n%s", n, err, out)
	}
}

// checkSpread fails unless the pods run on all three nodes.
func checkSpread(t *testing.T, pods []corev1.Pod) {
	t.Helper()
	nodes := map[string]bool{}
	for _, p := range pods {
		nodes[p.Spec.NodeName] = true
	}
	if len(nodes) != 3 {
		t.Fatalf("pods on %d nodes, want 3", len(nodes))
	}
}

// pingMatrix pings every pod from every other pod (one echo, 2s).
func (e *env) pingMatrix(pods []corev1.Pod) {
	e.t.Helper()
	var bad []string
	for _, from := range pods {
		ns := e.podNS(&from)
		for _, to := range pods {
			if from.Name == to.Name {
				continue
			}
			if err := pingOnce(e.ctx, ns, netip.MustParseAddr(to.Status.PodIP)); err != nil {
				bad = append(bad, fmt.Sprintf("%s (%s) -> %s (%s): %v", from.Name, from.Spec.NodeName, to.Name, to.Spec.NodeName, err))
				e.explainLostEcho(ns, &from, &to)
			}
		}
	}
	if len(bad) > 0 {
		e.t.Errorf("ICMP: %d of %d pairs failed:\n%s", len(bad), len(pods)*(len(pods)-1), strings.Join(bad, "\n"))
	} else {
		e.t.Logf("icmp: all %d pods reach each other", len(pods))
	}
}
