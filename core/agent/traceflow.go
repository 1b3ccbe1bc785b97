package agent

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/seine-cni/seine/core/pipeline"
	"github.com/seine-cni/seine/core/traceflow"
	"github.com/seine-cni/seine/ovs/openflow"
	"k8s.io/client-go/dynamic"
)

// startTraceflow runs the agent's side of Traceflow (core/traceflow) when
// the agent talks to a kube-apiserver; it returns the function that runs it.
func (a *Agent) startTraceflow() (func(context.Context) error, error) {
	if a.controlPlane == nil {
		return nil, nil
	}
	served, err := traceflow.Served(a.kube.Discovery())
	if err != nil {
		a.log.Warn("traceflow off: cannot tell whether the cluster serves it", "err", err)
		return nil, nil
	}
	if !served {
		a.log.Warn("traceflow off: the cluster does not serve traceflows.crd.seine.io (seine.yml installs it; restart the agent after)")
		return nil, nil
	}
	dyn, err := dynamic.NewForConfig(traceflow.ClientConfig(a.controlPlane))
	if err != nil {
		return nil, fmt.Errorf("traceflow: dynamic client: %w", err)
	}
	tf := traceflow.NewAgent(a.cfg.NodeName, dyn, traceflowNode{a}, a.log.With("component", "traceflow"))
	a.tf.Store(tf)
	return tf.Run, nil
}

// traceflowNode is the agent as core/traceflow sees it.
type traceflowNode struct{ a *Agent }

// Install runs fn on the live connection under the flow lock, so the
// tagged copies are taken from (and added to) flows no other writer is
// changing.
func (n traceflowNode) Install(ctx context.Context, fn func(traceflow.Writer, *pipeline.NodeConfig, pipeline.Round) error) error {
	a := n.a
	return a.doLocked(ctx, a.sw.Do, func(w FlowWriter, node *pipeline.NodeConfig, round pipeline.Round) error {
		tw, ok := w.(traceflow.Writer)
		if !ok {
			return fmt.Errorf("openflow connection %T cannot send packet-outs", w)
		}
		if node == nil {
			return errNotReady
		}
		copied := *node
		return fn(tw, &copied, round)
	})
}

// LocalPod finds a local pod by namespace/name, or by IP when name is "".
func (n traceflowNode) LocalPod(namespace, name string, ip netip.Addr) (traceflow.LocalPod, bool) {
	a := n.a
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range a.pods {
		if p.ofport == 0 || len(p.ips) == 0 {
			continue
		}
		if name != "" && (p.ref.Namespace != namespace || p.ref.Name != name) {
			continue
		}
		for _, pip := range p.ips {
			if name != "" || pip.Addr() == ip {
				if pip.Addr().Is4() {
					return traceflow.LocalPod{Port: p.ofport, MAC: p.mac, IP: pip.Addr()}, true
				}
			}
		}
	}
	return traceflow.LocalPod{}, false
}

// IsolatedBy names the policies isolating the pod on port.
func (n traceflowNode) IsolatedBy(ingress bool, port uint32) []string {
	return n.a.policy.IsolatedBy(ingress, port)
}

// TieredRule names the tiered rule at priority in a tier table.
func (n traceflowNode) TieredRule(table uint8, priority uint16) (string, string, bool) {
	return n.a.policy.TieredRule(table, priority)
}

// FlushDatapath deletes every flow the datapath cached: a trace calls it
// once its copies are in, before anything depends on them. A cached flow
// made before the copies does not match on DSCP and keeps the actions of
// the tables it was made from until a revalidator translates it again;
// ovs-vswitchd wakes its revalidators only after the copies' commit, and
// one already in a pass skips the flows it considers unchanged, so a
// packet-out right after the bundle took such a flow and the trace saw
// nothing (core/traceflow's README, "The datapath's cached flows"). The
// flush costs about what the copies cost anyway: a revalidator deletes
// every cached flow whose translation now reads the DSCP (its mask is too
// wide), nearly every IP flow; the flush does it before the agent goes on.
// Unlike policyNode.SettleDatapath it does not wait for revalidator/wait
// (which can take the revalidators' 500 ms period): a packet that misses
// is translated against the current tables, even while ovs-vswitchd does
// not cache the result yet.
func (n traceflowNode) FlushDatapath(ctx context.Context) error {
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
	return nil
}

// traced is w for a flow writer holding the flow lock: while a Traceflow's
// copies are on the switch, every flow change it sends is followed by the
// changes of the copies of the flows it touched (traceflow.Agent.Follow),
// so a trace sees the flows as they are, not as they were when it started.
// Without Traceflow, or while no trace runs, w goes to the switch as it is.
func (a *Agent) traced(w FlowWriter) FlowWriter {
	tf := a.tf.Load()
	if tf == nil {
		return w
	}
	return tracedWriter{FlowWriter: w, tf: tf}
}

type tracedWriter struct {
	FlowWriter
	tf *traceflow.Agent
}

func (w tracedWriter) Bundle(ctx context.Context, msgs ...openflow.Message) error {
	err := w.FlowWriter.Bundle(ctx, msgs...)
	if w.tf.Following() {
		w.tf.Follow(ctx, w.FlowWriter.Bundle, msgs, err)
	}
	return err
}

func (w tracedWriter) BundleFlows(ctx context.Context, command uint8, flows []*openflow.Flow) error {
	err := w.FlowWriter.BundleFlows(ctx, command, flows)
	if w.tf.Following() {
		msgs := make([]openflow.Message, len(flows))
		for i, f := range flows {
			fm := openflow.AddFlow(f)
			fm.Command = command
			msgs[i] = fm
		}
		w.tf.Follow(ctx, w.FlowWriter.Bundle, msgs, err)
	}
	return err
}

func (w tracedWriter) DeleteFlowsByCookie(ctx context.Context, cookie, mask uint64) error {
	err := w.FlowWriter.DeleteFlowsByCookie(ctx, cookie, mask)
	if w.tf.Following() {
		w.tf.Follow(ctx, w.FlowWriter.Bundle, []openflow.Message{openflow.DeleteFlows(openflow.TableAll, nil, cookie, mask)}, err)
	}
	return err
}

// Apply sends packet-outs and meter-mods (no flows) as the connection does.
func (w tracedWriter) Apply(ctx context.Context, msgs ...openflow.Message) error {
	ap, ok := w.FlowWriter.(applier)
	if !ok {
		return fmt.Errorf("openflow connection %T cannot apply messages", w.FlowWriter)
	}
	return ap.Apply(ctx, msgs...)
}
