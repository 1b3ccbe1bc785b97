package policy

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/core/tiers"
)

// IsolatedBy names the policies (namespace/name of the Kubernetes policy,
// else the internal name) that isolate the local pod on OpenFlow port
// port for ingress (or egress): a Traceflow dropped by isolation names
// them. It reads the last synced or loaded State.
func (c *Controller) IsolatedBy(ingress bool, port uint32) []string {
	if err := c.lock(context.Background()); err != nil {
		return nil
	}
	defer c.unlock()
	if c.state == nil {
		return nil
	}
	want := controlplane.PolicyTypeEgress
	if ingress {
		want = controlplane.PolicyTypeIngress
	}
	local := map[string]Pod{}
	for _, p := range c.node.LocalPods() {
		local[p.Namespace+"/"+p.Name] = p
	}
	var out []string
	for _, name := range sortedKeys(c.state.NetworkPolicies) {
		np := c.state.NetworkPolicies[name]
		if np == nil || !slices.Contains(np.PolicyTypes, want) {
			continue
		}
		_, targets, _, err := resolvePolicy(np, *c.state, local, map[string]tiers.Order{})
		if err != nil || !slices.ContainsFunc(targets, func(t target) bool { return t.pod.OFPort == port }) {
			continue
		}
		if r := np.SourceRef; r != nil && r.Name != "" {
			if r.Namespace != "" {
				out = append(out, r.Namespace+"/"+r.Name)
			} else {
				out = append(out, r.Name)
			}
			continue
		}
		out = append(out, name)
	}
	return out
}

// TieredRule names the tiered rule whose flows sit in table (a tier or
// baseline table of core/pipeline) at OpenFlow priority prio in the
// installed flow set: the policy (`clusternetworkpolicies.<group>/<name>`,
// which kubectl takes as it is) and the rule (its name, else "<direction>
// rule <n>", n counting the policy's rules of that direction from 0). A
// Traceflow's tagged copy of the rule's conj_id flow reports prio.
func (c *Controller) TieredRule(table uint8, prio uint16) (policy, rule string, ok bool) {
	var t tierTable
	switch pipeline.Table(table) {
	case pipeline.EgressTier:
		t = tierTable{pipeline.PolicyEgress, pipeline.TierMain}
	case pipeline.EgressBaseline:
		t = tierTable{pipeline.PolicyEgress, pipeline.TierBaseline}
	case pipeline.IngressTier:
		t = tierTable{pipeline.PolicyIngress, pipeline.TierMain}
	case pipeline.IngressBaseline:
		t = tierTable{pipeline.PolicyIngress, pipeline.TierBaseline}
	default:
		return "", "", false
	}
	if err := c.lock(context.Background()); err != nil {
		return "", "", false
	}
	defer c.unlock()
	var found *pipeline.PolicyRule
	c.flowMu.Lock()
	for i, r := range c.installed.Rules {
		if r.Direction == t.dir && r.Tier == t.tier && r.Priority == prio {
			found = &c.installed.Rules[i]
			break
		}
	}
	var uid, key string
	if found != nil {
		uid, key = found.Policy, found.Key
	}
	c.flowMu.Unlock()
	if found == nil {
		return "", "", false
	}
	var np *controlplane.NetworkPolicy
	if c.state != nil {
		for _, p := range c.state.NetworkPolicies {
			if p != nil && (string(p.UID) == uid || (p.UID == "" && p.Name == uid)) {
				np = p
				break
			}
		}
	}
	if np == nil {
		return uid, "rule " + key, true // deleted since it was installed
	}
	index, err := strconv.Atoi(strings.SplitN(key, "/", 2)[0])
	if err != nil || index < 0 || index >= len(np.Rules) {
		return policyName(np), "rule " + key, true
	}
	r := np.Rules[index]
	if r.Name != "" {
		return policyName(np), r.Name, true
	}
	dir := "ingress"
	if r.Direction == controlplane.DirectionOut {
		dir = "egress"
	}
	return policyName(np), fmt.Sprintf("%s rule %d", dir, r.Priority), true
}

// policyName names np's user policy as kubectl takes it.
func policyName(np *controlplane.NetworkPolicy) string {
	ref := np.SourceRef
	if ref == nil || ref.Name == "" {
		return np.Name
	}
	switch ref.Type {
	case controlplane.SeineClusterNetworkPolicy:
		return "clusternetworkpolicies.crd.seine.io/" + ref.Name
	case controlplane.UpstreamClusterNetworkPolicy:
		return "clusternetworkpolicies.policy.networking.k8s.io/" + ref.Name
	case controlplane.SeineNetworkPolicy:
		return "networkpolicies.crd.seine.io/" + ref.Namespace + "/" + ref.Name
	}
	if ref.Namespace != "" {
		return ref.Namespace + "/" + ref.Name
	}
	return ref.Name
}
