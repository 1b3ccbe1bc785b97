package testrun

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestRunGoTestJSON runs go test -json on testdata/fixture (a module of its
// own: one test passes, one skips, one fails in a subtest, one package does
// not compile) and checks what a person gets to read and what is counted.
func TestRunGoTestJSON(t *testing.T) {
	cmd := exec.Command("go", "test", "-json", "-count=1", ".", "./broken")
	cmd.Dir = "testdata/fixture"
	var out strings.Builder
	res, err := Run("go", cmd, &out)
	if err == nil {
		t.Error("Run returned no error for a run with failures")
	}
	text := out.String()
	t.Logf("readable output:\n%s", text)
	for _, want := range []string{
		"undefined: undefinedFunction",           // the build error
		"FAIL\texample.com/fixture/broken",       // its package
		"fixture_test.go:17: the subtest failed", // the failed subtest's output
		"--- FAIL: TestFails/sub",
		"a line before the failure", // the failed parent's own output
		"printed by TestMain",       // a failed package's own output
		"FAIL\texample.com/fixture\t",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, unwanted := range []string{"passing output is not shown", `"Action"`, "the kernel has no SCTP"} {
		if strings.Contains(text, unwanted) {
			t.Errorf("output shows %q", unwanted)
		}
	}
	wantFailed := []string{"example.com/fixture TestFails", "example.com/fixture TestFails/sub", "example.com/fixture", "example.com/fixture/broken"}
	slices.Sort(wantFailed)
	slices.Sort(res.Failed)
	if !slices.Equal(res.Failed, wantFailed) {
		t.Errorf("failed %q, want %q", res.Failed, wantFailed)
	}
	if len(res.Skips) != 1 {
		t.Fatalf("skips %v, want TestSkips only", res.Skips)
	}
	if s := res.Skips[0]; s.Step != "go" || s.Package != "example.com/fixture" || s.Test != "TestSkips" || s.Reason != "fixture_test.go:13: the kernel has no SCTP" {
		t.Errorf("skip %+v", s)
	}
}

func TestFilterPassesOtherLinesAndCountsPackages(t *testing.T) {
	var out strings.Builder
	f := NewFilter("wine", &out)
	for _, l := range []string{
		"building the tests\n",
		`{"Action":"start","Package":"p"}` + "\n",
		`{"Action":"output","Package":"p","Output":"ok  \tp\t0.1s\n"}` + "\n",
		`{"Action":"pass","Package":"p"}` + "\n",
		`{"Action":"output","Package":"q","Test":"TestHang","Output":"=== RUN   TestHang\n"}`,
		"\n", `{"Action":"output","Package":"q","Test":"TestHang","Output":"still running\n"}`, // split writes
	} {
		f.Write([]byte(l))
	}
	res := f.Close()
	want := "building the tests\nok  \tp\t0.1s\n--- NEVER FINISHED: q TestHang\n=== RUN   TestHang\nstill running\n"
	if out.String() != want {
		t.Errorf("output\n%q\nwant\n%q", out.String(), want)
	}
	// The command died before q ended: TestHang failed.
	if res.Packages != 1 || !slices.Equal(res.Failed, []string{"q TestHang (never finished)"}) {
		t.Errorf("result %+v", res)
	}
}
