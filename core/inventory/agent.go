package inventory

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	crd "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/ovs/openflow"
)

// AgentSource is the agent as its inventory reads it. The counts come
// from the agent's memory; TableStats and OVSVersion ask the switch.
type AgentSource interface {
	// Ready says whether the agent serves CNI requests, and why not.
	Ready() (bool, string)
	NodeIP() string
	PodCIDRs() []string
	LocalPods() int
	Policy() crd.PolicyInfo
	// Connections are the agent's connections, by condition type
	// (ControllerConnected, OVSDBConnected, OpenFlowConnected).
	Connections() []Connection
	OVSVersion(ctx context.Context) (string, error)
	Bridge() string
	DatapathType() string
	TableStats(ctx context.Context) ([]openflow.TableStats, error)
}

// Connection is one connection of a component and its state.
type Connection struct {
	Type string
	Up   bool
	// Reason (CamelCase) and Message say why it is down.
	Reason, Message string
}

// Condition types of SeineAgentInfo.
const (
	ConditionReady               = "Ready"
	ConditionControllerConnected = "ControllerConnected"
	ConditionOVSDBConnected      = "OVSDBConnected"
	ConditionOpenFlowConnected   = "OpenFlowConnected"
)

// Defaults of AgentOptions.
const (
	DefaultHeartbeat = time.Minute
	DefaultCheck     = 5 * time.Second
)

// AgentOptions tune the agent's reporter.
type AgentOptions struct {
	// Heartbeat is how often the status is written when nothing changed
	// (DefaultHeartbeat when 0).
	Heartbeat time.Duration
	// Check is how often the agent's state is read and compared with what
	// was written; a change is written at once (DefaultCheck when 0).
	Check time.Duration
	// Version is the agent's build (Version() when empty).
	Version string
}

// Agent writes its node's SeineAgentInfo status.
type Agent struct {
	node string
	dyn  dynamic.Interface
	src  AgentSource
	log  *slog.Logger
	opts AgentOptions
	now  func() time.Time

	last    *crd.SeineAgentInfoStatus // what was last written; nil before
	written time.Time
}

// NewAgent returns the reporter of node's agent.
func NewAgent(node string, dyn dynamic.Interface, src AgentSource, log *slog.Logger, o AgentOptions) *Agent {
	if o.Heartbeat == 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.Check == 0 {
		o.Check = DefaultCheck
	}
	if o.Version == "" {
		o.Version = Version()
	}
	return &Agent{node: node, dyn: dyn, src: src, log: log, opts: o, now: time.Now}
}

