package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/spf13/cobra"
)

// fakeAPIServer answers seinectl get as a kube-apiserver would, for
// SeineAgentInfos (cluster-scoped) and NetworkPolicyStats (namespaced):
// a table when the request asks for one, the objects otherwise, a 404
// Status for a name it does not have. It records what it was asked.
type fakeAPIServer struct {
	mu       sync.Mutex
	requests []string
}

var agentInfos = map[string]map[string]any{
	"node-1": {"apiVersion": "crd.seine.io/v1beta1", "kind": "SeineAgentInfo",
		"metadata": map[string]any{"name": "node-1"}, "status": map[string]any{"version": "v1.2.3", "localPods": 4}},
	"node-2": {"apiVersion": "crd.seine.io/v1beta1", "kind": "SeineAgentInfo",
		"metadata": map[string]any{"name": "node-2"}, "status": map[string]any{"version": "v1.2.3", "localPods": 7}},
}

func agentInfoRow(name string) map[string]any {
	o := agentInfos[name]
	return map[string]any{"cells": []any{name, o["status"].(map[string]any)["version"], o["status"].(map[string]any)["localPods"], "br-int"},
		"object": map[string]any{"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}}
}

var agentInfoColumns = []any{
	map[string]any{"name": "Name", "type": "string", "format": "name"},
	map[string]any{"name": "Version", "type": "string"},
	map[string]any{"name": "Pods", "type": "integer"},
	map[string]any{"name": "Bridge", "type": "string", "priority": 1},
}

func (f *fakeAPIServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	table := strings.Contains(r.Header.Get("Accept"), "as=Table")
	f.mu.Lock()
	f.requests = append(f.requests, r.URL.Path+map[bool]string{true: " table", false: ""}[table])
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	reply := func(v any) { _ = json.NewEncoder(w).Encode(v) }
	const infos = "/apis/crd.seine.io/v1beta1/seineagentinfos"
	switch p := r.URL.Path; {
	case p == "/version":
		reply(map[string]any{"gitVersion": "v1.37.2", "major": "1", "minor": "37"})
	case p == infos && table:
		reply(map[string]any{"kind": "Table", "apiVersion": "meta.k8s.io/v1", "columnDefinitions": agentInfoColumns,
			"rows": []any{agentInfoRow("node-1"), agentInfoRow("node-2")}})
	case p == infos:
		reply(map[string]any{"kind": "SeineAgentInfoList", "apiVersion": "crd.seine.io/v1beta1", "metadata": map[string]any{},
			"items": []any{agentInfos["node-1"], agentInfos["node-2"]}})
	case strings.HasPrefix(p, infos+"/"):
		name := strings.TrimPrefix(p, infos+"/")
		o, ok := agentInfos[name]
		switch {
		case !ok:
			w.WriteHeader(http.StatusNotFound)
			reply(map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
				"message": `seineagentinfos.crd.seine.io "` + name + `" not found`,
				"details": map[string]any{"name": name, "group": "crd.seine.io", "kind": "seineagentinfos"}})
		case table:
			reply(map[string]any{"kind": "Table", "apiVersion": "meta.k8s.io/v1", "columnDefinitions": agentInfoColumns,
				"rows": []any{agentInfoRow(name)}})
		default:
			reply(o)
		}
	case strings.HasSuffix(p, "/networkpolicystats") && table:
		row := func(ns, name string) map[string]any {
			return map[string]any{"cells": []any{name, 3},
				"object": map[string]any{"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
					"metadata": map[string]any{"name": name, "namespace": ns}}}
		}
		rows := []any{row("shop", "allow-web")}
		if !strings.Contains(p, "/namespaces/") {
			rows = append(rows, row("prod", "deny-db"))
		}
		reply(map[string]any{"kind": "Table", "apiVersion": "meta.k8s.io/v1",
			"columnDefinitions": []any{map[string]any{"name": "Name", "type": "string", "format": "name"}, map[string]any{"name": "Sessions", "type": "integer"}},
			"rows":              rows})
	default:
		http.NotFound(w, r)
	}
}

// kubeconfigFor writes a kubeconfig pointing at url, with namespace shop
// as the context's. Not in t.TempDir(): under Wine its cleanup fails to
// delete files (test/windows/README.md), and the package runs there.
func kubeconfigFor(t *testing.T, url string) string {
	t.Helper()
	f, err := os.CreateTemp("", "seinectl-kubeconfig-")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	p := f.Name()
	t.Cleanup(func() { _ = os.Remove(p) })
	cfg := `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "` + url + `"}}]
users: [{name: u, user: {token: t0ken}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: shop}}]
current-context: x
`
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestGetCluster reads Seine's objects the way seinectl get does, from a
// server standing in for the kube-apiserver: the server's table (wide
// columns only with -o wide, a namespace column with -A), the objects as
// JSON, YAML, names, JSONPath and custom columns, a name it does not
// have reported after those it has (as kubectl does), and the namespace
// from -n or the context. The real kube-apiserver and controller answer
// the same commands in test/e2e (checkInventory).
func TestGetCluster(t *testing.T) {
	srv := &fakeAPIServer{}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	kc := kubeconfigFor(t, ts.URL)
	for _, tc := range []struct {
		name    string
		args    []string
		want    string
		wantErr string
		asked   string
	}{
		{"table", []string{"get", "agentinfo"}, `
NAME     VERSION   PODS
node-1   v1.2.3    4
node-2   v1.2.3    7
`, "", "/apis/crd.seine.io/v1beta1/seineagentinfos table"},
		{"wide", []string{"get", "agentinfos", "-o", "wide"}, `
NAME     VERSION   PODS   BRIDGE
node-1   v1.2.3    4      br-int
node-2   v1.2.3    7      br-int
`, "", ""},
		{"no headers", []string{"get", "agentinfo", "--no-headers"}, `
node-1   v1.2.3   4
node-2   v1.2.3   7
`, "", ""},
		{"names", []string{"get", "agentinfo", "-o", "name"}, `
seineagentinfo.crd.seine.io/node-1
seineagentinfo.crd.seine.io/node-2
`, "", "/apis/crd.seine.io/v1beta1/seineagentinfos"},
		{"jsonpath", []string{"get", "agentinfo", "node-2", "-o", "jsonpath={.status.localPods}"}, "\n7", "", "/apis/crd.seine.io/v1beta1/seineagentinfos/node-2"},
		{"custom columns", []string{"get", "agentinfo", "-o", "custom-columns=NODE:.metadata.name,PODS:.status.localPods,CIDRS:.status.podCIDRs"}, `
NODE     PODS   CIDRS
node-1   4      <none>
node-2   7      <none>
`, "", ""},
		{"yaml of one", []string{"get", "agentinfo", "node-1", "-o", "yaml"}, `
apiVersion: crd.seine.io/v1beta1
kind: SeineAgentInfo
metadata:
  name: node-1
status:
  localPods: 4
  version: v1.2.3
`, "", ""},
		{"found and missing", []string{"get", "agentinfo", "node-1", "node-9"}, `
NAME     VERSION   PODS
node-1   v1.2.3    4
`, `"node-9" not found`, ""},
		{"namespace from the context", []string{"get", "networkpolicystats"}, `
NAME        SESSIONS
allow-web   3
`, "", "/apis/stats.seine.io/v1alpha1/namespaces/shop/networkpolicystats table"},
		{"namespace flag", []string{"get", "networkpolicystats", "-n", "prod"}, "", "", "/apis/stats.seine.io/v1alpha1/namespaces/prod/networkpolicystats table"},
		{"all namespaces", []string{"get", "networkpolicystats", "-A"}, `
NAMESPACE   NAME        SESSIONS
shop        allow-web   3
prod        deny-db     3
`, "", "/apis/stats.seine.io/v1alpha1/networkpolicystats table"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv.mu.Lock()
			srv.requests = nil
			srv.mu.Unlock()
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), append(tc.args, "--kubeconfig", kc), &stdout, &stderr, nil)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("%v\n%s", err, stderr.String())
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("error %v, want one containing %q", err, tc.wantErr)
			}
			if tc.want != "" {
				if got, want := stdout.String(), strings.TrimPrefix(tc.want, "\n"); got != want {
					t.Errorf("got:\n%s\nwant:\n%s", got, want)
				}
			}
			if tc.asked != "" {
				srv.mu.Lock()
				asked := srv.requests
				srv.mu.Unlock()
				if len(asked) == 0 || asked[0] != tc.asked {
					t.Errorf("asked the server %q, want %q first", asked, tc.asked)
				}
			}
		})
	}
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"version", "--kubeconfig", kc}, &stdout, &stderr, nil); err != nil || !strings.Contains(stdout.String(), "server v1.37.2") {
		t.Errorf("version with a kubeconfig: %v\n%s", err, stdout.String())
	}
	stdout.Reset()
	if err := run(t.Context(), []string{"get", "agentinfo", "-o", "json", "--kubeconfig", kc}, &stdout, &stderr, nil); err != nil {
		t.Fatal(err)
	}
	var list struct {
		Kind  string
		Items []struct{ Metadata struct{ Name string } }
	}
	if err := json.Unmarshal(stdout.Bytes(), &list); err != nil || list.Kind != "List" || len(list.Items) != 2 || list.Items[1].Metadata.Name != "node-2" {
		t.Errorf("-o json: %v %+v\n%s", err, list, stdout.String())
	}
}

