package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	certutil "k8s.io/client-go/util/cert"

	"github.com/seine-cni/seine/core/agent/policy"
	"github.com/seine-cni/seine/core/agent/policywatch"
	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
	crdv1 "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/core/client/clientset/versioned"
	cpinformers "github.com/seine-cni/seine/core/client/informers/externalversions"
	"github.com/seine-cni/seine/core/controller/apiserver"
	"github.com/seine-cni/seine/installer/kubernetes/apiext"
	"github.com/seine-cni/seine/test/lab"
	"github.com/seine-cni/seine/test/lab/labtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	labtest.RemoveBinaries()
	os.Exit(code)
}

// recorder is a policywatch.Syncer that keeps the last state, and a
// policywatch.Realizer that realizes every policy it is given (unless
// hold is set).
type recorder struct {
	mu    sync.Mutex
	state policy.State
	// guard, when set, must hold for every synced state; lost records
	// that it did not.
	guard func(policy.State) bool
	lost  bool

	realized map[string]policy.Realization
	hold     bool
	changed  chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{}, 1)} }

func (r *recorder) Sync(_ context.Context, s policy.State) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.state = s
	if r.guard != nil && !r.guard(s) {
		r.lost = true
	}
	if !r.hold {
		r.realizeLocked()
	}
	return nil
}

func (r *recorder) realizeLocked() {
	r.realized = map[string]policy.Realization{}
	for name, np := range r.state.NetworkPolicies {
		r.realized[name] = policy.Realization{Generation: np.Generation}
	}
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// setHold stops (true) or resumes (false) realizing what is synced.
func (r *recorder) setHold(hold bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hold = hold
	if !hold {
		r.realizeLocked()
	}
}

func (r *recorder) Realizations() map[string]policy.Realization {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.realized)
}

func (r *recorder) RealizationsChanged() <-chan struct{} { return r.changed }

// render describes the state's objects that come from policies of this
// test: policy name, its AppliedToGroups' and AddressGroups' member pods.
func (r *recorder) render() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, np := range r.state.NetworkPolicies {
		if np.SourceRef == nil || !strings.HasPrefix(np.SourceRef.Name, "h6-") {
			continue
		}
		var ats, ags []string
		for _, g := range np.AppliedToGroups {
			ats = append(ats, members(r.state.AppliedToGroups[g]))
		}
		for _, rule := range np.Rules {
			for _, g := range rule.From.AddressGroups {
				ags = append(ags, membersAG(r.state.AddressGroups[g]))
			}
		}
		out = append(out, np.SourceRef.Name+" to "+strings.Join(ats, ",")+" from "+strings.Join(ags, ","))
	}
	slices.Sort(out)
	return strings.Join(out, "; ")
}

func podNames(ms []cp.GroupMember) string {
	var s []string
	for _, m := range ms {
		s = append(s, m.Pod.Name)
	}
	slices.Sort(s)
	return "[" + strings.Join(s, " ") + "]"
}

func members(g *cp.AppliedToGroup) string {
	if g == nil {
		return "<missing>"
	}
	return podNames(g.Members)
}

func membersAG(g *cp.AddressGroup) string {
	if g == nil {
		return "<missing>"
	}
	return podNames(g.Members)
}