// Run reports until ctx ends: at once, when readiness, a connection or
// the node's addresses change (checked every Check), and every Heartbeat. A report that fails (the
// controller has not created the object yet, the apiserver is away) is
// tried again at the next check.
func (a *Agent) Run(ctx context.Context) error {
	t := time.NewTicker(a.opts.Check)
	defer t.Stop()
	for {
		if err := a.Report(ctx); err != nil && ctx.Err() == nil {
			if apierrors.IsNotFound(err) {
				a.log.Debug("agent info not created yet by seine-controller", "node", a.node)
			} else {
				a.log.Warn("agent info not written; retrying", "err", err, "in", a.opts.Check)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Report reads the agent's state and writes it when it changed since the
// last write (sameReport) or the heartbeat is due.
func (a *Agent) Report(ctx context.Context) error {
	st := a.status()
	now := a.now()
	if a.last != nil && now.Sub(a.written) < a.opts.Heartbeat && sameReport(a.last, st) {
		return nil
	}
	a.readSwitch(ctx, st)
	st.Conditions = carryTransitions(a.last, st.Conditions, now)
	st.LastHeartbeatTime = metav1.NewTime(now)
	if err := applyStatus(ctx, a.dyn, crd.SeineAgentInfosResource, "SeineAgentInfo", a.node, "seine-agent", st); err != nil {
		return err
	}
	a.last, a.written = st, now
	return nil
}

// status is the agent's state now as its memory holds it: everything but
// what the switch must be asked (readSwitch), so the check every Check
// costs no round trip to OVS.
func (a *Agent) status() *crd.SeineAgentInfoStatus {
	st := &crd.SeineAgentInfoStatus{
		Version:   a.opts.Version,
		NodeIP:    a.src.NodeIP(),
		PodCIDRs:  a.src.PodCIDRs(),
		LocalPods: int32(a.src.LocalPods()),
		Policy:    a.src.Policy(),
		OVS:       crd.OVSInfo{Bridge: a.src.Bridge(), DatapathType: a.src.DatapathType()},
	}
	ready, why := a.src.Ready()
	conds := []metav1.Condition{condition(ConditionReady, ready, "NotReady", why)}
	for _, c := range a.src.Connections() {
		conds = append(conds, condition(c.Type, c.Up, c.Reason, c.Message))
		ready = ready && c.Up
	}
	st.Conditions = conds
	st.Ready = string(metav1.ConditionFalse)
	if ready {
		st.Ready = string(metav1.ConditionTrue)
	}
	return st
}

// readSwitch fills in what only the switch knows, for a report about to
// be written: its version and its flows per table. A switch that does not
// answer leaves them empty; its connection condition says why.
func (a *Agent) readSwitch(ctx context.Context, st *crd.SeineAgentInfoStatus) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if v, err := a.src.OVSVersion(ctx); err == nil {
		st.OVS.Version = v
	}
	if ts, err := a.src.TableStats(ctx); err == nil {
		st.OVS.FlowsPerTable = map[string]int64{}
		for _, t := range ts {
			if t.ActiveCount == 0 {
				continue
			}
			st.OVS.FlowsPerTable[strconv.Itoa(int(t.TableID))] = int64(t.ActiveCount)
			st.OVS.Flows += int64(t.ActiveCount)
		}
	}
}

func condition(typ string, up bool, reason, message string) metav1.Condition {
	if up {
		return metav1.Condition{Type: typ, Status: metav1.ConditionTrue, Reason: "Up"}
	}
	if reason == "" {
		reason = "Down"
	}
	return metav1.Condition{Type: typ, Status: metav1.ConditionFalse, Reason: reason, Message: message}
}

// carryTransitions sets each condition's lastTransitionTime: the previous
// report's when its status did not change, now when it did or is new.
func carryTransitions(prev *crd.SeineAgentInfoStatus, conds []metav1.Condition, now time.Time) []metav1.Condition {
	for i := range conds {
		conds[i].LastTransitionTime = metav1.NewTime(now)
		if prev == nil {
			continue
		}
		if j := slices.IndexFunc(prev.Conditions, func(c metav1.Condition) bool { return c.Type == conds[i].Type }); j >= 0 && prev.Conditions[j].Status == conds[i].Status {
			conds[i].LastTransitionTime = prev.Conditions[j].LastTransitionTime
		}
	}
	return conds
}

// sameReport says whether b is a change worth writing before the next
// heartbeat: readiness, a condition's status, the agent's version, the
// node's addresses. Counts (pods, policies, flows) move with every pod and
// policy change and wait for the heartbeat, so a node writes about once a
// minute however busy it is. The switch's version is read with each write:
// a new ovs-vswitchd restarts, and the lost connection is written at once.
func sameReport(a, b *crd.SeineAgentInfoStatus) bool {
	if a.Ready != b.Ready || a.Version != b.Version || a.NodeIP != b.NodeIP || !slices.Equal(a.PodCIDRs, b.PodCIDRs) ||
		len(a.Conditions) != len(b.Conditions) {
		return false
	}
	for i := range a.Conditions {
		if a.Conditions[i].Type != b.Conditions[i].Type || a.Conditions[i].Status != b.Conditions[i].Status ||
			a.Conditions[i].Reason != b.Conditions[i].Reason {
			return false
		}
	}
	return true
}

// applyStatus writes status into the named object's status subresource
// with server-side apply, as manager (forcing: the status is the
// manager's alone).
func applyStatus(ctx context.Context, dyn dynamic.Interface, res schema.GroupVersionResource, kind, name, manager string, status any) error {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(status)
	if err != nil {
		return fmt.Errorf("%s %s status: %w", kind, name, err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": crd.SchemeGroupVersion.String(), "kind": kind,
		"metadata": map[string]any{"name": name},
		"status":   m,
	}}
	_, err = dyn.Resource(res).ApplyStatus(ctx, name, u, metav1.ApplyOptions{FieldManager: manager, Force: true})
	return err
}
