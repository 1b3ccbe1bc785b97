package agentload

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"testing"
	"time"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/test/agenttest"
	"github.com/seine-cni/seine/test/bench/benchutil"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// BenchmarkPolicyChurnRTT: 50 policies allow TCP 80 and UDP 53 into a
// local pod from the namespace "peers"; one local member of it (live-0)
// keeps sending to that pod, and an unrelated local pair (a-0 pings b-0
// every 10 ms) has nothing to do with any policy. Two conditions, measured
// in alternating rounds of the same run for 10 s each (3 s under -short):
//
//   - churn: pods of "peers" on another node come and go at 2 pods/s
//     (a member joins, then the oldest leaves, every 0.5 s);
//   - idle: no policy change.
//
// It reports p50 and p99 of the pair's round-trip time per side and their
// ratio, and how many times the churn flushed ovs-vswitchd's datapath flow
// cache (its dpif_flow_flush coverage counter). The agent used to flush
// the whole cache on every member leaving: an upcall for every active flow
// of the node, the unrelated pair's among them.
func BenchmarkPolicyChurnRTT(b *testing.B) {
	const policies = 50
	dur := 10 * time.Second
	if testing.Short() {
		dur = 3 * time.Second
	}
	n := agenttest.Start(b)
	ctx := context.Background()
	target := addPod(b, n, "target-0", ovsdaemon.NewNetNS(b))
	live := addPod(b, n, "live-0", ovsdaemon.NewNetNS(b))
	pa := addPod(b, n, "a-0", ovsdaemon.NewNetNS(b))
	pb := addPod(b, n, "b-0", ovsdaemon.NewNetNS(b))
	pc := n.Agent.Policy()
	gen := int64(1)
	state := func(members []controlplane.GroupMember) error {
		gen++
		ms := append([]controlplane.GroupMember{{Pod: controlplane.PodReference{Namespace: "peers", Name: live.name},
			IPs: []controlplane.IPAddress{live.ip.AsSlice()}, NodeName: "node-1"}}, members...)
		return pc.Sync(ctx, ingressPolicies(gen, policies, []string{target.name}, ms))
	}
	var members []controlplane.GroupMember
	next := 0
	for range 20 {
		members = append(members, member("peers", fmt.Sprintf("churn-%d", next), peerIP(next)))
		next++
	}
	if err := state(members); err != nil {
		b.Fatal(err)
	}
	// live-0's traffic to the target: new UDP flows all the time.
	lctx, lstop := context.WithCancel(ctx)
	defer lstop()
	sender := inNetNS(lctx, live.netns, "bash", "-c", fmt.Sprintf("while :; do echo x >/dev/udp/%s/53; sleep 0.01; done", target.ip))
	if err := sender.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { lstop(); _ = sender.Wait() }()

	flushes := 0
	for b.Loop() {
		r, err := benchutil.Comparison{
			Name:    fmt.Sprintf("RTT of an unrelated pod pair (ping every 10 ms, %s) while pods of a namespace %d policies allow from churn at 2/s vs idle", dur, policies),
			Metrics: []string{"rtt-p50-ms", "rtt-p99-ms"},
			Sides: []benchutil.Side{
				{Name: "churn", Run: func(int) (benchutil.Sample, error) {
					f0, err := coverage(ctx, n, "dpif_flow_flush")
					if err != nil {
						return nil, err
					}
					cctx, cancel := context.WithCancel(ctx)
					done := make(chan error, 1)
					go func() {
						t := time.NewTicker(500 * time.Millisecond)
						defer t.Stop()
						for i := 0; ; i++ {
							select {
							case <-cctx.Done():
								done <- nil
								return
							case <-t.C:
							}
							if i%2 == 0 {
								members = append(members, member("peers", fmt.Sprintf("churn-%d", next), peerIP(next)))
								next++
							} else {
								members = members[1:]
							}
							if err := state(members); err != nil {
								done <- err
								return
							}
						}
					}()
					s, err := pingRTT(ctx, pa, pb.ip, dur)
					cancel()
					if cerr := <-done; err == nil {
						err = cerr
					}
					f1, ferr := coverage(ctx, n, "dpif_flow_flush")
					if err == nil {
						err = ferr
					}
					flushes += f1 - f0
					return s, err
				}},
				{Name: "idle", Run: func(int) (benchutil.Sample, error) { return pingRTT(ctx, pa, pb.ip, dur) }},
			},
			Rounds: 3,
		}.Run()
		if err != nil {
			b.Fatal(err)
		}
		r.Report(b)
		b.Logf("datapath flow cache flushes during the churn runs: %d (%d member changes a second)", flushes, 2)
		b.ReportMetric(float64(flushes), "flushes")
		if flushes > 0 {
			b.Errorf("%d flushes of the datapath flow cache for member changes no live traffic uses", flushes)
		}
	}
}

var rttRE = regexp.MustCompile(`time=([0-9.]+) ms`)

// pingRTT pings dst from p every 10 ms for d and returns the p50 and p99
// round-trip times; a lost reply counts as d.
func pingRTT(ctx context.Context, p pod, dst netip.Addr, d time.Duration) (benchutil.Sample, error) {
	count := int(d / (10 * time.Millisecond))
	out, err := inNetNS(ctx, p.netns, "ping", "-n", "-i", "0.01", "-c", strconv.Itoa(count), "-W", "1", dst.String()).Output()
	if len(out) == 0 && err != nil {
		return nil, fmt.Errorf("ping: %w", err)
	}
	var rtts []float64
	for _, m := range rttRE.FindAllStringSubmatch(string(out), -1) {
		v, _ := strconv.ParseFloat(m[1], 64)
		rtts = append(rtts, v)
	}
	if len(rtts) < count/2 {
		return nil, fmt.Errorf("%d of %d pings answered: %w", len(rtts), count, benchutil.ErrFailedRun)
	}
	for len(rtts) < count {
		rtts = append(rtts, float64(d.Milliseconds()))
	}
	st := benchutil.Summarize(rtts)
	return benchutil.Sample{"rtt-p50-ms": st.Percentile(50), "rtt-p99-ms": st.Percentile(99)}, nil
}
