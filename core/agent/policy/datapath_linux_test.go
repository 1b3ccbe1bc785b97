package policy_test

import (
	"context"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/seine-cni/seine/test/agenttest"
)

var (
	dpUFIDRE    = regexp.MustCompile(`^ufid:([0-9a-f-]+),`)
	dpPacketsRE = regexp.MustCompile(`, packets:(\d+),`)
)

// datapathPackets returns the packet counts of the datapath flows whose
// line contains every one of parts, by ufid.
func datapathPackets(t *testing.T, n *agenttest.Node, parts ...string) map[string]int {
	t.Helper()
	out, err := n.OVS.Appctl(context.Background(), "ovs-vswitchd", "dpctl/dump-flows", "-m")
	if err != nil {
		t.Fatalf("dpctl/dump-flows: %v", err)
	}
	flows := map[string]int{}
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		m, p := dpUFIDRE.FindStringSubmatch(l), dpPacketsRE.FindStringSubmatch(l)
		if m == nil || p == nil {
			continue
		}
		all := true
		for _, s := range parts {
			all = all && strings.Contains(l, s)
		}
		if all {
			flows[m[1]], _ = strconv.Atoi(p[1])
		}
	}
	return flows
}

// inNetNS runs a shell loop in a pod's network namespace until the test
// ends.
func inNetNS(t *testing.T, p testPod, script string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+p.netns, "--", "bash", "-c", script)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
}

// A member leaving a group a policy allows from is denied at once — the
// datapath flows through which its new connections passed are deleted —
// while the cached flows of an unrelated pod pair stay: the agent used to
// flush the node's whole datapath flow cache on every such change (an
// upcall for every flow of every pod).
func TestNarrowingDeletesOnlyConcernedDatapathFlows(t *testing.T) {
	n := agenttest.Start(t)
	ctx := context.Background()
	pc := n.Agent.Policy()
	db := addPod(t, n, "db-0", tcpPort(5432))
	web := addPod(t, n, "web-0")
	other := addPod(t, n, "other-0")
	a := addPod(t, n, "a-0")
	b := addPod(t, n, "b-0", tcpPort(80))
	if err := pc.Sync(ctx, dbState(1, db, web, other)); err != nil {
		t.Fatal(err)
	}
	wantAllowed(t, other, db, "tcp", 5432)
	wantAllowed(t, a, b, "tcp", 80)
	// Live traffic: other-0 keeps opening new UDP flows to db-0 (allowed,
	// port 53), a-0 pings b-0 (unrelated to any policy).
	inNetNS(t, other, "while :; do echo x >/dev/udp/"+db.ip.String()+"/53; sleep 0.01; done")
	inNetNS(t, a, "exec ping -n -q -i 0.01 "+b.ip.String())
	unrelated := "ipv4(src=" + a.ip.String() + ",dst=" + b.ip.String()
	var before map[string]int
	for deadline := time.Now().Add(10 * time.Second); len(before) == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no datapath flow of a-0 -> b-0")
		}
		before = datapathPackets(t, n, unrelated)
	}
	flushes0, deleted0 := n.Agent.DatapathStats()

	// other-0 leaves the clients.
	if err := pc.Sync(ctx, dbState(2, db, web)); err != nil {
		t.Fatal(err)
	}
	// The flows of other-0's new connections are deleted, unless
	// ovs-vswitchd's revalidators got there first and made them drop.
	flushes, deleted := n.Agent.DatapathStats()
	t.Logf("the change deleted %d datapath flows", deleted-deleted0)
	if flushes != flushes0 {
		t.Errorf("the change flushed the datapath %d times; want no flush", flushes-flushes0)
	}
	// A flow that was flushed comes back with the same ufid (a hash of its
	// key) and its counters from zero.
	after := datapathPackets(t, n, unrelated)
	for ufid, p := range before {
		if after[ufid] < p {
			t.Errorf("the unrelated pair's datapath flow %s was deleted: %d packets before the change, %d after", ufid, p, after[ufid])
		}
	}
	wantDenied(t, n, other, db, "tcp", 5432)
	wantAllowed(t, web, db, "tcp", 5432)
}
