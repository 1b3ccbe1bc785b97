package admission

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/seine-cni/seine/core/tiers"
)

// TestHandler: AdmissionReviews as the kube-apiserver sends them, over
// HTTP: refusals carry the field paths (422, reason Invalid, one cause per
// error), valid objects pass, an update that leaves the spec alone passes
// whatever the spec holds, other kinds and operations pass, and nothing
// passes validation before the lookups are synced.
func TestHandler(t *testing.T) {
	f := newFake(t)
	srv := httptest.NewServer(Handler(f, slog.New(slog.NewTextHandler(io.Discard, nil))))
	defer srv.Close()
	review := func(t *testing.T, op admissionv1.Operation, kind, ns, name, obj, old string) *admissionv1.AdmissionResponse {
		t.Helper()
		raw := func(y string) runtime.RawExtension {
			if y == "" {
				return runtime.RawExtension{}
			}
			j, err := yaml.YAMLToJSON([]byte(y))
			if err != nil {
				t.Fatal(err)
			}
			return runtime.RawExtension{Raw: j}
		}
		in := admissionv1.AdmissionReview{
			TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
			Request: &admissionv1.AdmissionRequest{
				UID: "u-1", Kind: metav1.GroupVersionKind{Group: "crd.seine.io", Version: "v1beta1", Kind: kind},
				Namespace: ns, Name: name, Operation: op, Object: raw(obj), OldObject: raw(old),
			},
		}
		b, _ := json.Marshal(in)
		resp, err := http.Post(srv.URL+Path, "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out admissionv1.AdmissionReview
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Response == nil {
			t.Fatalf("decode the response (%s): %v", resp.Status, err)
		}
		if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" || out.Response.UID != "u-1" {
			t.Errorf("response %s %s for %s, want admission.k8s.io/v1 AdmissionReview for u-1", out.APIVersion, out.Kind, out.Response.UID)
		}
		return out.Response
	}
	const bad = `{metadata: {name: p}, spec: {tier: foo, priority: 10, appliedTo: [{podSelector: {}}], ingress: [{action: Drop, ports: [{port: 90, endPort: 80}]}]}}`
	const good = `{metadata: {name: p}, spec: {priority: 10, appliedTo: [{podSelector: {}}]}}`

	r := review(t, admissionv1.Create, KindClusterNetworkPolicy, "", "p", bad, "")
	want := `spec.tier: Invalid value: "foo": tier foo does not exist: create it or use one of emergency, securityops, mine, networkops, platform, application, baseline; ` +
		`spec.ingress[0].ports[0].endPort: Invalid value: 80: the range ends before it starts: endPort must be at least port (90)`
	if r.Allowed || r.Result == nil || r.Result.Message != want || r.Result.Code != 422 || r.Result.Reason != metav1.StatusReasonInvalid ||
		len(r.Result.Details.Causes) != 2 || r.Result.Details.Causes[1].Field != "spec.ingress[0].ports[0].endPort" {
		t.Errorf("a bad create: %+v (%+v), want refused 422 Invalid with two causes: %s", r, r.Result, want)
	}
	if r := review(t, admissionv1.Create, KindClusterNetworkPolicy, "", "p", good, ""); !r.Allowed {
		t.Errorf("a good create refused: %+v", r.Result)
	}
	if r := review(t, admissionv1.Update, KindNetworkPolicy, "x", "p", good, bad); !r.Allowed {
		t.Errorf("an update to a good spec refused: %+v", r.Result)
	}
	if r := review(t, admissionv1.Update, KindNetworkPolicy, "x", "p", bad, good); r.Allowed || !strings.Contains(r.Result.Message, "tier foo does not exist") {
		t.Errorf("an update to a bad spec: %+v, want refused", r.Result)
	}
	// Stored before the webhook: its labels, finalizers and deletion go on.
	if r := review(t, admissionv1.Update, KindClusterNetworkPolicy, "", "p",
		strings.Replace(bad, "name: p}", "name: p, labels: {a: b}, finalizers: [x]}", 1), bad); !r.Allowed {
		t.Errorf("an update of the metadata of a stored bad policy refused: %+v", r.Result)
	}
	if r := review(t, admissionv1.Create, KindClusterGroup, "", "g", `{metadata: {name: g}, spec: {childGroups: [nope]}}`, ""); r.Allowed ||
		r.Result.Message != `spec.childGroups[0]: Invalid value: "nope": ClusterGroup nope does not exist: create it first` {
		t.Errorf("a ClusterGroup with a child that does not exist: %+v, want refused", r.Result)
	}
	if r := review(t, admissionv1.Create, "Tier", "", "t", `{metadata: {name: t}, spec: {priority: 7}}`, ""); !r.Allowed {
		t.Errorf("a Tier (the CEL policies' business) refused: %+v", r.Result)
	}
	if r := review(t, admissionv1.Delete, KindClusterGroup, "", "web", "", `{metadata: {name: web}, spec: {}}`); !r.Allowed {
		t.Errorf("a delete refused: %+v", r.Result)
	}
	// A tier a namespaced policy names is not deleted (the CEL policy
	// covers ClusterNetworkPolicies only); one nobody names is.
	f.policy(t, KindNetworkPolicy, "x", "in-mine", `{tier: mine, priority: 1, appliedTo: [{podSelector: {}}]}`)
	if r := review(t, admissionv1.Delete, KindTier, "", "mine", "", `{metadata: {name: mine}, spec: {priority: 120}}`); r.Allowed || r.Result.Code != 403 ||
		r.Result.Message != "metadata.name: Forbidden: tier mine is in use by NetworkPolicy x/in-mine: delete the policy or move it to another tier first" {
		t.Errorf("deleting a tier a namespaced policy names: %+v, want refused 403", r.Result)
	}
	if r := review(t, admissionv1.Delete, KindTier, "", "other", "", `{metadata: {name: other}, spec: {priority: 121}}`); !r.Allowed {
		t.Errorf("deleting a tier nobody names: %+v", r.Result)
	}
	f.gone = map[string]bool{"NetworkPolicy/x/in-mine": true}
	if r := review(t, admissionv1.Delete, KindTier, "", "mine", "", `{metadata: {name: mine}, spec: {priority: 120}}`); !r.Allowed {
		t.Errorf("deleting a tier whose namespaced policy is gone (still cached): %+v", r.Result)
	}
	f.synced = false
	if r := review(t, admissionv1.Create, KindClusterNetworkPolicy, "", "p", good, ""); r.Allowed || r.Result.Code != 503 ||
		r.Result.Message != "not synced (fake)" {
		t.Errorf("a create before the lookups are synced: %+v, want refused 503", r.Result)
	}
	if resp, err := http.Get(srv.URL + Path); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %v %v, want 405", resp.Status, err)
	}
}

