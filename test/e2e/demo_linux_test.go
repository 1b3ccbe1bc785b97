package e2e

import (
	"bytes"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seine-cni/seine/test/lab"
)

// TestDemo runs `lab demo`, the main job `make lab` shows, on a lab running
// Seine: every pod reaches every other one over TCP and UDP; then the
// demo's NetworkPolicy is reported realized by seine-controller, enforced
// (TCP answers, UDP is dropped, not refused) and removed again.
func TestDemo(t *testing.T) {
	e := upLab(t, "encap", "geneve")
	var out bytes.Buffer
	err := lab.Demo(e.ctx, e.c, &out, 6)
	t.Logf("lab demo:\n%s", out.String())
	if err != nil {
		t.Fatalf("demo: %v", err)
	}
	for _, want := range []string{
		"all 6 pods reach each other over TCP and UDP",
		"default/lab-demo-tcp-only",
		"Realized",
		"the policy is enforced: TCP answers, UDP is dropped",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	// The policy and the label are gone, so the demo can run again.
	if _, err := e.cs.NetworkingV1().NetworkPolicies("default").Get(e.ctx, "lab-demo-tcp-only", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the demo policy is still there after the demo (get: %v)", err)
	}
	pods, err := e.cs.CoreV1().Pods("default").List(e.ctx, metav1.ListOptions{LabelSelector: "seine.io/demo-role"})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 0 {
		t.Errorf("%d pods keep the demo's server label", len(pods.Items))
	}
	// The demo's traffic and policy are what the metrics show.
	t.Run("prometheus", func(t *testing.T) { checkPrometheus(t, e) })
}
