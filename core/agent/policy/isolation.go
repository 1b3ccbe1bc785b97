package policy

import (
	"context"
	"slices"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
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
