package controller

import (
	"testing"

	"k8s.io/apimachinery/pkg/runtime"

	crdv1 "github.com/seine-cni/seine/core/apis/crd/v1beta1"
)

// TestTieredFQDNPeer: an egress fqdn peer becomes the rule's domain names
// in canonical form (one per pattern); beside another peer it is refused
// (a Drop fails closed); in an ingress rule it is refused (an Allow leaves
// it out).
func TestTieredFQDNPeer(t *testing.T) {
	p := cnp("to-names", "", 1, []crdv1.AppliedTo{{PodSelector: sel("app", "web")}},
		[]crdv1.Rule{{Action: crdv1.RuleActionAllow, From: []crdv1.Peer{{FQDN: "example.com"}, {PodSelector: sel("app", "db")}}}},
		[]crdv1.Rule{
			{Action: crdv1.RuleActionAllow, To: []crdv1.Peer{{FQDN: "*.Example.COM."}, {FQDN: "*.example.com"}, {FQDN: "api.example.org"}}},
			{Action: crdv1.RuleActionDrop, To: []crdv1.Peer{{FQDN: "example.net", PodSelector: sel("app", "db")}}},
		})
	e := startTiered(t, []runtime.Object{p},
		ns("x", nil), pod("x", "web", "n1", "10.0.1.1", map[string]string{"app": "web"}))
	e.waitFor(`
ag {namespaceSelector= podSelector=app=db} members=[] span=[n1]
atg {namespaceSelector= podSelector=app=web} members=[x/web@n1,10.0.1.1] span=[n1]
cnp to-names types=[] atg=[{namespaceSelector= podSelector=app=web}] span=[n1] tier=application/250 priority=1 error=ingress rule 0: fqdn peers are for egress rules: peer left out; egress rule 1: peer 0: fqdn with a selector, ipBlock or group beside it (an fqdn stands alone in its entry): Drop of every address (fails closed)
  In peers=[{namespaceSelector= podSelector=app=db}] services=[] priority=0 action=Allow
  Out peers=[fqdn:*.example.com fqdn:api.example.org] services=[] priority=0 action=Allow
  Out peers=[0.0.0.0/0 ::/0] services=[] priority=1 action=Drop`)
}
