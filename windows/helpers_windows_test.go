package windows

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/seine-cni/seine/ovs/appctl"
)

// testLogger sends the backend's logs to t.Logf.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var errNoVswitchd = errors.New("no ovs-vswitchd on the fake host")

func noAppctl(context.Context, string) (*appctl.Client, error) { return nil, errNoVswitchd }

// diff compares text line by line for a readable failure.
func diff(t *testing.T, what, got, want string) {
	t.Helper()
	got, want = strings.TrimSpace(got), strings.TrimSpace(want)
	if got != want {
		t.Errorf("%s:\n--- got ---\n%s\n--- want ---\n%s", what, got, want)
	}
}
