package pipeline

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// goldenRound is the round the golden files are rendered with.
const goldenRound Round = 1

func goldenPath(name string) string { return filepath.Join("testdata", name+".flows") }

// TestGolden compares the full flow set of each representative node with
// testdata/<scenario>.flows (regenerate with go test -run TestGolden -update).
func TestGolden(t *testing.T) {
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			checkGolden(t, sc.name, Text(buildOrFail(t, sc.state, goldenRound)))
		})
	}
}

// checkGolden compares got with testdata/<name>.flows, or writes it there
// with -update.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := goldenPath(name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("flows differ from %s (run with -update to accept):\n%s", path, lineDiff(string(want), got))
	}
}

// lineDiff lists the lines only in want (-) and only in got (+).
func lineDiff(want, got string) string {
	count := map[string]int{}
	for _, l := range strings.Split(want, "\n") {
		count[l]++
	}
	for _, l := range strings.Split(got, "\n") {
		count[l]--
	}
	var sb strings.Builder
	for _, l := range strings.Split(want, "\n") {
		if count[l] > 0 {
			sb.WriteString("- " + l + "\n")
			count[l]--
		}
	}
	for _, l := range strings.Split(got, "\n") {
		if count[l] < 0 {
			sb.WriteString("+ " + l + "\n")
			count[l]++
		}
	}
	return sb.String()
}
