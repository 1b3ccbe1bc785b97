package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/seine-cni/seine/cni"
	"github.com/seine-cni/seine/core/ipam"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/ovs/ovsdb"
)

func TestRestartRecovery(t *testing.T) {
	w := newWorld(t, twoNodesSlice()...)
	a, stop := w.start()
	waitReady(t, a)
	ctx := context.Background()
	for _, id := range []string{"c1", "c2"} {
		if _, err := a.Add(ctx, w.req(cni.CmdAdd, id, "web-"+id)); err != nil {
			t.Fatal(err)
		}
	}
	before := w.sw.rounds()
	stop()

	// While the agent is down: an address without a port (a crash between
	// IPAM and OVSDB) and a port without an address.
	al, err := ipam.Open(ipam.Options{Dir: filepath.Join(w.cfg.StateDir, "ipam"), PodCIDRs: a.ipam.PodCIDRs()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := al.Allocate(ipam.Owner{Key: ipam.Key{ContainerID: "stray-ip", IfName: "eth0"}, PodNamespace: "default", PodName: "stray"}); err != nil {
		t.Fatal(err)
	}
	if err := w.db.EnsurePort(ctx, "br-int", ovsdb.PortConfig{Name: "stray-port", ExternalIDs: map[string]string{
		extType: extTypePod, extNamespace: "default", extName: "ghost", extContainerID: "stray-port", extIfName: "eth0",
		extIP: "10.244.1.99/24", extMAC: "0a:00:00:00:00:99", extNetNS: "/nonexistent",
	}}); err != nil {
		t.Fatal(err)
	}

	b, _ := w.start()
	waitReady(t, b)
	for _, id := range []string{"c1", "c2"} {
		if err := b.Check(ctx, w.req(cni.CmdCheck, id, "web-"+id)); err != nil {
			t.Errorf("recovered pod %s: %v", id, err)
		}
	}
	if ps := w.db.podPorts(); slices.Contains(ps, "stray-port") || len(ps) != 2 {
		t.Errorf("pod ports after recovery: %v, want the two real ones", ps)
	}
	if _, ok := b.ipam.Lookup(ipam.Key{ContainerID: "stray-ip", IfName: "eth0"}); ok {
		t.Error("the address without a port was not released")
	}
	after := w.sw.rounds()
	if len(after) != 1 || slices.Equal(before, after) {
		t.Errorf("flow rounds %v before the restart, %v after: want one new round", before, after)
	}
	if n := w.sw.count(pipeline.CategoryPod, 0); n == 0 {
		t.Error("no pod flows after the restart")
	}

	// ovs-vswitchd restarts: the flows come back on the new connection.
	if err := w.sw.restart(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"c1", "c2"} {
		if err := b.Check(ctx, w.req(cni.CmdCheck, id, "web-"+id)); err != nil {
			t.Errorf("pod %s after a vswitchd restart: %v", id, err)
		}
	}
	if n := w.sw.count(pipeline.CategoryPeer, pipeline.PeerID("node-2")); n == 0 {
		t.Error("no peer flows after a vswitchd restart")
	}
	conf, err := os.ReadFile(filepath.Join(w.cfg.CNIConfDir, CNIConfFile))
	socket, _ := json.Marshal(w.cfg.CNISocket) // as the conflist's JSON has it
	if err != nil || !strings.Contains(string(conf), string(socket)) || !strings.Contains(string(conf), `"type": "seine"`) {
		t.Errorf("CNI config: %v\n%s", err, conf)
	}
}

// TestRecoveryAfterOVSDBWiped: the OVS database loses every pod port while
// the agent is down (recreated, or conf.db deleted) and the pods keep
// running: the restarted agent plugs the living pods in again with their
// addresses, also a pod whose interface comes late, and frees only the
// address of the pod whose namespace is gone.
func TestRecoveryAfterOVSDBWiped(t *testing.T) {
	for _, late := range []bool{false, true} {
		t.Run(map[bool]string{false: "veth", true: "late interface"}[late], func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, twoNodesSlice()...)
			if late {
				w = lateWorld(t)
			}
			a, stop := w.start()
			waitReady(t, a)
			const deadNS = "8d9a3c2e-9999-4e5f-9a0b-0123456789ab"
			for _, id := range []string{"c1", "c2", "dead"} {
				r := w.req(cni.CmdAdd, id, "web-"+id)
				if id == "dead" {
					r.Netns = deadNS
				}
				if _, err := a.Add(ctx, r); err != nil {
					t.Fatal(err)
				}
				if late {
					ref := w.ref(id, "web-"+id)
					ref.NetNS = r.Netns
					w.backend.FakePodAttacher.StartSandbox(ref)
				}
			}
			for _, id := range []string{"c1", "c2"} {
				poll(t, id+" connected", func() (bool, string) {
					err := a.Check(ctx, w.req(cni.CmdCheck, id, "web-"+id))
					return err == nil, fmt.Sprint(err)
				})
			}
			before := map[string]string{}
			for _, al := range a.ipam.List() {
				before[al.ContainerID] = fmt.Sprint(al.IPs)
			}
			stop()
			for _, port := range w.db.podPorts() {
				if err := w.db.DeletePort(ctx, port); err != nil {
					t.Fatal(err)
				}
			}
			w.backend.FakePodAttacher.RemoveNetNS(deadNS)

			b, _ := w.start()
			waitReady(t, b)
			for _, id := range []string{"c1", "c2"} {
				poll(t, id+" plugged again", func() (bool, string) {
					err := b.Check(ctx, w.req(cni.CmdCheck, id, "web-"+id))
					return err == nil, fmt.Sprint(err)
				})
				al, ok := b.ipam.Lookup(ipam.Key{ContainerID: id, IfName: "eth0"})
				if !ok || fmt.Sprint(al.IPs) != before[id] {
					t.Errorf("pod %s: addresses %v (%v) after the restart, %s before", id, al.IPs, ok, before[id])
				}
			}
			if _, ok := b.ipam.Lookup(ipam.Key{ContainerID: "dead", IfName: "eth0"}); ok {
				t.Error("the dead pod's address was not freed")
			}
			if ps := w.db.podPorts(); len(ps) != 2 {
				t.Errorf("pod ports after the restart: %v, want the two living pods'", ps)
			}
		})
	}
}
