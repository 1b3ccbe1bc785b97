package traceflow

import (
	"context"
	"fmt"

	crd "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"github.com/seine-cni/seine/core/internal/served"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// Field managers of the server-side applies to a Traceflow's status.
const ControllerManager = "seine-controller"

// AgentManager is the field manager of node's agent: it owns its entry of
// status.results and nothing else.
func AgentManager(node string) string { return "seine-agent/" + node }

// applyStatus applies status (the fields manager owns, and only those) to
// the Traceflow name with server-side apply.
func applyStatus(ctx context.Context, dyn dynamic.Interface, name, manager string, status *crd.TraceflowStatus) error {
	st, err := runtime.DefaultUnstructuredConverter.ToUnstructured(status)
	if err != nil {
		return fmt.Errorf("traceflow %s status: %w", name, err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": crd.SchemeGroupVersion.String(), "kind": "Traceflow",
		"metadata": map[string]any{"name": name}, "status": st,
	}}
	_, err = dyn.Resource(crd.TraceflowsResource).ApplyStatus(ctx, name, u, metav1.ApplyOptions{FieldManager: manager, Force: true})
	if err != nil {
		return fmt.Errorf("apply traceflow %s status as %s: %w", name, manager, err)
	}
	return nil
}

// fromUnstructured converts an informer's object to a Traceflow.
func fromUnstructured(obj any) (*crd.Traceflow, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("traceflow informer gave %T", obj)
	}
	var tf crd.Traceflow
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &tf); err != nil {
		return nil, fmt.Errorf("traceflow %s: %w", u.GetName(), err)
	}
	return &tf, nil
}

// Served reports whether the cluster serves Traceflows (seine.yml installs
// the CustomResourceDefinition). Without it, agent and controller leave
// Traceflow off, saying so once, rather than retry a watch forever.
func Served(d discovery.DiscoveryInterface) (bool, error) {
	return served.Resource(d, crd.TraceflowsResource)
}

// ClientConfig is rc for the clients that write Traceflows' status (the
// agent's, the controller's): a trace costs its nodes and the controller a
// few writes each, and client-go's default client-side limit (5 requests a
// second after a burst of 10) held back-to-back traces ~200 ms per write
// (BenchmarkTraceflow: node-1's status writes 184 ms p50). The
// kube-apiserver's API Priority and Fairness still guards the server.
func ClientConfig(rc *rest.Config) *rest.Config {
	c := rest.CopyConfig(rc)
	c.QPS, c.Burst, c.RateLimiter = clientQPS, clientBurst, nil
	return c
}

// The Traceflow clients' client-side limit: 63 traces at once cost a node
// up to ~130 writes.
const (
	clientQPS   = 50
	clientBurst = 150
)
