package dataplanebench

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seine-cni/seine/test/lab"
	"github.com/seine-cni/seine/test/lab/labtest"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

const (
	iperfSeconds = 4
	runs         = 3
)

// BenchmarkPodToPodTCP runs iperf3 (4 s) from a pod on node-1 to a pod on
// node-2 of a 2-node lab, once through Seine (pods made by seine-cni, the
// agent's pipeline, geneve between the nodes) and once through a plain
// netdev bridge br-plain with only the NORMAL flow on each node's own
// ovs-vswitchd, joined by a direct veth between the node namespaces, with
// two extra pod namespaces of the same MTU and tx checksum offload off. The
// two sides alternate, three times each; it reports the mean of each side's successful runs, the ratio,
// and how many runs failed (iperf3 reported an error or nothing received).
func BenchmarkPodToPodTCP(b *testing.B) {
	c, cs := upLab(b, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for _, p := range []struct{ name, node string }{{"iperf-server", "node-2"}, {"iperf-client", "node-1"}} {
		if _, err := cs.CoreV1().Pods("default").Create(ctx, labtest.PinnedPod(p.name, p.node), metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	srv, err := labtest.WaitPodReady(ctx, cs, "iperf-server", 2*time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	cli, err := labtest.WaitPodReady(ctx, cs, "iperf-client", 2*time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	srvNS, err := c.PodNetNS(srv)
	if err != nil {
		b.Fatal(err)
	}
	cliNS, err := c.PodNetNS(cli)
	if err != nil {
		b.Fatal(err)
	}
	// The first packets to a new remote node are dropped while OVS resolves
	// the tunnel next hop: measure only once a TCP handshake gets through.
	waitTCP(b, cliNS, srv.Status.PodIP)
	mtu := linkMTU(b, cliNS, "eth0")
	plainSrv, plainCli := plainPods(b, c, mtu)
	b.Logf("pod MTU %d on both sides", mtu)

	for b.Loop() {
		var seineRuns, plainRuns []float64
		for range runs {
			if bps := iperf(b, srvNS, cliNS, srv.Status.PodIP); bps > 0 {
				seineRuns = append(seineRuns, bps)
			}
			if bps := iperf(b, plainSrv, plainCli, "10.251.0.2"); bps > 0 {
				plainRuns = append(plainRuns, bps)
			}
		}
		if len(seineRuns) == 0 || len(plainRuns) == 0 {
			b.Fatalf("no successful run: seine %d, plain %d of %d", len(seineRuns), len(plainRuns), runs)
		}
		seine, plain := mean(seineRuns), mean(plainRuns)
		b.ReportMetric(float64(2*runs-len(seineRuns)-len(plainRuns)), "failed-runs")
		b.ReportMetric(seine/1e9, "seine-Gbit/s")
		b.ReportMetric(plain/1e9, "plain-normal-Gbit/s")
		b.ReportMetric(seine/plain, "ratio")
	}
}

// plainPods builds br-plain on node-1 and node-2 (NORMAL only), a veth
// between the two node namespaces on those bridges, and one pod namespace
// per node on them: 10.251.0.1 (client, node-1) and 10.251.0.2 (server,
// node-2). It returns the server's and the client's namespace.
func plainPods(b *testing.B, c *lab.Config, mtu int) (srv, cli string) {
	b.Helper()
	ctx := context.Background()
	ovs := map[string]*ovsdaemon.Daemon{}
	for _, n := range []string{"node-1", "node-2"} {
		d, err := ovsdaemon.Attach(c.NodeOVSDir(n))
		if err != nil {
			b.Fatal(err)
		}
		ovs[n] = d
		if out, err := d.Vsctl(ctx, "add-br", "br-plain", "--", "set", "Bridge", "br-plain", "datapath_type=netdev"); err != nil {
			b.Fatalf("add-br on %s: %v\n%s", n, err, out)
		}
		b.Cleanup(func() {
			if out, err := d.Vsctl(context.Background(), "--if-exists", "del-br", "br-plain"); err != nil {
				b.Errorf("del-br on %s: %v\n%s", n, err, out)
			}
		})
	}
	node1, node2 := c.NetNSPath("node-1"), c.NetNSPath("node-2")
	run(b, node1, "ip", "link", "add", "plain1", "type", "veth", "peer", "name", "plain2", "netns", c.NetNS("node-2"))
	b.Cleanup(func() { _ = exec.Command("nsenter", "--net="+node1, "--", "ip", "link", "del", "plain1").Run() })
	attach := func(nodeNS, node, port string, mtu int) {
		run(b, nodeNS, "ip", "link", "set", port, "mtu", fmt.Sprint(mtu), "arp", "off", "up")
		run(b, nodeNS, "sysctl", "-qw", "net.ipv6.conf."+port+".disable_ipv6=1")
		if out, err := ovs[node].Vsctl(ctx, "add-port", "br-plain", port); err != nil {
			b.Fatalf("add-port %s: %v\n%s", port, err, out)
		}
	}
	attach(node1, "node-1", "plain1", 1500)
	attach(node2, "node-2", "plain2", 1500)
	pod := func(node, nodeNS, port, addr string) string {
		ns := ovsdaemon.NewNetNS(b)
		run(b, ns, "ip", "link", "add", "eth0", "mtu", fmt.Sprint(mtu), "type", "veth", "peer", "name", port, "netns", c.NetNS(node))
		run(b, ns, "ip", "addr", "add", addr+"/24", "dev", "eth0")
		run(b, ns, "ip", "link", "set", "eth0", "up")
		run(b, ns, "ethtool", "-K", "eth0", "tx", "off")
		attach(nodeNS, node, port, mtu)
		return ns
	}
	cli = pod("node-1", node1, "plainpod1", "10.251.0.1")
	srv = pod("node-2", node2, "plainpod2", "10.251.0.2")
	waitTCP(b, cli, "10.251.0.2")
	return srv, cli
}

// waitTCP polls until a TCP connection from ns to ip port 9 gets an answer
// (a reset: nothing listens there).
func waitTCP(b *testing.B, ns, ip string) {
	b.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := exec.Command("nsenter", "--net="+ns, "--", "timeout", "2", "bash", "-c", "exec 3<>/dev/tcp/"+ip+"/9").CombinedOutput()
		if err == nil || strings.Contains(string(out), "refused") {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("no TCP answer from %s: %s", ip, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// iperf runs one iperf3 server in srvNS for one test from cliNS to ip and
// returns the received bits per second.
func iperf(b *testing.B, srvNS, cliNS, ip string) float64 {
	b.Helper()
	srv := exec.Command("nsenter", "--net="+srvNS, "--", "iperf3", "-s", "-1", "-p", "5201")
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = srv.Process.Kill()
		_ = srv.Wait()
	}()
	var out []byte
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, err = exec.Command("nsenter", "--net="+cliNS, "--", "iperf3", "-c", ip, "-p", "5201", "-t", fmt.Sprint(iperfSeconds), "-J").CombinedOutput()
		// iperf3 -J exits 0 also when the server is not listening yet.
		if !strings.Contains(string(out), "Connection refused") || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		b.Fatalf("iperf3 -c %s: %v\n%s", ip, err, out)
	}
	var r struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			SumSent struct {
				Retransmits int `json:"retransmits"`
			} `json:"sum_sent"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		b.Fatalf("iperf3 output: %v\n%s", err, out)
	}
	if r.Error != "" || r.End.SumReceived.BitsPerSecond == 0 {
		b.Logf("%s: failed run (%q), not counted", ip, r.Error)
		return 0
	}
	b.Logf("%s: %.2f Gbit/s, %d retransmits", ip, r.End.SumReceived.BitsPerSecond/1e9, r.End.SumSent.Retransmits)
	return r.End.SumReceived.BitsPerSecond
}

func mean(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

var mtuRE = regexp.MustCompile(`mtu (\d+)`)

func linkMTU(b *testing.B, ns, dev string) int {
	b.Helper()
	m := mtuRE.FindStringSubmatch(run(b, ns, "ip", "-o", "link", "show", "dev", dev))
	if m == nil {
		b.Fatalf("no MTU for %s", dev)
	}
	var mtu int
	fmt.Sscan(m[1], &mtu)
	return mtu
}

func run(b *testing.B, ns string, args ...string) string {
	b.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=" + ns, "--"}, args...)...).CombinedOutput()
	if err != nil {
		b.Fatalf("%v in %s: %v\n%s", args, ns, err, out)
	}
	return string(out)
}
