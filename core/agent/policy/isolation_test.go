package policy

import (
	"context"
	"slices"
	"testing"

	controlplane "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
)

// TestIsolatedBy: a Traceflow dropped by isolation names the Kubernetes
// policies that isolate the pod in that direction, and only those.
func TestIsolatedBy(t *testing.T) {
	c := newController(t, newFakeNode(webPod, dbPod), "")
	if got := c.IsolatedBy(true, dbPod.OFPort); got != nil {
		t.Errorf("before any state: %v", got)
	}
	s := dbPolicyState(member("default", "web-0", "10.244.1.10"))
	s.NetworkPolicies["db"].SourceRef = &controlplane.NetworkPolicyReference{Namespace: "prod", Name: "db-allow-web"}
	s.AppliedToGroups["all"] = atg("all", member("default", "db-0", "10.244.1.11"), member("default", "web-0", "10.244.1.10"))
	s.NetworkPolicies["egress"] = netpol("egress", 1, []string{"all"}, []controlplane.PolicyType{controlplane.PolicyTypeEgress})
	if err := c.Sync(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ingress bool
		port    uint32
		want    []string
	}{
		{true, dbPod.OFPort, []string{"prod/db-allow-web"}},
		{true, webPod.OFPort, nil},
		{false, dbPod.OFPort, []string{"egress"}}, // no sourceRef: the internal name
		{false, webPod.OFPort, []string{"egress"}},
	} {
		if got := c.IsolatedBy(tc.ingress, tc.port); !slices.Equal(got, tc.want) {
			t.Errorf("ingress=%v port %d: %v, want %v", tc.ingress, tc.port, got, tc.want)
		}
	}
}
