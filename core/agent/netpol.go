package agent

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
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
	return a.sw.Do(ctx, func(w FlowWriter) error {
		if err := a.lockFlows(ctx); err != nil {
			return err
		}
		defer a.unlockFlows()
		a.mu.Lock()
		node, round := a.node, a.round
		a.mu.Unlock()
		if node == nil {
			return errNotReady
		}
		return fn(w, round)
	})
}

// WaitDatapath empties the datapath flow cache and returns once
// ovs-vswitchd's revalidators have run, so a connection a policy change
// denies is no longer let through by a cached flow of the old policies.
// revalidator/wait alone is not enough on the userspace datapath: in the
// netpol e2e suite, same-node pairs a new isolation denied kept being
// answered for the whole 10 s of a case (7-9 failing cases per run, with
// correct OpenFlow tables), and with the cache flushed none leaked. It costs
// one upcall per active megaflow after a change that denies something.
// Antrea met the same userspace-datapath behaviour (antrea-io/antrea#1608,
// #897: cached flows kept the old actions until they idled out, ~10 s) and
// waited for the flows to expire instead; the root cause in OVS is not
// known to us.
func (n policyNode) WaitDatapath(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := n.a.vswitchd(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Call(ctx, "dpctl/del-flows"); err != nil {
		return fmt.Errorf("dpctl/del-flows: %w", err)
	}
	if _, err := c.Call(ctx, "revalidator/wait"); err != nil {
		return fmt.Errorf("revalidator/wait: %w", err)
	}
	return nil
}
