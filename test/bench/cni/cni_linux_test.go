package cnibench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/vishvananda/netlink"

	"github.com/seine-cni/seine/test/bench/benchutil"
	"github.com/seine-cni/seine/test/lab/netns"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// BenchmarkCNIAdd adds pods through two real CNI plugins driven the same way
// through libcni, from the node's network namespace, in the same run:
// Seine (libcni -> seine-cni -> seine-agent -> durable IPAM -> veth -> OVS
// port -> flows) and the reference plugins ptp + host-local (veth, host
// route, IPAM in files). ADDs alternate between the two, which side goes
// first swapping every pod; each ADD is timed alone. It reports p50 and
// p99 of both and their ratios. 200 pods per side; 5 under -short.
//
//	go test -run '^$' -bench CNIAdd -benchtime 1x -timeout 20m ./test/bench/cni
func BenchmarkCNIAdd(b *testing.B) {
	pods := 200
	if testing.Short() {
		pods = 5
	}
	n := startNode(b)
	ctx := context.Background()
	// One untimed ADD per side first: it tells the MTU Seine gives its
	// pods, which ptp is then configured with, and it takes the first
	// exec of each plugin binary out of the measurement.
	warm := func(cni *libcni.CNIConfig, list *libcni.NetworkConfigList) string {
		podNS := ovsdaemon.NewNetNS(b)
		rt := &libcni.RuntimeConf{ContainerID: "warm-up-" + list.Name, NetNS: podNS, IfName: "eth0",
			Args: podArgs("warm-up-" + list.Name)}
		if err := netns.Do(n.nodeNS, func() error {
			_, err := cni.AddNetworkList(ctx, list, rt)
			return err
		}); err != nil {
			b.Fatalf("warm-up ADD (%s): %v", list.Name, err)
		}
		b.Cleanup(func() {
			if err := netns.Do(n.nodeNS, func() error { return cni.DelNetworkList(ctx, list, rt) }); err != nil {
				b.Errorf("DEL warm-up pod (%s): %v", list.Name, err)
			}
		})
		return podNS
	}
	mtu := linkMTU(b, warm(n.cni, n.list), "eth0")
	ref := startReference(b, mtu)
	warm(ref.cni, ref.list)
	b.Logf("pod MTU %d on both sides", mtu)

	for b.Loop() {
		var added []func() error
		add := func(cni *libcni.CNIConfig, list *libcni.NetworkConfigList, side string) benchutil.Side {
			return benchutil.Side{Name: side, Run: func(i int) (benchutil.Sample, error) {
				// The pod's namespace exists before the clock starts, as a
				// runtime's sandbox does before it calls the plugin.
				rt := &libcni.RuntimeConf{
					ContainerID: fmt.Sprintf("%s-%d", side, i), NetNS: ovsdaemon.NewNetNS(b), IfName: "eth0",
					Args: podArgs(fmt.Sprintf("%s-%d", side, i)),
				}
				var took time.Duration
				err := netns.Do(n.nodeNS, func() error {
					start := time.Now()
					_, err := cni.AddNetworkList(ctx, list, rt)
					took = time.Since(start)
					return err
				})
				if err != nil {
					return nil, fmt.Errorf("ADD pod %d: %w", i, err)
				}
				added = append(added, func() error {
					return netns.Do(n.nodeNS, func() error { return cni.DelNetworkList(ctx, list, rt) })
				})
				return benchutil.Sample{"ms": ms(took)}, nil
			}}
		}
		r, err := benchutil.Comparison{
			Name:    fmt.Sprintf("CNI ADD of %d pods per side through libcni", pods),
			Metrics: []string{"ms"},
			Sides:   []benchutil.Side{add(n.cni, n.list, "seine"), add(ref.cni, ref.list, "ptp")},
			Rounds:  pods, ShortRounds: pods, FixedRounds: true,
		}.Run()
		if err != nil {
			b.Fatal(err)
		}
		r.Report(b)
		s, p := r.Stats("seine", "ms"), r.Stats("ptp", "ms")
		b.Logf("seine ADD p50 %.1f ms p99 %.1f ms; ptp + host-local p50 %.1f ms p99 %.1f ms; ratio p50 %.2f, p99 %.2f",
			s.Percentile(50), s.Percentile(99), p.Percentile(50), p.Percentile(99),
			s.Percentile(50)/p.Percentile(50), s.Percentile(99)/p.Percentile(99))
		if k := pods / 10; k >= 5 {
			// Whether a side slows down as pods add up (OVS ports, routes).
			first, last := func(side string) float64 { return benchutil.Summarize(r.Values[side]["ms"][:k]).Median },
				func(side string) float64 { return benchutil.Summarize(r.Values[side]["ms"][pods-k:]).Median }
			b.Logf("median ADD of the first %d pods and of the last %d: seine %.1f and %.1f ms; ptp + host-local %.1f and %.1f ms",
				k, k, first("seine"), last("seine"), first("ptp"), last("ptp"))
		}
		b.ReportMetric(s.Percentile(99), "seine-p99-ms")
		b.ReportMetric(p.Percentile(99), "ptp-p99-ms")
		b.ReportMetric(s.Percentile(50)/p.Percentile(50), "p50-ratio")
		b.ReportMetric(s.Percentile(99)/p.Percentile(99), "p99-ratio")

		// DEL everything so a next iteration starts from the same state;
		// a DEL that fails is a bug in the plugin.
		for _, del := range added {
			if err := del(); err != nil {
				b.Fatalf("DEL: %v", err)
			}
		}
	}
}

// podArgs are the CNI_ARGS a container runtime passes for a pod of the
// default namespace (containerd and CRI-O send IgnoreUnknown too).
func podArgs(name string) [][2]string {
	return [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", name}}
}

// linkMTU is the MTU of a link in a network namespace.
func linkMTU(b *testing.B, ns, name string) int {
	b.Helper()
	var mtu int
	if err := netns.Do(ns, func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		mtu = l.Attrs().MTU
		return nil
	}); err != nil {
		b.Fatalf("MTU of %s in %s: %v", name, ns, err)
	}
	return mtu
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
