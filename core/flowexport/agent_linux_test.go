package flowexport_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vmware/go-ipfix/pkg/collector"
	"github.com/vmware/go-ipfix/pkg/entities"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seine-cni/seine/core/agent"
	"github.com/seine-cni/seine/core/flowexport"
	"github.com/seine-cni/seine/test/agenttest"
	"github.com/seine-cni/seine/test/lab/netns"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// agentCollector runs go-ipfix's TCP collecting process on a free local
// port for the agents' records; it is stopped in t.Cleanup (Stop waits for
// its messages to be read: the rest are drained).
func agentCollector(t *testing.T) (*collector.CollectingProcess, string) {
	t.Helper()
	cp, err := collector.InitCollectingProcess(collector.CollectorInput{Address: "127.0.0.1:0", Protocol: "tcp",
		MaxBufferSize: 65535, DecodingMode: collector.DecodingModeStrict})
	if err != nil {
		t.Fatal(err)
	}
	go cp.Start()
	t.Cleanup(func() {
		done := make(chan struct{})
		go func() {
			for {
				select {
				case <-cp.GetMsgChan():
				case <-done:
					return
				}
			}
		}()
		cp.Stop()
		close(done)
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if a := cp.GetAddress(); a != nil {
			if _, port, _ := net.SplitHostPort(a.String()); port != "0" {
				return cp, a.String()
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("collector did not start")
		}
	}
}

// agentExport is the agents' flow export to addr: polls every 200 ms,
// records at the end of a connection only.
func agentExport(addr string) agenttest.Options {
	return agenttest.Options{FlowExport: &agent.FlowExportConfig{
		Collector: addr, Transport: "tcp",
		PollInterval: metav1.Duration{Duration: 200 * time.Millisecond}, ActiveTimeout: metav1.Duration{Duration: time.Hour},
		IdleTimeout: metav1.Duration{Duration: time.Hour},
	}}
}

// addPod adds a pod "default/<name>" on n through seine-cni and tells
// every agent's API about it (on node); it returns its netns and address.
func addPod(t *testing.T, ctx context.Context, n *agenttest.Node, node, name string, apis ...*agenttest.Node) (string, netip.Addr) {
	t.Helper()
	ns := ovsdaemon.NewNetNS(t)
	rt := &libcni.RuntimeConf{ContainerID: "flowexport-" + name, NetNS: ns, IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", name}}}
	r, err := n.CNI.AddNetworkList(ctx, n.Config, rt)
	if err != nil {
		t.Fatalf("ADD %s: %v", name, err)
	}
	t.Cleanup(func() { n.CNI.DelNetworkList(context.Background(), n.Config, rt) })
	res, err := current.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	ip, _ := netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
	for _, k := range apis {
		if _, err := k.Kube.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec:       corev1.PodSpec{NodeName: node},
			Status:     corev1.PodStatus{PodIPs: []corev1.PodIP{{IP: ip.String()}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return ns, ip
}

// TestAgentsExportAcrossNodes runs two real seine-agents (test/agenttest:
// real OVS, the Linux backend, pods added through seine-cni) configured to
// export to go-ipfix's collector, sends 100 kB from a pod on node-1 to a
// pod on node-2 through the Geneve tunnel, and checks that both nodes
// export the connection with both pods, their nodes and the flow type
// named from the Kubernetes API.
func TestAgentsExportAcrossNodes(t *testing.T) {
	ovsdaemon.SkipUnlessCanRun(t)
	cp, addr := agentCollector(t)
	n1, n2 := agenttest.StartPair(t, agentExport(addr))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// A pod on each node; both agents learn both pods from their API.
	type pod struct {
		ns string
		ip netip.Addr
	}
	add := func(n *agenttest.Node, node, name string) pod {
		ns, ip := addPod(t, ctx, n, node, name, n1, n2)
		return pod{ns: ns, ip: ip}
	}
	cli := add(n1, "node-1", "client")
	srv := add(n2, "node-2", "server")

	var ln net.Listener
	if err := netns.Do(srv.ns, func() (err error) {
		ln, err = net.Listen("tcp", srv.ip.String()+":8080")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(io.Discard, c)
				c.Write([]byte("ok"))
			}()
		}
	}()
	var sport int
	// The first packet to a new node may be lost while OVS resolves the
	// tunnel's next hop: the dial retries.
	if err := netns.Do(cli.ns, func() error {
		var c net.Conn
		var err error
		for i := 0; i < 5; i++ {
			if c, err = net.DialTimeout("tcp", srv.ip.String()+":8080", 3*time.Second); err == nil {
				break
			}
		}
		if err != nil {
			return err
		}
		sport = c.LocalAddr().(*net.TCPAddr).Port
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.Write(make([]byte, 100_000)); err != nil {
			return err
		}
		c.(*net.TCPConn).CloseWrite()
		b, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(b) != "ok" {
			return fmt.Errorf("server answered %q, %v", b, err)
		}
		return nil
	}); err != nil {
		t.Fatalf("client -> server: %v", err)
	}

	// Each node exports the ended connection once.
	want := map[uint32]string{flowexport.ObservationDomainID("node-1"): "node-1", flowexport.ObservationDomainID("node-2"): "node-2"}
	seen := map[string]bool{}
	end := time.After(60 * time.Second)
	for len(seen) < 2 {
		select {
		case m := <-cp.GetMsgChan():
			set := m.GetSet()
			if set.GetSetType() != entities.Data {
				continue
			}
			for _, r := range set.GetRecords() {
				f := r.GetElementMap()
				if fmt.Sprint(f["sourceTransportPort"]) != fmt.Sprint(sport) || fmt.Sprint(f["destinationTransportPort"]) != "8080" {
					continue
				}
				node, ok := want[m.GetObsDomainID()]
				if !ok {
					t.Errorf("record from unknown observation domain %d", m.GetObsDomainID())
					continue
				}
				got := fmt.Sprintf("%v %v->%v reason=%v state=%v type=%v src=%v/%v@%v dst=%v/%v@%v", node,
					f["sourceIPv4Address"], f["destinationIPv4Address"], f["flowEndReason"], f["tcpState"], f["flowType"],
					f["sourcePodNamespace"], f["sourcePodName"], f["sourceNodeName"],
					f["destinationPodNamespace"], f["destinationPodName"], f["destinationNodeName"])
				exp := fmt.Sprintf("%v %v->%v reason=3 state=TIME_WAIT type=2 src=default/client@node-1 dst=default/server@node-2", node, cli.ip, srv.ip)
				if got != exp {
					t.Errorf("record:\n got %s\nwant %s", got, exp)
				}
				seen[node] = true
			}
		case <-end:
			t.Fatalf("records for the connection came from %v, want node-1 and node-2", seen)
		}
	}
}
