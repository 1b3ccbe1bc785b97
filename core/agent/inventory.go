package agent

import (
	"context"
	"fmt"

	"k8s.io/client-go/dynamic"

	crd "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/core/inventory"
	"github.com/seine-cni/seine/core/traceflow"
	"github.com/seine-cni/seine/ovs/openflow"
)

// startInventory runs the writer of the node's SeineAgentInfo
// (core/inventory) when the agent talks to a kube-apiserver that serves
// it; it returns the function that runs it.
func (a *Agent) startInventory() (func(context.Context) error, error) {
	if a.controlPlane == nil {
		return nil, nil
	}
	served, err := inventory.Served(a.kube.Discovery())
	if err != nil || !served {
		a.log.Warn("agent info off: the cluster does not serve seineagentinfos.crd.seine.io (seine.yml installs it; restart the agent after)", "err", err)
		return nil, nil
	}
	// The same client-side limits as Traceflow's status writes: a write a
	// minute, and a burst when the node's state changes.
	dyn, err := dynamic.NewForConfig(traceflow.ClientConfig(a.controlPlane))
	if err != nil {
		return nil, fmt.Errorf("agent info: dynamic client: %w", err)
	}
	r := inventory.NewAgent(a.cfg.NodeName, dyn, inventorySource{a}, a.log.With("component", "inventory"), inventory.AgentOptions{})
	return r.Run, nil
}

// inventorySource is the agent as core/inventory reads it.
type inventorySource struct{ a *Agent }

func (s inventorySource) Ready() (bool, string) { return s.a.Ready() }

func (s inventorySource) NodeIP() string {
	s.a.mu.Lock()
	defer s.a.mu.Unlock()
	if s.a.node == nil || len(s.a.node.NodeIPs) == 0 {
		return ""
	}
	return s.a.node.NodeIPs[0].String()
}

func (s inventorySource) PodCIDRs() []string {
	s.a.mu.Lock()
	defer s.a.mu.Unlock()
	if s.a.node == nil {
		return nil
	}
	out := make([]string, len(s.a.node.PodCIDRs))
	for i, p := range s.a.node.PodCIDRs {
		out[i] = p.String()
	}
	return out
}

func (s inventorySource) LocalPods() int { return metricSource(s).LocalPods() }

func (s inventorySource) Policy() crd.PolicyInfo {
	c := s.a.policy.Counts()
	return crd.PolicyInfo{
		NetworkPolicies: int32(c.NetworkPolicies), AppliedToGroups: int32(c.AppliedToGroups), AddressGroups: int32(c.AddressGroups),
		IngressRules: int32(c.IngressRules), EgressRules: int32(c.EgressRules),
	}
}

func (s inventorySource) Connections() []inventory.Connection {
	out := make([]inventory.Connection, 0, 3)
	if pw := s.a.pwatch.Load(); pw != nil {
		up, why := pw.Connected()
		out = append(out, inventory.Connection{Type: inventory.ConditionControllerConnected, Up: up, Reason: "WatchEnded", Message: why})
	}
	out = append(out,
		inventory.Connection{Type: inventory.ConditionOVSDBConnected, Up: metricSource(s).OVSDBConnected(), Reason: "Disconnected",
			Message: "no connection to ovsdb-server at " + s.a.cfg.OVS.DBEndpoint},
		inventory.Connection{Type: inventory.ConditionOpenFlowConnected, Up: metricSource(s).OpenFlowConnected(), Reason: "Disconnected",
			Message: "no OpenFlow connection to ovs-vswitchd (bridge " + s.a.cfg.OVS.Bridge + ")"})
	return out
}

func (s inventorySource) OVSVersion(ctx context.Context) (string, error) {
	v, ok := s.a.db.(versioner)
	if !ok {
		return "", fmt.Errorf("ovsdb client %T reads no version", s.a.db)
	}
	return v.Version(ctx)
}

func (s inventorySource) Bridge() string       { return s.a.cfg.OVS.Bridge }
func (s inventorySource) DatapathType() string { return string(s.a.cfg.datapath()) }

func (s inventorySource) TableStats(ctx context.Context) ([]openflow.TableStats, error) {
	return metricSource(s).TableStats(ctx)
}
