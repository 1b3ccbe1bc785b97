package agent

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/seine-cni/seine/core/agent/policy"
	"github.com/seine-cni/seine/core/pipeline"
)

// Policy returns the agent's NetworkPolicy controller; the controlplane
// watch client calls its Sync with the node's whole policy state and
// reports its Realizations to the controller.
func (a *Agent) Policy() *policy.Controller { return a.policy }

// policyStateFile is where the last policy state is kept across restarts.
func policyStateFile(cfg *Config) string {
	return filepath.Join(cfg.StateDir, "policy", "state.json")
}

// policyNode is the agent as the policy controller sees it.
type policyNode struct{ a *Agent }

// LocalPods lists the pods that have an OVS port.
func (n policyNode) LocalPods() []policy.Pod {
	a := n.a
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []policy.Pod
	for _, k := range sortedKeys(a.pods) {
		p := a.pods[k]
		if p.ofport == 0 {
			continue
		}
		pp := policy.Pod{Namespace: p.ref.Namespace, Name: p.ref.Name, OFPort: p.ofport}
		for _, ip := range p.ips {
			pp.IPs = append(pp.IPs, ip.Addr())
		}
		out = append(out, pp)
	}
	return out
}

// NodeSources are the gateway IPs: the host reaches its pods from them.
func (n policyNode) NodeSources() []netip.Addr {
	var out []netip.Addr
	for _, gw := range n.a.gateways { // set once by node setup
		out = append(out, gw.Addr())
	}
	return out
}

// Install runs fn on the live connection under the flow lock, so policy
// changes and full replays (which include the policy flows) never
// interleave, with the round the agent's flows carry.
func (n policyNode) Install(ctx context.Context, fn func(policy.Writer, pipeline.Round) error) error {
	a := n.a
	return a.doLocked(ctx, a.sw.Do, func(w FlowWriter, node *pipeline.NodeConfig, round pipeline.Round) error {
		if node == nil {
			return errNotReady
		}
		return fn(w, round)
	})
}

// maxTargetedDeletes is how many datapath flows a policy change deletes one
// by one (one unixctl call each); past it, or past a quarter of the cache,
// the whole cache is flushed in one call instead: the upcalls that costs
// are then the cheaper part.
const maxTargetedDeletes = 200

// SettleDatapath deletes the datapath flows (megaflows) through which new
// connections of the narrowed traffic could still pass, and returns once
// ovs-vswitchd's revalidators have run: the next packet of such a flow
// goes up to ovs-vswitchd and is translated against the new flow tables.
// revalidator/wait alone is not enough on the userspace datapath: in the
// netpol e2e suite, same-node pairs a new isolation denied kept being
// answered for the whole 10 s of a case (7-9 failing cases per run, with
// correct OpenFlow tables), and with the cache flushed none leaked.
// Antrea met the same userspace-datapath behaviour (antrea-io/antrea#1608,
// #897: cached flows kept the old actions until they idled out, ~10 s) and
// waited for the flows to expire instead; the root cause in OVS is not
// known to us.
//
// Flushing the whole cache on every such change (as the agent first did)
// costs an upcall for every active flow of the node, unrelated pods'
// among them, and a flush on every member leaving a group that policies
// use as a peer; so only the flows the change concerns are deleted (see
// dpFlow.concernedBy), found in `dpctl/dump-flows -m` and deleted by ufid.
// The whole cache is flushed only when the change cannot be narrowed down
// (flows read back after an install of unknown outcome), when the dump
// cannot be read, or when more than maxTargetedDeletes flows (or a quarter
// of them) are concerned. When no flow is concerned there is nothing to
// wait for. The datapath counters (DatapathStats) count both.
func (n policyNode) SettleDatapath(ctx context.Context, narrowed []policy.Narrowed) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	a := n.a
	c, err := a.vswitchd(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	flush := slices.ContainsFunc(narrowed, policy.Narrowed.Everything)
	if !flush {
		deleted, err := deleteDatapathFlows(ctx, c, func(f *dpFlow) bool { return slices.ContainsFunc(narrowed, f.concernedBy) })
		a.dpDeleted.Add(int64(deleted))
		switch {
		case err != nil:
			a.log.Debug("datapath flows of a policy change not deleted one by one; flushing them all", "err", err)
			flush = true
		case deleted == 0:
			return nil // no cached flow could let the narrowed traffic through
		}
	}
	if flush {
		if _, err := c.Call(ctx, "dpctl/del-flows"); err != nil {
			return fmt.Errorf("dpctl/del-flows: %w", err)
		}
		a.dpFlushes.Add(1)
	}
	if _, err := c.Call(ctx, "revalidator/wait"); err != nil {
		return fmt.Errorf("revalidator/wait: %w", err)
	}
	return nil
}

// deleteDatapathFlows deletes the datapath flows concerned (by narrowed
// traffic, or by addresses a DNS answer opened) and returns how many it
// deleted.
func deleteDatapathFlows(ctx context.Context, c unixctl, concernedBy func(*dpFlow) bool) (int, error) {
	out, err := c.Call(ctx, "dpctl/dump-flows", "-m")
	if err != nil {
		return 0, fmt.Errorf("dpctl/dump-flows: %w", err)
	}
	var concerned []string
	flows := parseDatapathFlows(out)
	for i := range flows {
		if concernedBy(&flows[i]) {
			concerned = append(concerned, flows[i].ufid)
		}
	}
	if n := len(concerned); n > maxTargetedDeletes || n > 32 && 4*n > len(flows) {
		return 0, fmt.Errorf("%d of %d datapath flows concerned", n, len(flows))
	}
	deleted := 0
	for _, ufid := range concerned {
		if _, err := c.Call(ctx, "dpctl/del-flow", "ufid:"+ufid); err != nil {
			if strings.Contains(err.Error(), "No such file or directory") {
				continue // it expired meanwhile
			}
			return deleted, fmt.Errorf("dpctl/del-flow ufid:%s: %w", ufid, err)
		}
		deleted++
	}
	return deleted, nil
}

// OpenDatapath deletes the datapath flows that drop new connections to
// addrs, and returns once the revalidators have run: addresses a DNS
// answer just allowed (domain-name peers) may have been denied a moment
// before, and on the userspace datapath such a cached drop outlives the
// flow change (see SettleDatapath) — the pod's first connection after the
// answer would meet it. Nothing to delete: nothing to wait for.
func (a *Agent) OpenDatapath(ctx context.Context, addrs []netip.Addr) error {
	if len(addrs) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := a.vswitchd(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	deleted, err := deleteDatapathFlows(ctx, c, func(f *dpFlow) bool { return f.dropsNewTo(addrs) })
	a.dpDeleted.Add(int64(deleted))
	if err != nil {
		if _, err := c.Call(ctx, "dpctl/del-flows"); err != nil {
			return fmt.Errorf("dpctl/del-flows: %w", err)
		}
		a.dpFlushes.Add(1)
	} else if deleted == 0 {
		return nil
	}
	if _, err := c.Call(ctx, "revalidator/wait"); err != nil {
		return fmt.Errorf("revalidator/wait: %w", err)
	}
	return nil
}

// DatapathStats returns how many times a policy change flushed the whole
// datapath flow cache and how many datapath flows policy changes deleted
// one by one, since the agent started.
func (a *Agent) DatapathStats() (flushes, deleted int64) {
	return a.dpFlushes.Load(), a.dpDeleted.Load()
}
