package controller

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic/dynamicinformer"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"sigs.k8s.io/yaml"
)

// upstreamPolicy parses a policy.networking.k8s.io ClusterNetworkPolicy
// written as a user writes it.
func upstreamPolicy(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
		t.Fatal(err)
	}
	return u
}

func startUpstream(t *testing.T, objs []runtime.Object, kube ...runtime.Object) *testEnv {
	t.Helper()
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		UpstreamClusterNetworkPoliciesResource: "ClusterNetworkPolicyList",
	}, objs...)
	return startWith(t, func(ctx context.Context, c *Controller) {
		f := dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0)
		if err := c.AddUpstream(f); err != nil {
			t.Fatal(err)
		}
		f.Start(ctx.Done())
		t.Cleanup(f.Shutdown)
	}, kube...)
}

// The upstream ClusterNetworkPolicy takes its place in Seine's one order:
// tier Admin at 240, Baseline at 254, its priority as is; subject
// namespaces or pods become the applied-to pods, Accept/Deny/Pass
// Allow/Drop/Pass; peers namespaces, pods and networks; protocols with a
// port, a range or a named port (in every protocol); egress nodes as a
// nodeSelector peer (the Nodes' addresses). Domain name peers have no
// equivalent yet: an Accept loses them, a Deny fails closed.
func TestUpstreamClusterNetworkPolicy(t *testing.T) {
	admin := upstreamPolicy(t, `
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: admin-deny, uid: u-admin}
spec:
  tier: Admin
  priority: 10
  subject:
    namespaces: {matchLabels: {team: db}}
  ingress:
  - name: no-x
    action: Deny
    from: [{namespaces: {matchLabels: {env: x}}}]
    protocols: [{tcp: {destinationPort: {number: 5432}}}, {udp: {destinationPort: {range: {start: 53, end: 60}}}}]
  - action: Pass
    from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}]
    protocols: [{destinationNamedPort: http}]
  egress:
  - action: Accept
    to: [{networks: [10.0.0.0/8]}, {nodes: {}}]
  - action: Deny
    to: [{domainNames: [example.com]}]
  - action: Accept
    to: [{domainNames: ["*.Example.com.", example.org, example.org.]}, {networks: [192.0.2.0/24]}]
`)
	baseline := upstreamPolicy(t, `
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: baseline-deny, uid: u-base}
spec:
  tier: Baseline
  priority: 3
  subject:
    pods: {namespaceSelector: {matchLabels: {env: x}}, podSelector: {matchLabels: {app: web}}}
  ingress:
  - action: Deny
    from: [{namespaces: {}}]
`)
	e := startUpstream(t, []runtime.Object{admin, baseline},
		ns("x", map[string]string{"env": "x"}), ns("y", map[string]string{"team": "db"}),
		pod("x", "web", "n1", "10.0.1.1", map[string]string{"app": "web"}),
		pod("y", "db", "n2", "10.0.2.1", map[string]string{"app": "db"}),
		node("n1", nil, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "192.168.0.1"}))
	e.waitFor(`
ag {namespaceSelector= podSelector=app=web} members=[x/web@n1,10.0.1.1] span=[n2]
ag {namespaceSelector= podSelector=} members=[x/web@n1,10.0.1.1 y/db@n2,10.0.2.1] span=[n1]
ag {namespaceSelector=env=x podSelector=} members=[x/web@n1,10.0.1.1] span=[n2]
ag {nodeSelector=} members=[node:n1,192.168.0.1] span=[n2]
atg {namespaceSelector=env=x podSelector=app=web} members=[x/web@n1,10.0.1.1] span=[n1]
atg {namespaceSelector=team=db podSelector=} members=[y/db@n2,10.0.2.1] span=[n2]
upstream-cnp admin-deny types=[] atg=[{namespaceSelector=team=db podSelector=}] span=[n2] tier=Admin/240 priority=10 error=egress rule 1: peer 0: domainNames in a Deny rule (Accept rules only): Drop of every address (fails closed)
  In peers=[{namespaceSelector=env=x podSelector=}] services=[TCP/5432 UDP/53-60] priority=0 action=Drop name=no-x
  In peers=[{namespaceSelector= podSelector=app=web}] services=[TCP/http UDP/http SCTP/http] priority=1 action=Pass
  Out peers=[{nodeSelector=} 10.0.0.0/8] services=[] priority=0 action=Allow
  Out peers=[0.0.0.0/0 ::/0] services=[] priority=1 action=Drop
  Out peers=[192.0.2.0/24 fqdn:*.example.com fqdn:example.org] services=[] priority=2 action=Allow
upstream-cnp baseline-deny types=[] atg=[{namespaceSelector=env=x podSelector=app=web}] span=[n1] tier=Baseline/254 priority=3
  In peers=[{namespaceSelector= podSelector=}] services=[] priority=0 action=Drop`)
}
