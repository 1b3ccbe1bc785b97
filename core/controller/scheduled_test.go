package controller

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A pod bound to a node is in the AppliedToGroups that select it before it
// has an IP: the node's agent learns it with its policies before the
// runtime creates its sandbox, so it isolates the pod (by name: its OVS
// port) before its first packet. It joins AddressGroups only with an IP, the
// one thing peers match on. Issue 12, item 1.
func TestScheduledPodIsAppliedToBeforeItsIP(t *testing.T) {
	deny := ingress80("deny", &metav1.LabelSelector{})
	allow := ingress80("from-servers", sel("pod", "client"), fromPods(sel("app", "server")))
	e := start(t, ns("x", nil), deny, allow,
		pod("x", "client", "n2", "10.0.2.1", map[string]string{"pod": "client"}))
	ctx := context.Background()
	pods := e.client.CoreV1().Pods("x")

	// Bound by the scheduler: a node, no IP yet.
	server := pod("x", "server", "n1", "", map[string]string{"app": "server"})
	server.Status.Phase = corev1.PodPending
	if _, err := pods.Create(ctx, server, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitFor(`
ag {namespace=x podSelector=app=server} members=[] span=[n2]
atg {namespace=x podSelector=pod=client} members=[x/client@n2,10.0.2.1] span=[n2]
atg {namespace=x podSelector=} members=[x/client@n2,10.0.2.1 x/server@n1] span=[n1 n2]
np x/deny types=[Ingress] atg=[{namespace=x podSelector=}] span=[n1 n2]
np x/from-servers types=[Ingress] atg=[{namespace=x podSelector=pod=client}] span=[n2]
  In peers=[{namespace=x podSelector=app=server}] services=[TCP/80 UDP/80] priority=-1`)

	// The runtime set it up: its IP makes it a peer too.
	server.Status.PodIP, server.Status.PodIPs = "10.0.1.1", []corev1.PodIP{{IP: "10.0.1.1"}}
	server.Status.Phase = corev1.PodRunning
	if _, err := pods.UpdateStatus(ctx, server, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitFor(`
ag {namespace=x podSelector=app=server} members=[x/server@n1,10.0.1.1] span=[n2]
atg {namespace=x podSelector=pod=client} members=[x/client@n2,10.0.2.1] span=[n2]
atg {namespace=x podSelector=} members=[x/client@n2,10.0.2.1 x/server@n1,10.0.1.1] span=[n1 n2]
np x/deny types=[Ingress] atg=[{namespace=x podSelector=}] span=[n1 n2]
np x/from-servers types=[Ingress] atg=[{namespace=x podSelector=pod=client}] span=[n2]
  In peers=[{namespace=x podSelector=app=server}] services=[TCP/80 UDP/80] priority=-1`)

	// Not yet bound, host network, or done: not a member.
	for _, p := range []*corev1.Pod{
		pod("x", "unbound", "", "", nil),
		func() *corev1.Pod { p := pod("x", "hostnet", "n1", "", nil); p.Spec.HostNetwork = true; return p }(),
		func() *corev1.Pod {
			p := pod("x", "done", "n1", "", nil)
			p.Status.Phase = corev1.PodSucceeded
			return p
		}(),
	} {
		if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	e.settle()
	it, _ := e.c.AppliedToGroups.Get(e.c.atgs[groupName("namespace=x podSelector=")].name)
	if got := members(it.Object.Members); got != "[x/client@n2,10.0.2.1 x/server@n1,10.0.1.1]" {
		t.Errorf("members %s: an unbound, host-network or finished pod joined", got)
	}
}
