package supportbundle

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/seine-cni/seine/core/bundle"
)

const (
	plantedToken = "PLANTED0token0in0a0configmap0xyz"
	plantedKey   = "PLANTEDprivateKEYmaterial00000000"
	secretValue  = "PLANTED-secret-object-value"
)

func node(name, ip string, labels map[string]string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}}}
}

// agentServer serves a part as an agent does (bundle.Handler), for the
// token "good" only.
func agentServer(t *testing.T, node string) *httptest.Server {
	h := bundle.Handler(func(since time.Time) []bundle.Source {
		return []bundle.Source{
			{Name: "agent/log.txt", Collect: func(_ context.Context, w io.Writer) error {
				_, err := io.WriteString(w, "level=INFO msg=hello node="+node+" since="+since.Format(time.RFC3339)+"\n")
				return err
			}},
			{Name: "ovs/flows.txt", Collect: func(_ context.Context, w io.Writer) error {
				_, err := io.WriteString(w, "table=0, priority=0 actions=drop\n")
				return err
			}},
			{Name: "host/diagnostics.txt", Collect: func(context.Context, io.Writer) error {
				return errors.New("no backend")
			}},
		}
	}, bundle.Options{})
	s := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != bundle.Path {
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("Authorization") != "Bearer good" {
			http.Error(w, "Forbidden: user \"x\" may not get /supportbundle", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func unpack(t *testing.T, b []byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	if err := bundle.Unpack(bytes.NewReader(b), func(name string, body []byte) error {
		out[name] = string(body)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCollect: three selected nodes, two answering and one whose agent
// hangs; a fourth node not selected. The bundle comes after
// the timeout, not later, with the answering node's part, the others
// reported, the cluster's objects and no secret.
func TestCollect(t *testing.T) {
	good := agentServer(t, "n1")
	other := agentServer(t, "n3")
	stall := make(chan struct{})
	hanging := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-stall:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(stall); hanging.Close() })
	controller := agentServer(t, "controller")

	sel := map[string]string{"bundle": "yes"}
	cs := fake.NewClientset(
		node("n1", "10.0.0.1", sel), node("n2", "10.0.0.2", sel), node("n3", "10.0.0.3", sel), node("n4", "10.0.0.4", nil),
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "seine-config", Namespace: "kube-system", Labels: map[string]string{"app": "seine"}},
			Data: map[string]string{"seine-agent.yaml": "nodeName: x\nkubeAPIToken: " + plantedToken + "\n",
				"kubeconfig": "users:\n- user:\n    client-key-data: " + base64.StdEncoding.EncodeToString([]byte("-----BEGIN RSA PRIVATE KEY-----\n"+plantedKey+"\n-----END RSA PRIVATE KEY-----\n")) + "\n"}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "seine-agent-abcde", Namespace: "kube-system", Labels: map[string]string{"app": "seine", "component": "seine-agent"}},
			Spec:   corev1.PodSpec{NodeName: "n1"},
			Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: "seine-agent", RestartCount: 2}}}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "seine-secret", Namespace: "kube-system", Labels: map[string]string{"app": "seine"}},
			Data: map[string][]byte{"token": []byte(secretValue)}},
	)
	cs.Fake.Resources = []*metav1.APIResourceList{{GroupVersion: "crd.seine.io/v1beta1", APIResources: []metav1.APIResource{
		{Name: "seineagentinfos", Kind: "SeineAgentInfo", Verbs: []string{"get", "list"}},
		{Name: "seineagentinfos/status", Kind: "SeineAgentInfo", Verbs: []string{"get"}},
		{Name: "traceflows", Kind: "Traceflow", Verbs: []string{"get", "list"}},
	}}}
	agentInfo := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "crd.seine.io/v1beta1", "kind": "SeineAgentInfo",
		"metadata": map[string]any{"name": "n2", "managedFields": []any{map[string]any{"manager": "x"}}}, "status": map[string]any{"ready": "False"}}}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		{Group: "crd.seine.io", Version: "v1beta1", Resource: "seineagentinfos"}: "SeineAgentInfoList",
		{Group: "crd.seine.io", Version: "v1beta1", Resource: "traceflows"}:      "TraceflowList",
		UpstreamClusterNetworkPolicies:                                           "ClusterNetworkPolicyList",
		apiServices:                                                              "APIServiceList",
		crds:                                                                     "CustomResourceDefinitionList",
	}, agentInfo,
		&unstructured.Unstructured{Object: map[string]any{"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
			"metadata": map[string]any{"name": "v1beta1.controlplane.seine.io"}, "spec": map[string]any{"group": "controlplane.seine.io"},
			"status": map[string]any{"conditions": []any{map[string]any{"type": "Available", "status": "True"}}}}},
		&unstructured.Unstructured{Object: map[string]any{"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
			"metadata": map[string]any{"name": "v1.apps"}, "spec": map[string]any{"group": "apps"}}},
		&unstructured.Unstructured{Object: map[string]any{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
			"metadata": map[string]any{"name": "traceflows.crd.seine.io"}, "spec": map[string]any{"group": "crd.seine.io",
				"versions": []any{map[string]any{"name": "v1beta1", "served": true, "storage": true, "schema": map[string]any{"openAPIV3Schema": "huge"}}}}}},
		&unstructured.Unstructured{Object: map[string]any{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
			"metadata": map[string]any{"name": "widgets.example.com"}, "spec": map[string]any{"group": "example.com"}}},
	)

	addrs := map[string]string{"n1": good.Listener.Addr().String(), "n2": hanging.Listener.Addr().String(), "n3": other.Listener.Addr().String()}
	var buf, progress bytes.Buffer
	start := time.Now()
	res, err := Collect(context.Background(), &buf, Options{
		Kube: cs, Dynamic: dyn, NodeSelector: "bundle=yes", Since: time.Hour, Token: "good",
		AgentAddress:      func(n *corev1.Node) (string, error) { return addrs[n.Name], nil },
		ControllerAddress: controller.Listener.Addr().String(),
		Timeout:           2 * time.Second, Progress: &progress,
	})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if took > 5*time.Second {
		t.Errorf("collection took %s with a 2s timeout per node", took)
	}
	if len(res.Nodes) != 3 {
		t.Fatalf("nodes: %+v, want n1-n3 (n4 is not selected)", res.Nodes)
	}
	if res.Nodes[0].Err != nil || res.Nodes[0].Bytes == 0 {
		t.Errorf("n1: %+v", res.Nodes[0])
	}
	if e := res.Nodes[1].Err; e == nil || !strings.Contains(e.Error(), "no answer within 2s") {
		t.Errorf("n2 (hangs): %v, want no answer within the timeout", e)
	}
	if e := res.Nodes[2].Err; e != nil {
		t.Errorf("n3 (answers the right token): %v", e)
	}
	files := unpack(t, buf.Bytes())
	for _, name := range []string{"summary.txt", "nodes/n1/summary.txt", "nodes/n1/agent/log.txt", "nodes/n1/ovs/flows.txt", "nodes/n2/ERROR.txt",
		"nodes/n2/agentinfo.yaml", "nodes/n1/agent-pod.log", "cluster/nodes.txt", "cluster/configmaps.yaml", "cluster/crd.seine.io/seineagentinfos.yaml",
		"cluster/crd.seine.io/traceflows.yaml", "cluster/policy.networking.k8s.io/clusternetworkpolicies.yaml", "controller/summary.txt", "controller/agent/log.txt"} {
		if _, ok := files[name]; !ok {
			t.Errorf("no %s in the bundle", name)
		}
	}
	for name := range files {
		if strings.HasPrefix(name, "nodes/n4/") || strings.Contains(name, "seinesecret") || strings.Contains(name, "secrets") {
			t.Errorf("%s should not be in the bundle", name)
		}
	}
	if s := files["nodes/n1/agent/log.txt"]; !strings.Contains(s, "node=n1") || strings.Contains(s, "since=0001") {
		t.Errorf("n1's log (with since): %q", s)
	}
	// n1's agent pod restarted: its log and the previous container's.
	if s := files["nodes/n1/agent-pod.log"]; !strings.Contains(s, "# kube-system/seine-agent-abcde, container seine-agent") ||
		!strings.Contains(s, "# the previous container (2 restarts)") || strings.Count(s, "fake logs") != 2 {
		t.Errorf("n1's agent pod log:\n%s", s)
	}
	if s := files["nodes/n2/agent-pod.log"]; !strings.Contains(s, "runs outside a pod") {
		t.Errorf("n2's agent pod log (no pod):\n%s", s)
	}
	if s := files["nodes/n2/ERROR.txt"]; !strings.Contains(s, "no answer within 2s") {
		t.Errorf("n2's error: %q", s)
	}
	if s := files["nodes/n2/agentinfo.yaml"]; !strings.Contains(s, "ready: \"False\"") || strings.Contains(s, "managedFields") {
		t.Errorf("n2's agent info: %q", s)
	}
	if s := files["summary.txt"]; !strings.Contains(s, "OK    node n1") || !strings.Contains(s, "failed in it: host/diagnostics.txt\n") || !strings.Contains(s, "FAIL  node n2") {
		t.Errorf("summary:\n%s", s)
	}
	if s := files["cluster/registration.yaml"]; !strings.Contains(s, "name: v1beta1.controlplane.seine.io") || !strings.Contains(s, "type: Available") ||
		!strings.Contains(s, "name: traceflows.crd.seine.io") || !strings.Contains(s, "storage: true") ||
		strings.Contains(s, "huge") || strings.Contains(s, "v1.apps") || strings.Contains(s, "widgets") {
		t.Errorf("registration:\n%s", s)
	}
	if !strings.Contains(files["cluster/configmaps.yaml"], "seine-config") {
		t.Errorf("configmaps: %q", files["cluster/configmaps.yaml"])
	}
	for name, body := range files {
		for _, s := range []string{plantedToken, plantedKey, secretValue, base64.StdEncoding.EncodeToString([]byte(secretValue))} {
			if strings.Contains(body, s) {
				t.Errorf("%s holds %q", name, s)
			}
		}
	}
	if !strings.Contains(progress.String(), "collected 3/3 nodes") {
		t.Errorf("progress: %q", progress.String())
	}

	// A token the agents refuse: every node reported, with the agent's
	// answer.
	// On a terminal the progress is one line rewritten in place.
	buf.Reset()
	progress.Reset()
	res, err = Collect(context.Background(), &buf, Options{Kube: cs, Dynamic: dyn, NodeSelector: "bundle=yes", Token: "wrong", Timeout: 2 * time.Second,
		Progress: &progress, ProgressInPlace: true,
		AgentAddress: func(n *corev1.Node) (string, error) { return addrs[n.Name], nil }, ControllerAddress: controller.Listener.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	if e := res.Nodes[0].Err; e == nil || !strings.Contains(e.Error(), "403 Forbidden") {
		t.Errorf("n1 with a wrong token: %v", e)
	}
	if p := progress.String(); !strings.HasPrefix(p, "\rcollecting: 0/3 nodes") || !strings.Contains(p, "\rcollecting: 3/3 nodes, last n") ||
		!strings.HasSuffix(p, "\n") || strings.Count(p, "\n") != 1 {
		t.Errorf("progress in place: %q", p)
	}
}

// TestCollectBounded: twenty nodes, four at a time, never more; each
// agent answers in 50 ms, so the whole takes about five rounds, not one
// nor twenty.
func TestCollectBounded(t *testing.T) {
	var (
		mu             sync.Mutex
		inFlight, most int
	)
	part := bundle.Handler(func(time.Time) []bundle.Source {
		return []bundle.Source{{Name: "agent/log.txt", Collect: func(_ context.Context, w io.Writer) error {
			_, err := io.WriteString(w, "msg=hello\n")
			return err
		}}}
	}, bundle.Options{})
	slow := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inFlight++
		most = max(most, inFlight)
		mu.Unlock()
		time.Sleep(50 * time.Millisecond)
		mu.Lock()
		inFlight--
		mu.Unlock()
		part.ServeHTTP(w, r)
	}))
	t.Cleanup(slow.Close)
	controller := httptest.NewTLSServer(part)
	t.Cleanup(controller.Close)
	var objs []runtime.Object
	for i := range 20 {
		objs = append(objs, node(fmt.Sprintf("n%02d", i), "10.0.0.1", nil))
	}
	cs := fake.NewClientset(objs...)
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		UpstreamClusterNetworkPolicies: "ClusterNetworkPolicyList", apiServices: "APIServiceList", crds: "CustomResourceDefinitionList",
	})
	var buf bytes.Buffer
	start := time.Now()
	res, err := Collect(context.Background(), &buf, Options{Kube: cs, Dynamic: dyn, Token: "good", Parallel: 4, Timeout: 10 * time.Second,
		AgentAddress:      func(*corev1.Node) (string, error) { return slow.Listener.Addr().String(), nil },
		ControllerAddress: controller.Listener.Addr().String()})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range res.Nodes {
		if n.Err != nil || n.Bytes == 0 {
			t.Errorf("%s: %d bytes, %v", n.Node, n.Bytes, n.Err)
		}
	}
	if len(res.Nodes) != 20 {
		t.Errorf("%d nodes, want 20", len(res.Nodes))
	}
	// Never more than the bound; more than one at once (exactly 4 on a
	// quiet machine, where every round overlaps whole).
	if most > 4 || most < 2 {
		t.Errorf("at most %d agents asked at once, want 2 to 4", most)
	}
	if took < 250*time.Millisecond {
		t.Errorf("20 nodes, 4 at a time, 50 ms each, took %s: not bounded", took)
	}
	t.Logf("20 nodes, 4 at a time: %s, at most %d at once", took.Round(time.Millisecond), most)
}
