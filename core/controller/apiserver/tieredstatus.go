package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	crdv1 "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/core/controller"
)

// WriteTieredStatus keeps the status of every ClusterNetworkPolicy and
// NetworkPolicy (crd.seine.io) what the controlplane API computes for its internal
// policy (phase, generation, desired and realized nodes, the error), and
// that of every upstream one (policy.networking.k8s.io) as its condition
// Realized,
// checking every interval until ctx ends and writing only what changed,
// so `kubectl get clusternetworkpolicies` shows the realization without
// the aggregated API.
func (s *Server) WriteTieredStatus(ctx context.Context, dc dynamic.Interface, every time.Duration) {
	writeTieredStatus(ctx, func() (*cp.NetworkPolicyList, bool) {
		l, ok := s.np.list(view{}).(*cp.NetworkPolicyList)
		return l, ok
	}, dc, every, s.log)
}

// writeTieredStatus is WriteTieredStatus over list, the policies with their
// status as an admin lists them.
func writeTieredStatus(ctx context.Context, list func() (*cp.NetworkPolicyList, bool), dc dynamic.Interface, every time.Duration, log *slog.Logger) {
	written := map[string]crdv1.NetworkPolicyStatus{}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		l, ok := list()
		if !ok {
			continue
		}
		seen := map[string]bool{}
		for i := range l.Items {
			np := &l.Items[i]
			if np.SourceRef == nil || np.Status == nil {
				continue
			}
			gvr := crdv1.ClusterNetworkPoliciesResource
			switch np.SourceRef.Type {
			case cp.SeineClusterNetworkPolicy:
			case cp.SeineNetworkPolicy:
				gvr = crdv1.NetworkPoliciesResource
			case cp.UpstreamClusterNetworkPolicy:
				gvr = controller.UpstreamClusterNetworkPoliciesResource
			default:
				continue
			}
			name, namespace := np.SourceRef.Name, np.SourceRef.Namespace
			key := string(np.SourceRef.Type) + "/" + namespace + "/" + name
			seen[key] = true
			st := crdv1.NetworkPolicyStatus{
				Phase: string(np.Status.Phase), ObservedGeneration: np.Status.Generation,
				DesiredNodesRealized: np.Status.DesiredNodes, CurrentNodesRealized: np.Status.RealizedNodes,
				Message: np.Status.Error,
			}
			if written[key] == st {
				continue
			}
			var body any = st
			if np.SourceRef.Type == cp.UpstreamClusterNetworkPolicy {
				body = upstreamStatus(st)
			}
			b, err := json.Marshal(map[string]any{"status": body})
			if err != nil {
				continue
			}
			_, err = dc.Resource(gvr).Namespace(namespace).Patch(ctx, name, types.MergePatchType, b, metav1.PatchOptions{}, "status")
			if err != nil {
				log.Debug("write cluster network policy status", "kind", np.SourceRef.Type, "name", name, "err", err)
				continue
			}
			written[key] = st
		}
		for name := range written {
			if !seen[name] {
				delete(written, name)
			}
		}
	}
}

// upstreamStatus is the realization as the upstream API's status: one
// condition, Realized, True once every node that needs the policy enforces
// its generation, with the phase as reason and the node counts (and any
// error) as message.
func upstreamStatus(st crdv1.NetworkPolicyStatus) map[string]any {
	status := metav1.ConditionFalse
	if st.Phase == string(cp.PolicyRealized) {
		status = metav1.ConditionTrue
	}
	msg := fmt.Sprintf("%d of %d nodes realized generation %d", st.CurrentNodesRealized, st.DesiredNodesRealized, st.ObservedGeneration)
	if st.Message != "" {
		msg += ": " + st.Message
	}
	reason := st.Phase
	if reason == "" {
		reason = "Pending"
	}
	return map[string]any{"conditions": []metav1.Condition{{
		Type: "Realized", Status: status, ObservedGeneration: st.ObservedGeneration,
		LastTransitionTime: metav1.Now(), Reason: reason, Message: msg,
	}}}
}