func waitFor(t *testing.T, what string, want string, got func() string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		g := got()
		if g == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s:\n got %q\nwant %q", what, g, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fakePod is a pod bound to a node without a kubelet, with its IP written
// into its status as a kubelet would.
func fakePod(t *testing.T, cs kubernetes.Interface, name, node, ip, app string) {
	t.Helper()
	ctx := context.Background()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{NodeName: node, AutomountServiceAccountToken: new(bool),
			Containers: []corev1.Container{{Name: "c", Image: "none"}}},
	}
	p, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
	if _, err := cs.CoreV1().Pods("default").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestControlPlaneAPI runs seine-controller in a lab (the lab starts it and
// registers the APIService) and checks, against the real kube-apiserver:
// span filtering by fieldSelector=nodeName, membership changes as patches,
// delegated authentication and authorization, and API aggregation.
func TestControlPlaneAPI(t *testing.T) {
	o := labtest.Options{Name: "h6", Nodes: 1, APIPort: 20443, EtcdPort: 20379}
	// SEINE_CONTROLLER_PORT_BASE moves the lab's ports (and names), so two
	// runs can share a machine.
	if b, err := strconv.Atoi(os.Getenv("SEINE_CONTROLLER_PORT_BASE")); err == nil && b > 0 {
		o.Name, o.APIPort, o.EtcdPort = fmt.Sprintf("h6p%d", b), b+443, b+379
	}
	c, cs := labtest.Up(t, o)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	// Two nodes without kubelets: their pods exist only in the API.
	for _, n := range []string{"node-x", "node-y"} {
		if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	fakePod(t, cs, "web-x", "node-x", "10.250.0.1", "h6-web")
	fakePod(t, cs, "cli-y", "node-y", "10.250.1.1", "h6-cli")
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "h6-allow"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "h6-web"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
				PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "h6-cli"}},
			}}}},
		},
	}
	if _, err := cs.NetworkingV1().NetworkPolicies("default").Create(ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Agents, with seine-agent's identity, through the kube-apiserver.
	agentCfg, err := c.RESTConfig("seine-agent")
	if err != nil {
		t.Fatal(err)
	}
	log := labtest.Logger(t)
	recs := map[string]*recorder{}
	watchers := map[string]*policywatch.Watcher{}
	for _, n := range []string{"node-x", "node-y"} {
		recs[n] = newRecorder()
		w, err := policywatch.New(agentCfg, n, recs[n], log, policywatch.Options{MaxBackoff: 2 * time.Second, Report: recs[n]})
		if err != nil {
			t.Fatal(err)
		}
		watchers[n] = w
		done := make(chan struct{})
		go func() { defer close(done); w.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}

	t.Run("span", func(t *testing.T) {
		waitFor(t, "node-x", "h6-allow to [web-x] from [cli-y]", recs["node-x"].render)
		// node-y holds a peer, not a target: it needs nothing.
		waitFor(t, "node-y", "", recs["node-y"].render)
	})

	t.Run("patches", func(t *testing.T) {
		client, err := policywatch.NewClient(agentCfg, "node-x")
		if err != nil {
			t.Fatal(err)
		}
		l, err := client.ListAddressGroups(ctx)
		if err != nil {
			t.Fatal(err)
		}
		w, err := client.Watch(ctx, policywatch.AddressGroups, l.ResourceVersion)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		fakePod(t, cs, "cli-y2", "node-y", "10.250.1.2", "h6-cli")
		var ev watch.Event
		select {
		case ev = <-w.ResultChan():
		case <-time.After(30 * time.Second):
			t.Fatal("no AddressGroup event after a new peer pod")
		}
		p, ok := ev.Object.(*cp.AddressGroupPatch)
		if ev.Type != watch.Modified || !ok {
			t.Fatalf("event %s %T, want MODIFIED *AddressGroupPatch", ev.Type, ev.Object)
		}
		if got := podNames(p.AddedMembers) + podNames(p.RemovedMembers); got != "[cli-y2][]" {
			t.Errorf("patch added+removed %s, want [cli-y2][]", got)
		}
		waitFor(t, "node-x after the patch", "h6-allow to [web-x] from [cli-y cli-y2]", recs["node-x"].render)

		// A target on node-y brings the whole policy to node-y.
		fakePod(t, cs, "web-y", "node-y", "10.250.1.3", "h6-web")
		waitFor(t, "node-y", "h6-allow to [web-x web-y] from [cli-y cli-y2]", recs["node-y"].render)
		waitFor(t, "node-x", "h6-allow to [web-x web-y] from [cli-y cli-y2]", recs["node-x"].render)
		if err := cs.CoreV1().Pods("default").Delete(ctx, "web-x", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "node-x after its last target left", "", recs["node-x"].render)
		waitFor(t, "node-y", "h6-allow to [web-y] from [cli-y cli-y2]", recs["node-y"].render)
	})

	t.Run("controller restart", func(t *testing.T) {
		// The agent keeps its state while the controller is away, and
		// lists and syncs everything, including what changed meanwhile,
		// once it is back.
		rec, w := recs["node-y"], watchers["node-y"]
		rec.mu.Lock()
		rec.guard = func(s policy.State) bool {
			for _, np := range s.NetworkPolicies {
				if np.SourceRef != nil && np.SourceRef.Name == "h6-allow" {
					return true
				}
			}
			return false
		}
		rec.mu.Unlock()
		sessions := w.Relists()
		if err := c.StopController(); err != nil {
			t.Fatal(err)
		}
		fakePod(t, cs, "cli-y3", "node-y", "10.250.1.4", "h6-cli")
		if err := c.StartController(ctx); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "node-y after the restart", "h6-allow to [web-y] from [cli-y cli-y2 cli-y3]", rec.render)
		if w.Relists() == sessions {
			t.Error("the watcher did not list again after the controller restarted")
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if rec.lost {
			t.Error("a state without the policy was synced while the controller restarted")
		}
		rec.guard = nil
	})

	t.Run("status", func(t *testing.T) { testStatus(t, c, cs, agentCfg, recs["node-y"]) })
	t.Run("node-bound reports", func(t *testing.T) { testNodeBoundReports(ctx, t, c, cs) })
	t.Run("departed node", func(t *testing.T) { testDepartedNode(ctx, t, c, cs, agentCfg) })

	t.Run("delegation", func(t *testing.T) {
		ca, err := os.ReadFile(c.PKIDir() + "/ca.crt")
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(ca)
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		get := func(base, token string) (int, string) {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/apis/controlplane.seine.io/v1beta1/networkpolicies?fieldSelector=nodeName%3Dnode-y", nil)
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		nodeCfg, err := c.RESTConfig("node-1")
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name, base, token string
			code              int
			body              string
		}{
			{"agent token, directly", c.ControllerURL(), agentCfg.BearerToken, http.StatusOK, "h6-allow"},
			{"agent token, aggregated", c.APIServerURL(), agentCfg.BearerToken, http.StatusOK, "h6-allow"},
			{"no token, directly", c.ControllerURL(), "", http.StatusForbidden, `User \"system:anonymous\" cannot list resource \"networkpolicies\"`},
			{"bad token, directly", c.ControllerURL(), "not-a-token", http.StatusUnauthorized, "Unauthorized"},
			{"node identity without RBAC, directly", c.ControllerURL(), nodeCfg.BearerToken, http.StatusForbidden, `User \"system:node:node-1\" cannot list`},
			{"no token, aggregated", c.APIServerURL(), "", http.StatusForbidden, `User \"system:anonymous\" cannot list`},
		} {
			code, body := get(tc.base, tc.token)
			if code != tc.code || !strings.Contains(body, tc.body) {
				t.Errorf("%s: %d %s\nwant %d and %q", tc.name, code, trim(body), tc.code, tc.body)
			}
		}
	})

	t.Run("generated informers", func(t *testing.T) {
		// Informers of the generated client watch without a node selector
		// and get whole objects, membership changes included (only
		// node-scoped watches get patches).
		adminCfg := adminConfig(t, c)
		cpcs, err := versioned.NewForConfig(adminCfg)
		if err != nil {
			t.Fatal(err)
		}
		ictx, icancel := context.WithCancel(ctx)
		f := cpinformers.NewSharedInformerFactory(cpcs, 0)
		defer func() { icancel(); f.Shutdown() }()
		nps := f.Controlplane().V1beta1().NetworkPolicies()
		ags := f.Controlplane().V1beta1().AddressGroups()
		nps.Informer()
		ags.Informer()
		f.Start(ictx.Done())
		for typ, ok := range f.WaitForCacheSync(ictx.Done()) {
			if !ok {
				t.Fatalf("informer of %v did not sync", typ)
			}
		}
		all, err := nps.Lister().List(labels.Everything())
		if err != nil {
			t.Fatal(err)
		}
		var ag string
		for _, np := range all {
			if np.SourceRef != nil && np.SourceRef.Name == "h6-allow" && len(np.Rules) == 1 && len(np.Rules[0].From.AddressGroups) == 1 {
				ag = np.Rules[0].From.AddressGroups[0]
			}
		}
		if ag == "" {
			t.Fatalf("no policy h6-allow with one peer group among %d policies", len(all))
		}
		fakePod(t, cs, "cli-inf", "node-y", "10.250.1.9", "h6-cli")
		waitFor(t, "the informer's AddressGroup", "true", func() string {
			g, err := ags.Lister().Get(ag)
			if err != nil {
				return err.Error()
			}
			return strconv.FormatBool(strings.Contains(podNames(g.Members), "cli-inf"))
		})
	})

	t.Run("kubectl", func(t *testing.T) {
		kubectl := labtest.Kubectl(t) // the lab's release, as bin/kubectl
		for _, args := range [][]string{
			{"get", "networkpolicies.controlplane.seine.io"},
			{"get", "appliedtogroups.controlplane.seine.io", "-o", "yaml"},
			{"get", "networkpolicies.controlplane.seine.io", "--field-selector", "nodeName=node-y", "-o", "yaml"},
		} {
			out, err := exec.CommandContext(ctx, kubectl, append([]string{"--kubeconfig", c.AdminKubeconfig()}, args...)...).CombinedOutput()
			if err != nil {
				t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			t.Logf("kubectl %s:\n%s", strings.Join(args, " "), trim(string(out)))
			want := "h6-allow"
			if args[1] == "appliedtogroups.controlplane.seine.io" {
				want = "web-y"
			} else if len(args) == 2 {
				want = "NAME"
			}
			if !strings.Contains(string(out), want) {
				t.Errorf("kubectl %s: no %q in output", strings.Join(args, " "), want)
			}
		}
	})

	t.Run("admission webhook", func(t *testing.T) { testAdmissionWebhook(ctx, t, c) })

	// Last: it leaves the controller running as seine.yml runs it.
	t.Run("self-signed certificate", func(t *testing.T) { testSelfSigned(ctx, t, c, cs, recs["node-y"]) })
}

// testSelfSigned runs seine-controller as seine.yml does, without a
// certificate, against an APIService without a caBundle: the controller
// signs its serving certificate for the Service's name and publishes the
// CA, after which the aggregator (which verifies it) serves the API again
// and the agents' watches carry on.
func testSelfSigned(ctx context.Context, t *testing.T, c *lab.Config, cs kubernetes.Interface, rec *recorder) {
	rc := adminConfig(t, c)
	dc, err := dynamic.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	apisvc := dc.Resource(apiserver.APIServiceGVR)
	labCA, err := os.ReadFile(c.PKIDir() + "/ca.crt")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.StopController(); err != nil {
		t.Fatal(err)
	}
	// The APIService and the admission webhook as seine.yml creates them:
	// no caBundle.
	if _, err := apisvc.Patch(ctx, lab.APIServiceName, types.MergePatchType, []byte(`{"spec":{"caBundle":null}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := dc.Resource(apiserver.ValidatingWebhookConfigurationGVR).Patch(ctx, apiext.WebhookConfigurationName, types.JSONPatchType,
		[]byte(`[{"op":"remove","path":"/webhooks/0/clientConfig/caBundle"}]`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.StartControllerSelfSigned(ctx); err != nil {
		t.Fatal(err)
	}
	var bundle string
	waitFor(t, "the controller's CA published and the APIService available", "published, Available", func() string {
		as, err := apisvc.Get(ctx, lab.APIServiceName, metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		bundle, _, _ = unstructured.NestedString(as.Object, "spec", "caBundle")
		state := "not published"
		if b, err := base64.StdEncoding.DecodeString(bundle); err == nil && len(b) > 0 && !bytes.Equal(b, labCA) {
			state = "published"
		}
		conds, _, _ := unstructured.NestedSlice(as.Object, "status", "conditions")
		for _, cd := range conds {
			if m, _ := cd.(map[string]any); m["type"] == "Available" {
				if m["status"] == "True" {
					return state + ", Available"
				}
				return fmt.Sprintf("%s, %v: %v", state, m["reason"], m["message"])
			}
		}
		return state + ", no Available condition"
	})
	// The published CA is the issuer of what the controller serves: the
	// aggregator verified it against <service>.<namespace>.svc.
	ca, _ := base64.StdEncoding.DecodeString(bundle)
	certs, err := certutil.ParseCertsPEM(ca)
	if err != nil || len(certs) != 1 || !certs[0].IsCA {
		t.Errorf("caBundle holds %d certificates (%v), want the controller's CA", len(certs), err)
	}
	// The admission webhook's caBundle too: the kube-apiserver verifies
	// the new certificate when it calls it.
	vwcs := dc.Resource(apiserver.ValidatingWebhookConfigurationGVR)
	waitFor(t, "the controller's CA published to the admission webhook, and the webhook answering", "published, refused by the webhook", func() string {
		vwc, err := vwcs.Get(ctx, apiext.WebhookConfigurationName, metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		hooks, _, _ := unstructured.NestedSlice(vwc.Object, "webhooks")
		if len(hooks) != 1 {
			return fmt.Sprintf("%d webhooks", len(hooks))
		}
		if b, _, _ := unstructured.NestedString(hooks[0].(map[string]any), "clientConfig", "caBundle"); b != bundle {
			return "caBundle not the APIService's"
		}
		bad := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "crd.seine.io/v1beta1", "kind": "ClusterNetworkPolicy", "metadata": map[string]any{"name": "h6-self-signed"},
			"spec": map[string]any{"tier": "h6-nope", "priority": int64(1), "appliedTo": []any{map[string]any{"podSelector": map[string]any{}}}},
		}}
		_, err = dc.Resource(crdv1.ClusterNetworkPoliciesResource).Create(ctx, bad, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err == nil || !strings.Contains(err.Error(), "tier h6-nope does not exist") {
			return fmt.Sprintf("published, the dry run create: %v", err)
		}
		return "published, refused by the webhook"
	})
	// Through the aggregator, an agent's watch sees a change made now.
	fakePod(t, cs, "cli-y9", "node-y", "10.250.1.9", "h6-cli")
	waitFor(t, "node-y through the self-signed controller", "true", func() string {
		return strconv.FormatBool(strings.Contains(rec.render(), "cli-y9"))
	})
}

// adminConfig is the lab's admin client configuration.
func adminConfig(t *testing.T, c *lab.Config) *rest.Config {
	t.Helper()
	rc, err := c.RESTConfig("admin")
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

func trim(s string) string {
	if len(s) > 600 {
		return s[:600] + "..."
	}
	return s
}
