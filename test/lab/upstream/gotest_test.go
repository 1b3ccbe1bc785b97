package upstream

import (
	"strings"
	"testing"
	"time"
)

// The shape of `go test -json -v` output of the network-policy-api suite:
// a setup log on the root, conformance tests with subtests, one test
// skipped by the selection, one without subtests, one failed subtest, and
// one subtest the run was stopped in.
const goTestJSON = `go: downloading something
{"Action":"start","Package":"p"}
{"Action":"run","Test":"TestConformance"}
{"Action":"output","Test":"TestConformance","Output":"    suite.go:125: Test Setup: Applying base manifests\n"}
{"Action":"run","Test":"TestConformance/CNPAdminTierIngressSCTP"}
{"Action":"output","Test":"TestConformance/CNPAdminTierIngressSCTP","Output":"    conformance_test.go:80: skipped by the runner's selection (selection.txt)\n"}
{"Action":"skip","Test":"TestConformance/CNPAdminTierIngressSCTP","Elapsed":0}
{"Action":"run","Test":"TestConformance/CNPAdminTierIngressTCP"}
{"Action":"run","Test":"TestConformance/CNPAdminTierIngressTCP/Should_support_an_'allow-ingress'_policy"}
{"Action":"pass","Test":"TestConformance/CNPAdminTierIngressTCP/Should_support_an_'allow-ingress'_policy","Elapsed":2.5}
{"Action":"run","Test":"TestConformance/CNPAdminTierIngressTCP/Should_support_a_'deny-ingress'_policy"}
{"Action":"output","Test":"TestConformance/CNPAdminTierIngressTCP/Should_support_a_'deny-ingress'_policy","Output":"    helper.go:102: FAILED Command was [/agnhost connect]\n"}
{"Action":"output","Test":"TestConformance/CNPAdminTierIngressTCP/Should_support_a_'deny-ingress'_policy","Output":"    helper.go:103: Expected connection to fail from a/b to 10.0.0.1, but instead it successfully connected.\n"}
{"Action":"fail","Test":"TestConformance/CNPAdminTierIngressTCP/Should_support_a_'deny-ingress'_policy","Elapsed":11.25}
{"Action":"fail","Test":"TestConformance/CNPAdminTierIngressTCP","Elapsed":13.75}
{"Action":"run","Test":"TestConformance/CNPAdminTierEgressNodePeers"}
{"Action":"run","Test":"TestConformance/CNPAdminTierEgressNodePeers/Should_deny_nodes"}
{"Action":"output","Test":"TestConformance/CNPAdminTierEgressNodePeers/Should_deny_nodes","Output":"    helper.go:103: Expected connection to succeed (an attempt before the policy was in place)\n"}
{"Action":"output","Test":"TestConformance/CNPAdminTierEgressNodePeers/Should_deny_nodes","Output":"    helper.go:103: Expected connection to fail\n"}
{"Action":"fail","Test":"TestConformance/CNPAdminTierEgressNodePeers/Should_deny_nodes","Elapsed":10}
{"Action":"fail","Test":"TestConformance/CNPAdminTierEgressNodePeers","Elapsed":10}
{"Action":"run","Test":"TestConformance/CNPAdminTierPriorityField"}
{"Action":"pass","Test":"TestConformance/CNPAdminTierPriorityField","Elapsed":4}
{"Action":"run","Test":"TestConformance/CNPBaselineTierGress"}
{"Action":"run","Test":"TestConformance/CNPBaselineTierGress/Should_support_a_'gress'_policy"}
{"Action":"output","Test":"TestConformance/CNPBaselineTierGress/Should_support_a_'gress'_policy","Output":"    helper.go:70: poking\n"}
{"Action":"fail","Test":"TestConformance","Elapsed":120}
`

func TestGoTestResults(t *testing.T) {
	sel, err := ParseSelection(strings.NewReader(`focus .

# The kernel has no SCTP.
skip SCTP

# Node peers are not implemented.
known NodePeers
`))
	if err != nil {
		t.Fatal(err)
	}
	res, err := GoTestResults(strings.NewReader(goTestJSON), "TestConformance", sel)
	if err != nil {
		t.Fatal(err)
	}
	want := []Result{
		{Text: "CNPAdminTierEgressNodePeers: Should deny nodes", State: "failed", Time: 10 * time.Second,
			Why: "Node peers are not implemented. — Expected connection to fail"},
		{Text: "CNPAdminTierIngressSCTP", State: "skipped", Why: "The kernel has no SCTP."},
		{Text: "CNPAdminTierIngressTCP: Should support a 'deny-ingress' policy", State: "failed", Time: 11250 * time.Millisecond,
			Why: "Expected connection to fail from a/b to 10.0.0.1, but instead it successfully connected."},
		{Text: "CNPAdminTierIngressTCP: Should support an 'allow-ingress' policy", State: "passed", Time: 2500 * time.Millisecond},
		{Text: "CNPAdminTierPriorityField", State: "passed", Time: 4 * time.Second},
		{Text: "CNPBaselineTierGress: Should support a 'gress' policy", State: "interrupted"},
	}
	if len(res) != len(want) {
		t.Fatalf("got %d results, want %d:\n%+v", len(res), len(want), res)
	}
	for i := range want {
		if res[i] != want[i] {
			t.Errorf("result %d:\n got %+v\nwant %+v", i, res[i], want[i])
		}
	}
	if s := Summary(res); s != "6 selected: 2 passed, 3 failed, 1 skipped; 28s of spec time" {
		t.Errorf("summary %q", s)
	}
}

// A failed setup (the base pods never Ready) is a row of its own.
func TestGoTestResultsSetupFailed(t *testing.T) {
	in := `{"Action":"run","Test":"TestConformance"}
{"Action":"output","Test":"TestConformance","Output":"    helper.go:142: \n        \tError Trace:\thelper.go:142\n"}
{"Action":"output","Test":"TestConformance","Output":"        \tError:      \tReceived unexpected error: context deadline exceeded\n"}
{"Action":"fail","Test":"TestConformance","Elapsed":300}
`
	sel, _ := ParseSelection(strings.NewReader("focus .\n"))
	res, err := GoTestResults(strings.NewReader(in), "TestConformance", sel)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].Text != "TestConformance (the suite's setup)" || res[0].State != "failed" || !strings.Contains(res[0].Why, "Error") {
		t.Fatalf("got %+v", res)
	}
	if _, err := GoTestResults(strings.NewReader("go: build failed\n"), "TestConformance", sel); err == nil {
		t.Error("output without any event of the test: no error")
	}
}
