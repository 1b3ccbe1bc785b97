package policy_test

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/seine-cni/seine/test/agenttest"
)

// What the node's isolation drop flows counted (core/pipeline's tables 50
// and 80, priority 190), so that a denied probe is shown to be the policy's
// drop and not any other silence.

var (
	spoofGuardRE = regexp.MustCompile(`table=10, .*priority=200,ip,in_port=(\d+),dl_src=[0-9a-f:]+,nw_src=([0-9.]+) `)
	isolationRE  = regexp.MustCompile(`table=(50|80), n_packets=(\d+), .*priority=190,ip,(?:in_port|reg1)=(0x[0-9a-f]+|\d+) actions=drop`)
)

// isolation is what one pod's isolation drop flows counted; has says
// whether the flow exists.
type isolation struct {
	egress, ingress       uint64
	hasEgress, hasIngress bool
}

// isolationDrops reads the isolation drop counters by pod IP, after
// revalidator/purge has credited the packets of every cached datapath flow
// to the OpenFlow flows (the revalidators do it only every ~0.5 s).
func isolationDrops(t *testing.T, n *agenttest.Node) map[string]isolation {
	t.Helper()
	ctx := context.Background()
	if out, err := n.OVS.Appctl(ctx, "ovs-vswitchd", "revalidator/purge"); err != nil {
		t.Fatalf("revalidator/purge: %v\n%s", err, out)
	}
	dump, err := n.OVS.Ofctl(ctx, "-O", "OpenFlow15", "--no-names", "dump-flows", "br-int")
	if err != nil {
		t.Fatalf("dump-flows: %v\n%s", err, dump)
	}
	ipOf := map[uint64]string{}
	for _, m := range spoofGuardRE.FindAllStringSubmatch(dump, -1) {
		p, _ := strconv.ParseUint(m[1], 10, 32)
		ipOf[p] = m[2]
	}
	out := map[string]isolation{}
	for _, m := range isolationRE.FindAllStringSubmatch(dump, -1) {
		packets, _ := strconv.ParseUint(m[2], 10, 64)
		port, err := strconv.ParseUint(m[3], 0, 32)
		if err != nil || ipOf[port] == "" {
			t.Fatalf("isolation drop flow for port %s, which no pod has:\n%s", m[3], dump)
		}
		is := out[ipOf[port]]
		if m[1] == "50" {
			is.egress, is.hasEgress = packets, true
		} else {
			is.ingress, is.hasIngress = packets, true
		}
		out[ipOf[port]] = is
	}
	return out
}

// policyDropped says whether, between before and after, src's egress or
// dst's ingress isolation drop counted packets; why says what they counted.
func policyDropped(before, after map[string]isolation, src, dst testPod) (ok bool, why string) {
	s, d := src.ip.String(), dst.ip.String()
	var parts []string
	var moved int64
	if after[s].hasEgress && before[s].hasEgress {
		delta := int64(after[s].egress) - int64(before[s].egress)
		moved += delta
		parts = append(parts, src.name+" egress "+strconv.FormatInt(delta, 10))
	}
	if after[d].hasIngress && before[d].hasIngress {
		delta := int64(after[d].ingress) - int64(before[d].ingress)
		moved += delta
		parts = append(parts, dst.name+" ingress "+strconv.FormatInt(delta, 10))
	}
	if len(parts) == 0 {
		return false, "neither " + src.name + "'s egress nor " + dst.name + "'s ingress has an isolation drop flow"
	}
	return moved > 0, "the isolation drop flows counted " + strings.Join(parts, ", ")
}
