package upstream

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A Ginkgo JSON report as e2e.test writes it with --ginkgo.json-report
// (fields Ginkgo v2 marshals; times in nanoseconds).
const report = `[{
  "SuiteDescription": "Kubernetes e2e suite",
  "SpecReports": [
    {"LeafNodeType": "SynchronizedBeforeSuite", "State": "passed", "RunTime": 2000000000},
    {"ContainerHierarchyTexts": ["[sig-network] Services"], "LeafNodeType": "It",
     "LeafNodeText": "should serve a basic endpoint from pods [Conformance]", "State": "passed", "RunTime": 12340000000},
    {"ContainerHierarchyTexts": ["[sig-network] Netpol", "NetworkPolicy between server and client"], "LeafNodeType": "It",
     "LeafNodeText": "should support allow-all policy [Feature:NetworkPolicy]", "State": "failed", "RunTime": 61000000000,
     "Failure": {"Message": "probes failed | x/a -> y/b\nmore detail"}},
    {"ContainerHierarchyTexts": ["[sig-network] Netpol", "NetworkPolicy between server and client using SCTP"], "LeafNodeType": "It",
     "LeafNodeText": "should enforce policy based on Ports [Feature:NetworkPolicy]", "State": "skipped"},
    {"ContainerHierarchyTexts": ["[sig-network] Services"], "LeafNodeType": "It",
     "LeafNodeText": "should serve multiport endpoints from pods [Conformance]", "State": "skipped", "RunTime": 1000000,
     "Failure": {"Message": "Requires at least 2 nodes (not 1)"}},
    {"ContainerHierarchyTexts": ["[sig-storage] Volumes"], "LeafNodeType": "It",
     "LeafNodeText": "should store data", "State": "skipped"},
    {"LeafNodeType": "SynchronizedAfterSuite", "State": "failed", "RunTime": 1000000000,
     "Failure": {"Message": "namespaces left behind"}}
  ]
}]`

func TestResultsAndTable(t *testing.T) {
	sel, err := ParseSelection(strings.NewReader(sample + "\n# Needs the hold of Seine's suite.\nknown allow-all\n"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Results(strings.NewReader(report), sel)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ text, state, why string }{
		{"SynchronizedAfterSuite", "failed", "namespaces left behind"},
		{"[sig-network] Netpol NetworkPolicy between server and client should support allow-all policy [Feature:NetworkPolicy]", "failed", "Needs the hold of Seine's suite. — probes failed | x/a -> y/b"},
		{"[sig-network] Netpol NetworkPolicy between server and client using SCTP should enforce policy based on Ports [Feature:NetworkPolicy]", "skipped", "No SCTP in this kernel."},
		{"[sig-network] Services should serve a basic endpoint from pods [Conformance]", "passed", ""},
		{"[sig-network] Services should serve multiport endpoints from pods [Conformance]", "skipped", "Requires at least 2 nodes (not 1)"},
	}
	if len(res) != len(want) {
		t.Fatalf("got %d results, want %d: %+v", len(res), len(want), res)
	}
	for i, w := range want {
		if res[i].Text != w.text || res[i].State != w.state || res[i].Why != w.why {
			t.Errorf("result %d = %q %s %q; want %q %s %q", i, res[i].Text, res[i].State, res[i].Why, w.text, w.state, w.why)
		}
	}
	if got, want := Summary(res), "5 selected: 1 passed, 2 failed, 2 skipped; 1m14s of spec time"; got != want {
		t.Errorf("Summary = %q, want %q", got, want)
	}
	var b strings.Builder
	if err := WriteTable(&b, res); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"| test | result | time | why |",
		`| [sig-network] Netpol NetworkPolicy between server and client should support allow-all policy [Feature:NetworkPolicy] | failed | 1m1s | Needs the hold of Seine's suite. — probes failed \| x/a -> y/b |`,
		"| [sig-network] Services should serve a basic endpoint from pods [Conformance] | passed | 12.3s |  |",
		"| [sig-network] Services should serve multiport endpoints from pods [Conformance] | skipped | — | Requires at least 2 nodes (not 1) |",
		"5 selected: 1 passed, 2 failed, 2 skipped; 1m14s of spec time",
	} {
		if !strings.Contains(b.String(), line+"\n") {
			t.Errorf("table lacks line %q:\n%s", line, b.String())
		}
	}
}

func TestResultsRefusesWhatIsNoReport(t *testing.T) {
	sel, _ := ParseSelection(strings.NewReader(sample))
	for _, text := range []string{"", "{}", "[]", "not json"} {
		if _, err := Results(strings.NewReader(text), sel); err == nil {
			t.Errorf("Results accepted %q", text)
		}
	}
}

func TestReplaceResultsKeepsTheRestOfTheFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "README.md")
	before := "# title\n\ntext\n\n" + ResultsBegin + "\n\nold table\n\n" + ResultsEnd + "\n\nmore text\n"
	if err := os.WriteFile(p, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ReplaceResults(p, "| new | table |\n\nsummary\n"); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	want := "# title\n\ntext\n\n" + ResultsBegin + "\n\n| new | table |\n\nsummary\n\n" + ResultsEnd + "\n\nmore text\n"
	if string(got) != want {
		t.Errorf("README after ReplaceResults:\n%s\nwant\n%s", got, want)
	}
	for _, text := range []string{"no markers\n", ResultsEnd + "\n" + ResultsBegin + "\n", ResultsBegin + " only\n"} {
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := ReplaceResults(p, "table"); err == nil {
			t.Errorf("ReplaceResults accepted %q", text)
		}
		if got, _ := os.ReadFile(p); string(got) != text {
			t.Errorf("a refused ReplaceResults changed the file: %q", got)
		}
	}
}
