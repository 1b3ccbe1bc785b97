package traceflow

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	crd "github.com/seine-cni/seine/core/apis/crd/v1beta1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// TestClientConfigWritesBackToBack: 40 status writes in a row (what 20
// back-to-back traces cost a node) go out at once through a client made
// from ClientConfig; with client-go's default client-side limit they took
// 6 s (a burst of 10, then 5 a second), each waiting ~200 ms.
func TestClientConfigWritesBackToBack(t *testing.T) {
	var patches atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.Method != http.MethodPatch {
			http.Error(w, "not a patch", http.StatusMethodNotAllowed)
			return
		}
		patches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"apiVersion":"crd.seine.io/v1beta1","kind":"Traceflow","metadata":{"name":"t"}}`)
	}))
	defer srv.Close()
	dyn, err := dynamic.NewForConfig(ClientConfig(&rest.Config{Host: srv.URL}))
	if err != nil {
		t.Fatal(err)
	}
	const writes = 40
	start := time.Now()
	for range writes {
		st := crd.TraceflowStatus{Results: []crd.NodeResult{{Node: "node-a", FlowsInstalled: true}}}
		if err := applyStatus(context.Background(), dyn, "t", AgentManager("node-a"), &st); err != nil {
			t.Fatal(err)
		}
	}
	if took := time.Since(start); took > 2*time.Second || patches.Load() != writes {
		t.Errorf("%d status writes in a row took %s (%d reached the server), want well under 2 s", writes, took.Round(time.Millisecond), patches.Load())
	}
}
