package policy_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/seine-cni/seine/core/agent/policy"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/test/agenttest"
)

// TestIncrementalOnRealSwitch drives a real node's policy controller (the
// in-process agent on its own ovs-vswitchd, pods made through seine-cni)
// through a random State sequence (policy.RandomStates: every kind of
// policy, tier and action, groups changing and going missing) and, after
// every step, compares the policy flows ovs-vswitchd holds (ovs-ofctl
// dump-flows of the policy cookie category) with a full recompute from
// scratch of the same State on the same pods.
func TestIncrementalOnRealSwitch(t *testing.T) {
	steps := 150
	if testing.Short() {
		steps = 40
	}
	node := agenttest.Start(t)
	ctx := context.Background()
	pc := node.Agent.Policy()
	var pods []policy.Pod
	for _, name := range []string{"web-0", "db-0"} {
		p := addPod(t, node, name)
		pods = append(pods, policy.Pod{Namespace: "default", Name: name, IPs: []netip.Addr{p.ip}})
	}
	g := policy.NewRandomStates(7, pods)
	var ref policy.Reference
	cookie := fmt.Sprintf("cookie=%#x/%#x", uint64(pipeline.NewCookie(0, pipeline.CategoryPolicy, 0)),
		uint64(pipeline.CategoryMask&^pipeline.RoundMask))
	for step := range steps {
		s, what := g.Step()
		if err := pc.Sync(ctx, s); err != nil {
			t.Fatalf("step %d (%s): sync: %v", step, what, err)
		}
		out, err := node.OVS.Ofctl(ctx, "-O", "OpenFlow15", "--no-stats", "--no-names", "dump-flows", "br-int", cookie)
		if err != nil {
			t.Fatalf("dump-flows: %v\n%s", err, out)
		}
		var got []string
		round := pipeline.Round(0)
		for _, l := range strings.Split(out, "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "OFPST_") && !strings.HasPrefix(l, "NXST_") {
				got = append(got, l)
				v, _, _ := strings.Cut(strings.TrimPrefix(l, "cookie="), ",")
				if c, err := strconv.ParseUint(v, 0, 64); err == nil {
					round = pipeline.Cookie(c).Round()
				}
			}
		}
		fs, err := ref.Flows(pc, s, round)
		if err != nil {
			t.Fatalf("step %d: reference: %v", step, err)
		}
		want := strings.Split(strings.TrimSuffix(pipeline.Text(fs), "\n"), "\n")
		if len(fs) == 0 {
			want = nil
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("step %d (%s): ovs-vswitchd holds other policy flows than a full recompute:\n%s",
				step, what, policy.LineDiff(strings.Join(want, "\n"), strings.Join(got, "\n")))
		}
	}
}
