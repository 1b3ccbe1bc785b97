package ci

import (
	"fmt"
	"strings"
	"testing"
)

// recorder is a testing.TB that remembers whether it was skipped or failed
// instead of stopping the goroutine.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper()                           {}
func (r *recorder) Skipf(format string, args ...any)  { r.skipped = sprintf(format, args...) }
func (r *recorder) Fatalf(format string, args ...any) { r.failed = sprintf(format, args...) }

func TestSkipfFailsUnderCI(t *testing.T) {
	for _, tc := range []struct {
		env      string
		wantFail bool
	}{
		{"", false}, {"false", false}, {"0", false},
		{"true", true}, {"1", true}, {"yes", true},
	} {
		t.Setenv("CI", tc.env)
		r := &recorder{TB: t}
		Skipf(r, "needs %s", "a thing")
		if tc.wantFail {
			if r.failed == "" || r.skipped != "" || !strings.Contains(r.failed, "needs a thing") || !strings.Contains(r.failed, "CI="+tc.env) {
				t.Errorf("CI=%q: failed %q, skipped %q; want a failure naming the reason and CI", tc.env, r.failed, r.skipped)
			}
		} else if r.skipped != "needs a thing" || r.failed != "" {
			t.Errorf("CI=%q: skipped %q, failed %q; want a skip with the reason", tc.env, r.skipped, r.failed)
		}
	}
}

func TestRequireCommands(t *testing.T) {
	t.Setenv("CI", "")
	r := &recorder{TB: t}
	RequireCommands(r, "go", "seine-no-such-command-1", "seine-no-such-command-2")
	if want := "seine-no-such-command-1, seine-no-such-command-2 not found in PATH"; !strings.Contains(r.skipped, want) {
		t.Errorf("skipped %q, want it to name both missing commands (%q)", r.skipped, want)
	}
	r = &recorder{TB: t}
	RequireCommands(r, "go")
	if r.skipped != "" || r.failed != "" {
		t.Errorf("go is in PATH, yet skipped %q failed %q", r.skipped, r.failed)
	}
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }
