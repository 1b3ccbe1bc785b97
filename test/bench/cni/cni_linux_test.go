package cnibench

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/seine-cni/seine/test/ovsdaemon"
)

const pods = 200

// BenchmarkCNIAdd adds 200 pods through the real path (libcni -> seine-cni
// -> seine-agent -> IPAM -> veth -> OVS port -> flows) and, interleaved in
// the same run and the same OVS, 200 "raw" pods made by hand with the same
// steps: a veth into a fresh netns with address, default route, link up and
// tx checksum offload off (netlink calls, plus `ethtool -K`), `ovs-vsctl
// add-port` on br-int, and `ovs-ofctl --bundle add-flows` of the flows the
// real ADD of a template pod installed, with that pod's IP, MAC and ofport
// replaced by the raw pod's. It reports p50/p99 of both and their ratio.
func BenchmarkCNIAdd(b *testing.B) {
	n := startNode(b)
	ctx := context.Background()
	nodeNS, err := netns.GetFromPath(n.nodeNS)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { nodeNS.Close() })
	nodeNL, err := netlink.NewHandleAt(nodeNS)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nodeNL.Close)

	tpl := templateFlows(b, n)
	b.Logf("template pod: %d flows from one ADD (ip %s, mac %s, ofport %s)", len(tpl.flows), tpl.ip, tpl.mac, tpl.ofport)

	for b.Loop() {
		podNS := make([]string, pods)
		rawNS := make([]string, pods)
		for i := range pods {
			podNS[i], rawNS[i] = ovsdaemon.NewNetNS(b), ovsdaemon.NewNetNS(b)
		}
		var real, raw []time.Duration
		var steps [4][]time.Duration
		var rts []*libcni.RuntimeConf
		for i := range pods {
			rt := &libcni.RuntimeConf{
				ContainerID: fmt.Sprintf("bench-%d", i), NetNS: podNS[i], IfName: "eth0",
				Args: [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", fmt.Sprintf("bench-%d", i)}},
			}
			start := time.Now()
			if _, err := n.cni.AddNetworkList(ctx, n.list, rt); err != nil {
				b.Fatalf("ADD pod %d: %v", i, err)
			}
			real = append(real, time.Since(start))
			rts = append(rts, rt)

			start = time.Now()
			if err := rawAdd(ctx, n, nodeNL, tpl, i, rawNS[i], &steps); err != nil {
				b.Fatalf("raw pod %d: %v", i, err)
			}
			raw = append(raw, time.Since(start))
		}
		p50, p99 := pct(real, 50), pct(real, 99)
		r50, r99 := pct(raw, 50), pct(raw, 99)
		b.Logf("seine ADD p50 %s p99 %s; raw p50 %s p99 %s", p50, p99, r50, r99)
		b.Logf("raw steps p50: netlink veth+addr+route %s, ethtool %s, ovs-vsctl add-port %s, ovs-ofctl add-flows %s",
			pct(steps[0], 50), pct(steps[1], 50), pct(steps[2], 50), pct(steps[3], 50))
		b.ReportMetric(ms(p50), "seine-p50-ms")
		b.ReportMetric(ms(p99), "seine-p99-ms")
		b.ReportMetric(ms(r50), "raw-p50-ms")
		b.ReportMetric(ms(r99), "raw-p99-ms")
		b.ReportMetric(float64(p50)/float64(r50), "p50-ratio")
		b.ReportMetric(float64(p99)/float64(r99), "p99-ratio")

		// Remove both sides so the next iteration starts from the same state.
		for _, rt := range rts {
			if err := n.cni.DelNetworkList(ctx, n.list, rt); err != nil {
				b.Fatalf("DEL %s: %v", rt.ContainerID, err)
			}
		}
		for i := range pods {
			if _, err := n.d.Vsctl(ctx, "--if-exists", "del-port", "br-int", rawPort(i)); err != nil {
				b.Fatal(err)
			}
			if l, err := nodeNL.LinkByName(rawPort(i)); err == nil {
				_ = nodeNL.LinkDel(l)
			}
		}
		if out, err := n.d.Ofctl(ctx, "-O", "OpenFlow15", "del-flows", "br-int", "cookie="+rawCookie+"/-1"); err != nil {
			b.Fatalf("del raw flows: %v\n%s", err, out)
		}
	}
}

const rawCookie = "0x5eeb0000"

func rawPort(i int) string { return fmt.Sprintf("raw%d", i) }

// template is the per-pod flow set one real ADD installed.
type template struct {
	ip, mac, ofport string
	flows           []string
}

// templateFlows adds one pod through the real path and returns the flows
// that appeared in br-int because of it (dump-flows before and after).
func templateFlows(b *testing.B, n *node) template {
	b.Helper()
	ctx := context.Background()
	dump := func() []string {
		out, err := n.d.Ofctl(ctx, "-O", "OpenFlow15", "--no-stats", "--no-names", "dump-flows", "br-int")
		if err != nil {
			b.Fatalf("dump-flows: %v\n%s", err, out)
		}
		return strings.Split(strings.TrimSpace(out), "\n")
	}
	before := dump()
	rt := &libcni.RuntimeConf{
		ContainerID: "bench-template", NetNS: ovsdaemon.NewNetNS(b), IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "bench-template"}},
	}
	r, err := n.cni.AddNetworkList(ctx, n.list, rt)
	if err != nil {
		b.Fatalf("ADD template: %v", err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		b.Fatal(err)
	}
	t := template{ip: res.IPs[0].Address.IP.String()}
	for _, itf := range res.Interfaces {
		if itf.Sandbox != "" {
			t.mac = itf.Mac
		}
	}
	host := res.Interfaces[0].Name
	of, err := n.d.Vsctl(ctx, "get", "Interface", host, "ofport")
	if err != nil {
		b.Fatal(err)
	}
	t.ofport = strings.TrimSpace(of)
	for _, f := range dump() {
		if !slices.Contains(before, f) && strings.Contains(f, "actions=") {
			t.flows = append(t.flows, strings.TrimSpace(f))
		}
	}
	if len(t.flows) == 0 || t.mac == "" {
		b.Fatalf("template pod: %d new flows, mac %q", len(t.flows), t.mac)
	}
	return t
}

var cookieRE = regexp.MustCompile(`cookie=0x[0-9a-f]+`)

// rawAdd does by hand what an ADD does for pod i: veth into podNS with
// address, route, MTU and tx offload off; the host end on br-int; the
// template's flows rewritten for this pod in one bundle.
func rawAdd(ctx context.Context, n *node, nodeNL *netlink.Handle, tpl template, i int, podNS string, steps *[4][]time.Duration) error {
	t0 := time.Now()
	ip := fmt.Sprintf("10.250.1.%d", i+2)
	ofport := fmt.Sprint(1000 + i)
	pns, err := netns.GetFromPath(podNS)
	if err != nil {
		return err
	}
	defer pns.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: rawPort(i), MTU: 1450}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(pns))}
	if err := nodeNL.LinkAdd(veth); err != nil {
		return fmt.Errorf("veth: %w", err)
	}
	host, err := nodeNL.LinkByName(rawPort(i))
	if err != nil {
		return err
	}
	if err := nodeNL.LinkSetARPOff(host); err != nil {
		return err
	}
	if err := nodeNL.LinkSetUp(host); err != nil {
		return err
	}
	podNL, err := netlink.NewHandleAt(pns)
	if err != nil {
		return err
	}
	defer podNL.Close()
	eth0, err := podNL.LinkByName("eth0")
	if err != nil {
		return err
	}
	addr, _ := netlink.ParseAddr(ip + "/24")
	if err := podNL.AddrAdd(eth0, addr); err != nil {
		return fmt.Errorf("address: %w", err)
	}
	if err := podNL.LinkSetUp(eth0); err != nil {
		return err
	}
	if err := podNL.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.ParseIP("10.250.1.1")}); err != nil {
		return fmt.Errorf("route: %w", err)
	}
	t1 := time.Now()
	if out, err := exec.CommandContext(ctx, "nsenter", "--net="+podNS, "--", "ethtool", "-K", "eth0", "tx", "off").CombinedOutput(); err != nil {
		return fmt.Errorf("ethtool: %w: %s", err, out)
	}
	t2 := time.Now()
	if out, err := n.d.Vsctl(ctx, "add-port", "br-int", rawPort(i), "--", "set", "Interface", rawPort(i), "ofport_request="+ofport); err != nil {
		return fmt.Errorf("add-port: %w: %s", err, out)
	}
	t3 := time.Now()
	mac := eth0.Attrs().HardwareAddr.String()
	ipRE := regexp.MustCompile(`\b` + regexp.QuoteMeta(tpl.ip) + `\b`)
	portRE := regexp.MustCompile(`\b(in_port=|output:)` + tpl.ofport + `\b`)
	var buf bytes.Buffer
	for _, f := range tpl.flows {
		f = cookieRE.ReplaceAllString(f, "cookie="+rawCookie)
		f = ipRE.ReplaceAllString(f, ip)
		f = strings.ReplaceAll(f, tpl.mac, mac)
		f = portRE.ReplaceAllString(f, "${1}"+ofport)
		buf.WriteString(f + "\n")
	}
	cmd := n.d.Command(ctx, "ovs-ofctl", "-O", "OpenFlow15", "--bundle", "add-flows", "br-int", "-")
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("add-flows: %w: %s", err, out)
	}
	for k, d := range []time.Duration{t1.Sub(t0), t2.Sub(t1), t3.Sub(t2), time.Since(t3)} {
		steps[k] = append(steps[k], d)
	}
	return nil
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