// TestGetClusterUnreachable: no server is a plain error (exit 1), not a
// usage error, and says where it tried.
func TestGetClusterUnreachable(t *testing.T) {
	ts := httptest.NewServer(http.NotFoundHandler())
	url := ts.URL
	ts.Close()
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"get", "agentinfo", "--kubeconfig", kubeconfigFor(t, url)}, &stdout, &stderr, nil)
	var ee *exitError
	if err == nil || errors.As(err, &ee) || !strings.Contains(err.Error(), strings.TrimPrefix(url, "http://")) {
		t.Errorf("error %v, want a plain error naming %s", err, url)
	}
}

// TestCommandLine: help lists every command, shell completion is there,
// and as kubectl-seine the help speaks of `kubectl seine`.
func TestCommandLine(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"--help"}, &stdout, &stderr, nil); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"version", "check", "node-prep", "node-cleanup", "bundle", "get", "traceflow", "completion", "--kubeconfig", "--context", "-n, --namespace"} {
		if !strings.Contains(stdout.String(), cmd) {
			t.Errorf("help does not list %q:\n%s", cmd, stdout.String())
		}
	}
	stdout.Reset()
	if err := run(t.Context(), []string{"completion", "bash"}, &stdout, &stderr, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "__start_seinectl") {
		t.Errorf("bash completion:\n%.300s", stdout.String())
	}
	// Completion of get's resources, as the shell asks for it.
	stdout.Reset()
	if err := run(t.Context(), []string{cobra.ShellCompRequestCmd, "get", ""}, &stdout, &stderr, nil); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"pods", "flows", "agentinfo", "controllerinfo", "networkpolicy", "networkpolicystats", "traceflow"} {
		if !strings.Contains(stdout.String(), r+"\n") {
			t.Errorf("get completes without %q:\n%s", r, stdout.String())
		}
	}
	c := &cli{stdout: &stdout, stderr: &stderr, kube: newKubeFlags(), prog: "kubectl-seine"}
	stdout.Reset()
	root := c.root()
	root.SetArgs([]string{"get", "--help"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "kubectl seine get RESOURCE") {
		t.Errorf("as kubectl-seine, get's help says:\n%s", stdout.String())
	}
}
