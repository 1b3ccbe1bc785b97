// Package ci holds the one rule every privileged or tool-dependent test
// follows: when it cannot run here it skips with the precise reason, except
// under CI (CI=true, which .ci/run exports), where the machine is prepared
// by `make test` and a test that cannot run is a broken set-up, so it fails.
//
// Skips that are right even under CI (a kernel without SCTP, a Windows test
// binary asked to start Linux daemons) skip with testing.TB.Skip and are
// listed, each with its reason, in .ci/allowed-skips; `make test` fails on
// any other skip (see test/ci/testrun).
package ci

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Enabled reports whether the tests run under CI: CI is set to anything
// but "", "0" or "false".
func Enabled() bool {
	switch strings.ToLower(os.Getenv("CI")) {
	case "", "0", "false":
		return false
	}
	return true
}

// Skipf skips tb with the reason, or fails it under CI.
func Skipf(tb testing.TB, format string, args ...any) {
	tb.Helper()
	if Enabled() {
		tb.Fatalf("cannot run under CI (CI=%s): %s", os.Getenv("CI"), fmt.Sprintf(format, args...))
		return
	}
	tb.Skipf(format, args...)
}

// RequireRoot skips tb (fails it under CI) unless the process runs as
// root; why says what needs it.
func RequireRoot(tb testing.TB, why string) {
	tb.Helper()
	if euid := os.Geteuid(); euid != 0 {
		Skipf(tb, "%s needs root (running as euid %d)", why, euid)
	}
}

// RequireCommands skips tb (fails it under CI) unless every command is in
// PATH, naming all that are missing.
func RequireCommands(tb testing.TB, cmds ...string) {
	tb.Helper()
	var missing []string
	for _, c := range cmds {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		Skipf(tb, "%s not found in PATH (make deps installs them)", strings.Join(missing, ", "))
	}
}
