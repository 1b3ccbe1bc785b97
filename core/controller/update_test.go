package controller

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func updateScenario() []runtimeObject {
	web := policy("ns1", "web", sel("app", "web"), both)
	web.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
		{PodSelector: sel("app", "db")},
		{NamespaceSelector: sel("team", "b")},
	}}}
	// A second policy with the same selectors shares every group.
	web2 := web.DeepCopy()
	web2.Name, web2.UID = "web2", "ns1-web2"
	return []runtimeObject{
		ns("ns1", map[string]string{"team": "a"}), ns("ns2", map[string]string{"team": "b"}),
		pod("ns1", "web1", "n1", "10.0.0.1", map[string]string{"app": "web"}),
		pod("ns1", "db1", "n3", "10.0.0.3", map[string]string{"app": "db"}),
		pod("ns2", "x1", "n5", "10.0.0.5", nil),
		web, web2,
	}
}

func TestUpdates(t *testing.T) {
	e := start(t, updateScenario()...)
	ctx := context.Background()
	e.waitFor(`
ag {namespace=ns1 podSelector=app=db} members=[ns1/db1@n3,10.0.0.3] span=[n1]
ag {namespaceSelector=team=b podSelector=} members=[ns2/x1@n5,10.0.0.5] span=[n1]
atg {namespace=ns1 podSelector=app=web} members=[ns1/web1@n1,10.0.0.1] span=[n1]
np ns1/web types=[Ingress Egress] atg=[{namespace=ns1 podSelector=app=web}] span=[n1]
  In peers=[{namespace=ns1 podSelector=app=db} {namespaceSelector=team=b podSelector=}] services=[] priority=-1
np ns1/web2 types=[Ingress Egress] atg=[{namespace=ns1 podSelector=app=web}] span=[n1]
  In peers=[{namespace=ns1 podSelector=app=db} {namespaceSelector=team=b podSelector=}] services=[] priority=-1`)

	t.Run("an update that changes nothing sends no event", func(t *testing.T) {
		w, _ := e.c.NetworkPolicies.Watch(10)
		defer w.Stop()
		np, err := e.client.NetworkingV1().NetworkPolicies("ns1").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		np.Annotations = map[string]string{"touched": "yes"}
		if _, err := e.client.NetworkingV1().NetworkPolicies("ns1").Update(ctx, np, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		e.settle()
		select {
		case ev := <-w.Events():
			t.Errorf("unexpected event %v for %s", ev.Type, ev.Key)
		default:
		}
	})

	pods := e.client.CoreV1().Pods("ns1")
	t.Run("label change moves a pod between groups", func(t *testing.T) {
		p := pod("ns1", "db1", "n3", "10.0.0.3", map[string]string{"app": "web"})
		if _, err := pods.Update(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		e.waitFor(`
ag {namespace=ns1 podSelector=app=db} members=[] span=[n1 n3]
ag {namespaceSelector=team=b podSelector=} members=[ns2/x1@n5,10.0.0.5] span=[n1 n3]
atg {namespace=ns1 podSelector=app=web} members=[ns1/db1@n3,10.0.0.3 ns1/web1@n1,10.0.0.1] span=[n1 n3]
np ns1/web types=[Ingress Egress] atg=[{namespace=ns1 podSelector=app=web}] span=[n1 n3]
  In peers=[{namespace=ns1 podSelector=app=db} {namespaceSelector=team=b podSelector=}] services=[] priority=-1
np ns1/web2 types=[Ingress Egress] atg=[{namespace=ns1 podSelector=app=web}] span=[n1 n3]
  In peers=[{namespace=ns1 podSelector=app=db} {namespaceSelector=team=b podSelector=}] services=[] priority=-1`)
	})

	t.Run("node and IP change update members and spans", func(t *testing.T) {
		p := pod("ns1", "web1", "n9", "10.0.9.1", map[string]string{"app": "web"})
		if _, err := pods.Update(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		e.waitFor(`
ag {namespace=ns1 podSelector=app=db} members=[] span=[n3 n9]
ag {namespaceSelector=team=b podSelector=} members=[ns2/x1@n5,10.0.0.5] span=[n3 n9]
atg {namespace=ns1 podSelector=app=web} members=[ns1/db1@n3,10.0.0.3 ns1/web1@n9,10.0.9.1] span=[n3 n9]
np ns1/web types=[Ingress Egress] atg=[{namespace=ns1 podSelector=app=web}] span=[n3 n9]
  In peers=[{namespace=ns1 podSelector=app=db} {namespaceSelector=team=b podSelector=}] services=[] priority=-1
np ns1/web2 types=[Ingress Egress] atg=[{namespace=ns1 podSelector=app=web}] span=[n3 n9]
  In peers=[{namespace=ns1 podSelector=app=db} {namespaceSelector=team=b podSelector=}] services=[] priority=-1`)
	})

	t.Run("terminated pod and namespace label change leave groups", func(t *testing.T) {
		p := pod("ns1", "db1", "n3", "10.0.0.3", map[string]string{"app": "web"})
		p.Status.Phase = corev1.PodFailed
		if _, err := pods.Update(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.client.CoreV1().Namespaces().Update(ctx, ns("ns2", map[string]string{"team": "c"}), metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		e.waitFor(`
ag {namespace=ns1 podSelector=app=db} members=[] span=[n9]
ag {namespaceSelector=team=b podSelector=} members=[] span=[n9]
atg {namespace=ns1 podSelector=app=web} members=[ns1/web1@n9,10.0.9.1] span=[n9]
np ns1/web types=[Ingress Egress] atg=[{namespace=ns1 podSelector=app=web}] span=[n9]
  In peers=[{namespace=ns1 podSelector=app=db} {namespaceSelector=team=b podSelector=}] services=[] priority=-1
np ns1/web2 types=[Ingress Egress] atg=[{namespace=ns1 podSelector=app=web}] span=[n9]
  In peers=[{namespace=ns1 podSelector=app=db} {namespaceSelector=team=b podSelector=}] services=[] priority=-1`)
	})

	t.Run("policy update and delete release groups", func(t *testing.T) {
		nps := e.client.NetworkingV1().NetworkPolicies("ns1")
		if err := nps.Delete(ctx, "web2", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		web := policy("ns1", "web", sel("app", "web"), []networkingv1.PolicyType{networkingv1.PolicyTypeEgress})
		web.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "web")}}}}
		if _, err := nps.Update(ctx, web, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		e.waitFor(`
ag {namespace=ns1 podSelector=app=web} members=[ns1/web1@n9,10.0.9.1] span=[n9]
atg {namespace=ns1 podSelector=app=web} members=[ns1/web1@n9,10.0.9.1] span=[n9]
np ns1/web types=[Egress] atg=[{namespace=ns1 podSelector=app=web}] span=[n9]
  Out peers=[{namespace=ns1 podSelector=app=web}] services=[] priority=-1`)

		if err := nps.Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		e.waitFor(``)
		e.c.mu.Lock()
		defer e.c.mu.Unlock()
		if len(e.c.atgs)+len(e.c.ags)+len(e.c.clusterGroups)+len(e.c.policies) != 0 {
			t.Errorf("state left after every policy was deleted: %d atgs, %d ags, %d cluster groups, %d policies",
				len(e.c.atgs), len(e.c.ags), len(e.c.clusterGroups), len(e.c.policies))
		}
		for name, n := range e.c.idx.namespaces {
			if len(n.groupBy)+len(n.groupAll) != 0 {
				t.Errorf("namespace %s still indexes groups", name)
			}
		}
	})

	t.Run("pod delete forgets the pod", func(t *testing.T) {
		for _, name := range []string{"web1", "db1"} {
			if err := pods.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		if err := e.client.CoreV1().Namespaces().Delete(ctx, "ns1", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		e.settle()
		e.c.mu.Lock()
		defer e.c.mu.Unlock()
		if n := e.c.idx.namespaces["ns1"]; n != nil {
			t.Errorf("namespace ns1 still indexed with %d pods", len(n.pods))
		}
	})
}
