package dataplanebench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/seine-cni/seine/test/bench/benchutil"
	"github.com/seine-cni/seine/test/lab"
	"github.com/seine-cni/seine/test/lab/labtest"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// iperfSeconds is the length of one iperf3 run; rounds the number of
// rounds in which both sides succeeded. -short shortens both: the
// benchmark then proves its code works, it does not measure.
const (
	iperfSeconds      = 4
	iperfShortSeconds = 1
	rounds            = 5
	shortRounds       = 2
)

// BenchmarkPodToPodTCP runs iperf3 (4 s) from a pod on node-1 to a pod on
// node-2 of a 2-node lab, once through Seine (pods made by seine-cni, the
// agent's pipeline, geneve between the nodes unless the environment says
// otherwise, see upLab) and once through a plain netdev bridge br-plain with
// only the NORMAL flow on each node's own ovs-vswitchd, with two extra pod
// namespaces of the same MTU and tx checksum offload off. Both sides cross
// the same underlay: each br-plain has a port on the lab's fabric bridge, as
// each node's uplink has. The sides alternate which goes first, for five
// rounds in which both succeeded: a run in which iperf3 reports an error or
// receives nothing discards its round, so the ratio always compares equal
// numbers of successful runs. It reports min and median of each side, the
// ratio seine/plain per round (median), and per side the CPU time both
// nodes' ovs-vswitchd used per GB delivered: on a machine whose cores other
// work also wants, that cost tells the datapaths apart where throughput
// mostly measures the scheduler.
func BenchmarkPodToPodTCP(b *testing.B) {
	seconds, want := iperfSeconds, rounds
	if testing.Short() {
		seconds, want = iperfShortSeconds, shortRounds
	}
	c, cs := upLab(b, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	pp := labtest.StartPodPair(ctx, b, c, cs, "iperf-server", "node-2", "iperf-client", "node-1")
	srv, srvNS, cliNS := pp.Server, pp.ServerNS, pp.ClientNS
	// The first packets to a new remote node are dropped while OVS resolves
	// the tunnel next hop: measure only once a TCP handshake gets through.
	waitTCP(b, cliNS, srv.Status.PodIP)
	mtu := linkMTU(b, cliNS, "eth0")
	plainSrv, plainCli := plainPods(b, c, mtu)
	b.Logf("pod MTU %d on both sides", mtu)

	cpu := vswitchdCPU(b, c, "node-1", "node-2")
	side := func(name, srvNS, cliNS, ip string) benchutil.Side {
		return benchutil.Side{Name: name, Run: func(int) (benchutil.Sample, error) {
			before := cpu()
			r, err := iperf(srvNS, cliNS, ip, seconds)
			used := cpu() - before
			if err != nil {
				return nil, err
			}
			b.Logf("%s: %.2f Gbit/s, %d retransmits", name, r.bps/1e9, r.retransmits)
			return benchutil.Sample{"Gbit/s": r.bps / 1e9, "vswitchd-cpu-s/GB": used / (r.bytes / 1e9)}, nil
		}}
	}
	for b.Loop() {
		r, err := benchutil.Comparison{
			Name:    fmt.Sprintf("pod -> pod TCP across nodes, iperf3 %d s", seconds),
			Metrics: []string{"Gbit/s", "vswitchd-cpu-s/GB"},
			Sides: []benchutil.Side{
				side("seine", srvNS, cliNS, srv.Status.PodIP),
				side("plain", plainSrv, plainCli, "10.251.0.2"),
			},
			Rounds: want, ShortRounds: want,
		}.Run()
		if err != nil {
			b.Fatal(err)
		}
		r.Report(b)
	}
}

// vswitchdCPU returns a function reading the CPU time (user + system, in
// seconds) the nodes' ovs-vswitchd processes have used so far. It includes
// the kernel work done on their behalf in their context: AF_PACKET receive
// and send, veth transmit, and the softirq delivery that follows a send
// (the receiving pod's TCP stack included), the same on both sides.
func vswitchdCPU(b *testing.B, c *lab.Config, nodes ...string) func() float64 {
	b.Helper()
	var pids []int
	for _, n := range nodes {
		d, err := ovsdaemon.Attach(c.NodeOVSDir(n))
		if err != nil {
			b.Fatal(err)
		}
		raw, err := os.ReadFile(d.PidfilePath("ovs-vswitchd"))
		if err != nil {
			b.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
		if err != nil {
			b.Fatalf("pidfile of ovs-vswitchd on %s: %v", n, err)
		}
		pids = append(pids, pid)
	}
	return func() float64 {
		var ticks float64
		for _, pid := range pids {
			stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if err != nil {
				b.Fatalf("ovs-vswitchd %d: %v", pid, err)
			}
			// Fields after the command name, which ends with the last ')':
			// state is field 3, utime 14, stime 15.
			f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
			for _, i := range []int{14 - 3, 15 - 3} {
				v, err := strconv.ParseFloat(f[i], 64)
				if err != nil {
					b.Fatalf("/proc/%d/stat: %v", pid, err)
				}
				ticks += v
			}
		}
		return ticks / clockTicks
	}
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// plainPods builds br-plain on node-1 and node-2 (NORMAL only), each with a
// port on the lab's fabric bridge (as the nodes' uplinks are), and one pod namespace
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
	// Each br-plain reaches the other through the lab's fabric bridge, the
	// underlay Seine's uplinks use: both sides cross the same network.
	fabric := c.NetNSPath("fabric")
	br := fabricBridge(b, fabric)
	for _, n := range []struct{ nodeNS, node, port string }{{node1, "node-1", "plain1"}, {node2, "node-2", "plain2"}} {
		fport := "f" + n.port
		run(b, fabric, "ip", "link", "add", fport, "mtu", "1500", "type", "veth", "peer", "name", n.port, "netns", c.NetNS(n.node))
		b.Cleanup(func() { _ = exec.Command("nsenter", "--net="+fabric, "--", "ip", "link", "del", fport).Run() })
		run(b, fabric, "ip", "link", "set", fport, "master", br, "up")
	}
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

// fabricBridge is the name of the one bridge in the lab's fabric namespace.
func fabricBridge(b *testing.B, fabric string) string {
	b.Helper()
	f := strings.Fields(run(b, fabric, "ip", "-o", "link", "show", "type", "bridge"))
	if len(f) < 2 {
		b.Fatalf("no bridge in the fabric namespace %s", fabric)
	}
	return strings.TrimSuffix(f[1], ":")
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

// iperfResult is what one iperf3 run received.
type iperfResult struct {
	bps, bytes  float64
	retransmits int
}

// iperf runs one iperf3 server in srvNS for one test of the given length
// from cliNS to ip and returns what was received. A run in which iperf3
// reports an error or receives nothing is an error wrapping
// benchutil.ErrFailedRun.
func iperf(srvNS, cliNS, ip string, seconds int) (iperfResult, error) {
	srv := exec.Command("nsenter", "--net="+srvNS, "--", "iperf3", "-s", "-1", "-p", "5201")
	if err := srv.Start(); err != nil {
		return iperfResult{}, err
	}
	defer func() {
		_ = srv.Process.Kill()
		_ = srv.Wait()
	}()
	var out []byte
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, err = exec.Command("nsenter", "--net="+cliNS, "--", "iperf3", "-c", ip, "-p", "5201", "-t", fmt.Sprint(seconds), "-J").CombinedOutput()
		// iperf3 -J exits 0 also when the server is not listening yet.
		if !strings.Contains(string(out), "Connection refused") || time.Now().After(deadline) {
			break
		}
	}
	var r struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
				Bytes         float64 `json:"bytes"`
			} `json:"sum_received"`
			SumSent struct {
				Retransmits int `json:"retransmits"`
			} `json:"sum_sent"`
		} `json:"end"`
	}
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		return iperfResult{}, fmt.Errorf("iperf3 -c %s: %v; output: %w\n%s", ip, err, jerr, out)
	}
	if r.Error != "" || r.End.SumReceived.BitsPerSecond == 0 {
		return iperfResult{}, fmt.Errorf("iperf3 -c %s: %q, %.0f bytes received: %w", ip, r.Error, r.End.SumReceived.Bytes, benchutil.ErrFailedRun)
	}
	if err != nil {
		return iperfResult{}, fmt.Errorf("iperf3 -c %s: %w\n%s", ip, err, out)
	}
	return iperfResult{bps: r.End.SumReceived.BitsPerSecond, bytes: r.End.SumReceived.Bytes, retransmits: r.End.SumSent.Retransmits}, nil
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
