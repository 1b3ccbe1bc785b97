package apiserver

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	crdv1 "github.com/seine-cni/seine/core/apis/crd/v1beta1"
)

// WriteTieredStatus keeps the status of every ClusterNetworkPolicy
// (crd.seine.io) what the controlplane API computes for its internal
// policy (phase, generation, desired and realized nodes, the error),
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
			if np.SourceRef == nil || np.SourceRef.Type != cp.SeineClusterNetworkPolicy || np.Status == nil {
				continue
			}
			name := np.SourceRef.Name
			seen[name] = true
			st := crdv1.NetworkPolicyStatus{
				Phase: string(np.Status.Phase), ObservedGeneration: np.Status.Generation,
				DesiredNodesRealized: np.Status.DesiredNodes, CurrentNodesRealized: np.Status.RealizedNodes,
				Message: np.Status.Error,
			}
			if written[name] == st {
				continue
			}
			b, err := json.Marshal(map[string]any{"status": st})
			if err != nil {
				continue
			}
			_, err = dc.Resource(crdv1.ClusterNetworkPoliciesResource).Patch(ctx, name, types.MergePatchType, b, metav1.PatchOptions{}, "status")
			if err != nil {
				log.Debug("write cluster network policy status", "name", name, "err", err)
				continue
			}
			written[name] = st
		}
		for name := range written {
			if !seen[name] {
				delete(written, name)
			}
		}
	}
}
