package agentload

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/containernetworking/cni/libcni"

	"github.com/seine-cni/seine/core/agent/policy"
	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/test/agenttest"
	"github.com/seine-cni/seine/test/bench/benchutil"
	"github.com/seine-cni/seine/test/ovsdaemon"
)

// BenchmarkCNIUnderPolicyLoad: 50 CNI ADDs at once (5 under -short), then
// their 50 DELs at once, on a real node, in two conditions measured in
// alternating rounds of the same run:
//
//   - loaded: 50,000 policy flows installed (2,000 under -short: one
//     ingress policy over the 50 pods from a 50,000-member address group;
//     each ADD makes the agent recompute them, as the new pod is one of
//     its targets), while the peer node-2 flaps every second (its address
//     changes, so the tunnel flows towards it change);
//   - quiet: no policy, no flapping.
//
// It reports p50 and p99 ADD and p99 DEL latency per side and their
// ratios, and how many full replays of the flow set happened during the
// loaded run (the agent used to replay every flow, policy ones included,
// under the lock every ADD and DEL takes, on each peer change: none is
// expected now).
func BenchmarkCNIUnderPolicyLoad(b *testing.B) {
	pods, peers := 50, 50000
	if testing.Short() {
		pods, peers = 5, 2000
	}
	n := agenttest.Start(b)
	ctx := context.Background()
	netns := make([]string, pods)
	names := make([]string, pods)
	for i := range pods {
		netns[i], names[i] = ovsdaemon.NewNetNS(b), fmt.Sprintf("load-%d", i)
	}
	var ms []controlplane.GroupMember
	for i := range peers {
		ms = append(ms, member("peers", fmt.Sprintf("p-%d", i), peerIP(i)))
	}
	// anchor keeps the policy's flows on the bridge between the runs:
	// without a local target the policy has none.
	anchor := addPod(b, n, "anchor", ovsdaemon.NewNetNS(b))
	loaded := ingressPolicies(1, 1, append([]string{anchor.name}, names...), ms)
	pc := n.Agent.Policy()
	replays := 0
	for b.Loop() {
		r, err := benchutil.Comparison{
			Name:    fmt.Sprintf("%d parallel CNI ADDs then DELs, with %d policy flows and a peer flapping every second vs quiet", pods, peers),
			Metrics: []string{"add-p50-ms", "add-p99-ms", "del-p99-ms"},
			Sides: []benchutil.Side{
				{Name: "loaded", Run: func(rnd int) (benchutil.Sample, error) {
					if err := pc.Sync(ctx, loaded); err != nil {
						return nil, err
					}
					if fc, err := flowCount(ctx, n); err == nil {
						b.Logf("round %d: %d flows on the bridge before the ADDs", rnd, fc)
					}
					r0, err := round(ctx, n)
					if err != nil {
						return nil, err
					}
					stop := flap(b, n)
					s, err := addDel(ctx, n, fmt.Sprintf("l%d", rnd), names, netns)
					stop()
					if err != nil {
						return nil, err
					}
					r1, err := round(ctx, n)
					if err != nil {
						return nil, err
					}
					replays += int(r1 - r0)
					return s, nil
				}},
				{Name: "quiet", Run: func(rnd int) (benchutil.Sample, error) {
					if err := pc.Sync(ctx, policy.State{}); err != nil {
						return nil, err
					}
					return addDel(ctx, n, fmt.Sprintf("q%d", rnd), names, netns)
				}},
			},
			Ratios: []benchutil.Ratio{{Num: "loaded", Den: "quiet"}},
			Rounds: 3,
		}.Run()
		if err != nil {
			b.Fatal(err)
		}
		r.Report(b)
		b.Logf("full replays of the flow set during the loaded runs: %d", replays)
		b.ReportMetric(float64(replays), "replays")
		if replays > 0 {
			b.Errorf("%d full replays during the loaded runs; a peer change should send only the flows that differ", replays)
		}
	}
}

// addDel adds every pod at once, then deletes them all at once, and
// returns the latency percentiles.
func addDel(ctx context.Context, n *agenttest.Node, tag string, names, netns []string) (benchutil.Sample, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	run := func(do func(i int) error) ([]float64, error) {
		lat := make([]float64, len(names))
		errs := make([]error, len(names))
		var wg sync.WaitGroup
		for i := range names {
			wg.Go(func() {
				start := time.Now()
				errs[i] = do(i)
				lat[i] = float64(time.Since(start).Microseconds()) / 1000
			})
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return nil, err
			}
		}
		return lat, nil
	}
	rt := func(i int) *libcni.RuntimeConf { return runtimeConf(fmt.Sprintf("%s-%d", tag, i), names[i], netns[i]) }
	adds, err := run(func(i int) error { _, err := add(ctx, n, rt(i)); return err })
	if err != nil {
		return nil, err
	}
	dels, err := run(func(i int) error { return n.CNI.DelNetworkList(ctx, n.Config, rt(i)) })
	if err != nil {
		return nil, err
	}
	a, d := benchutil.Summarize(adds), benchutil.Summarize(dels)
	return benchutil.Sample{"add-p50-ms": a.Percentile(50), "add-p99-ms": a.Percentile(99), "del-p99-ms": d.Percentile(99)}, nil
}

// flap changes node-2's address every second until stop is called.
func flap(b *testing.B, n *agenttest.Node) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			node, err := n.Kube.CoreV1().Nodes().Get(ctx, "node-2", metav1.GetOptions{})
			if err != nil {
				b.Error(err)
				return
			}
			node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("192.168.77.%d", 12+i%2)}}
			if _, err := n.Kube.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil && ctx.Err() == nil {
				b.Error(err)
				return
			}
		}
	}()
	return func() { cancel(); <-done }
}