// TestRefusalsConfirmed: a refusal resting on the cache is judged again
// with the cluster as it is now (Lookup.Confirming): a tier or ClusterGroup
// created a moment ago, or a group changed a moment ago, does not refuse
// a policy the cluster admits; what the cluster refuses too is refused.
func TestRefusalsConfirmed(t *testing.T) {
	cache := newFake(t)
	cluster := newFake(t)
	cluster.tiers = append(cluster.tiers, tiers.Tier{Name: "just-made", Priority: 121})
	cluster.group(t, "new", `podSelector: {matchLabels: {app: new}}`)
	cache.group(t, "was-blocks", `ipBlocks: [{cidr: 10.0.0.0/8}]`)
	cluster.group(t, "was-blocks", `podSelector: {matchLabels: {app: b}}`)
	review := func(obj string) *admissionv1.AdmissionResponse {
		t.Helper()
		j, err := yaml.YAMLToJSON([]byte(obj))
		if err != nil {
			t.Fatal(err)
		}
		return Review(&admissionv1.AdmissionRequest{
			UID: "u-2", Kind: metav1.GroupVersionKind{Group: "crd.seine.io", Version: "v1beta1", Kind: KindClusterNetworkPolicy},
			Name: "p", Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: j},
		}, cache)
	}
	for _, c := range []struct {
		what, obj, refusal string
	}{
		{"a tier created a moment ago", `{spec: {tier: just-made, priority: 1, appliedTo: [{podSelector: {}}]}}`,
			`spec.tier: Invalid value: "just-made": tier just-made does not exist`},
		{"a group created a moment ago", `{spec: {priority: 1, appliedTo: [{group: new}]}}`,
			`spec.appliedTo[0].group: Invalid value: "new": ClusterGroup new does not exist: create it first`},
		{"a group whose ipBlocks went a moment ago", `{spec: {priority: 1, appliedTo: [{group: was-blocks}]}}`,
			`spec.appliedTo[0].group: Invalid value: "was-blocks": ClusterGroup was-blocks holds ipBlocks`},
	} {
		cache.cluster = nil // the cache is all there is: refused
		if r := review(c.obj); r.Allowed || !strings.HasPrefix(r.Result.Message, c.refusal) {
			t.Errorf("%s, from the cache alone: %+v, want refused: %s", c.what, r.Result, c.refusal)
		}
		cache.cluster = cluster
		if r := review(c.obj); !r.Allowed {
			t.Errorf("%s: refused (%s), want admitted: the cluster holds it", c.what, r.Result.Message)
		}
	}
	if r := review(`{spec: {tier: never-made, priority: 1, appliedTo: [{group: was-blocks}]}}`); r.Allowed ||
		!strings.HasPrefix(r.Result.Message, `spec.tier: Invalid value: "never-made": tier never-made does not exist: create it or use one of emergency, securityops, mine, just-made, networkops, platform, application, baseline`) {
		t.Errorf("a tier the cluster does not hold either: %+v, want refused naming the cluster's tiers", r.Result)
	}
}
