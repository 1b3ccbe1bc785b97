package policywatch

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/seine-cni/seine/core/agent/policy"
	cp "github.com/seine-cni/seine/core/apis/controlplane/v1beta1"
)

// fakeRealizer is a policy controller's realizations, changed by the test.
type fakeRealizer struct {
	mu      sync.Mutex
	m       map[string]policy.Realization
	changed chan struct{}
}

func newFakeRealizer() *fakeRealizer {
	return &fakeRealizer{m: map[string]policy.Realization{}, changed: make(chan struct{}, 1)}
}

func (f *fakeRealizer) Realizations() map[string]policy.Realization {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.m)
}

func (f *fakeRealizer) RealizationsChanged() <-chan struct{} { return f.changed }

func (f *fakeRealizer) set(name string, gen int64, errMsg string) {
	f.mu.Lock()
	if gen == 0 {
		delete(f.m, name)
	} else {
		f.m[name] = policy.Realization{Generation: gen, Error: errMsg}
	}
	f.mu.Unlock()
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

// fakeController records the reports it receives; the first failures
// requests are answered 500.
type fakeController struct {
	mu       sync.Mutex
	failures int
	reports  []string // rendered
	bytes    []int
	attempts int
}

func (f *fakeController) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/apis/controlplane.seine.io/v1beta1/nodepolicystatuses" {
		http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusNotFound)
		return
	}
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attempts++
	if f.failures > 0 {
		f.failures--
		http.Error(w, "controller is busy", http.StatusInternalServerError)
		return
	}
	var st cp.NodePolicyStatus
	if err := json.Unmarshal(body, &st); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var ps []string
	for _, p := range st.Policies {
		s := fmt.Sprintf("%s@%d", p.Name, p.Generation)
		if p.Error != "" {
			s += "!" + p.Error
		}
		ps = append(ps, s)
	}
	f.reports = append(f.reports, fmt.Sprintf("%s %s %s [%s]", st.APIVersion, st.Kind, st.Name, strings.Join(ps, " ")))
	f.bytes = append(f.bytes, len(body))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	w.Write(body)
}

func (f *fakeController) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.reports...)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 10s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func startReporter(t *testing.T, fc *fakeController, src Realizer, o ReporterOptions) *Reporter {
	t.Helper()
	srv := httptest.NewServer(fc)
	t.Cleanup(srv.Close)
	c, err := NewClient(&rest.Config{Host: srv.URL}, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	r := NewReporter(c, src, slog.New(slog.NewTextHandler(io.Discard, nil)), o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("the reporter did not stop with its context")
		}
	})
	return r
}

func TestReporter(t *testing.T) {
	fc := &fakeController{}
	src := newFakeRealizer()
	src.set("p1", 1, "")
	r := startReporter(t, fc, src, ReporterOptions{Debounce: 200 * time.Millisecond})

	// The whole set once at start.
	waitUntil(t, "first report", func() bool { return len(fc.got()) == 1 })
	if got, want := fc.got()[0], "controlplane.seine.io/v1beta1 NodePolicyStatus node-a [p1@1]"; got != want {
		t.Errorf("first report %q, want %q", got, want)
	}

	// A burst of changes is one report of the final set, sorted by name.
	for i := range 10 {
		src.set(fmt.Sprintf("p%d", i+2), int64(i+1), "")
	}
	src.set("p1", 0, "")
	src.set("p3", 5, "rule 0: protocol \"ICMP\"")
	want := "node-a [p10@9 p11@10 p2@1 p3@5!rule 0: protocol \"ICMP\" p4@3 p5@4 p6@5 p7@6 p8@7 p9@8]"
	waitUntil(t, "the burst's report", func() bool { return len(fc.got()) >= 2 })
	if got := fc.got(); len(got) != 2 || !strings.HasSuffix(got[1], want) {
		t.Errorf("reports after the burst %q, want one more ending %q", got, want)
	}

	// A kick (the watch reconnected) reports again, unchanged.
	r.Kick()
	waitUntil(t, "report after a kick", func() bool { return len(fc.got()) == 3 })
	if got := fc.got(); got[2] != got[1] {
		t.Errorf("report after a kick %q, want the same set %q", got[2], got[1])
	}
	// The fake controller records a report before its reply reaches the
	// reporter, which counts it then.
	waitUntil(t, "Reports() = 3", func() bool { return r.Reports() == 3 })
}

func TestReporterRetries(t *testing.T) {
	fc := &fakeController{failures: 3}
	src := newFakeRealizer()
	src.set("p1", 1, "")
	startReporter(t, fc, src, ReporterOptions{Debounce: time.Millisecond, Backoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	waitUntil(t, "a report after three failures", func() bool { return len(fc.got()) == 1 })
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.attempts != 4 {
		t.Errorf("%d attempts, want 4 (three refused, one accepted)", fc.attempts)
	}
}

// TestReportSize measures what a report costs on the wire.
func TestReportSize(t *testing.T) {
	for _, n := range []int{10, 1000} {
		fc := &fakeController{}
		src := newFakeRealizer()
		for i := range n {
			// Internal policies are named by the user policy's UID.
			src.set(fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i), int64(1+i%5), "")
		}
		startReporter(t, fc, src, ReporterOptions{Debounce: time.Millisecond})
		waitUntil(t, "report", func() bool { return len(fc.got()) == 1 })
		fc.mu.Lock()
		size := fc.bytes[0]
		fc.mu.Unlock()
		t.Logf("a report of %d policies: %d bytes of JSON (%.0f per policy)", n, size, float64(size)/float64(n))
		if per := size / n; per > 100 {
			t.Errorf("%d bytes per policy, want under 100", per)
		}
	}
}

// A kick (the watch listed again: the controller is back) ends the wait
// after a failed report.
func TestReporterKickEndsBackoff(t *testing.T) {
	fc := &fakeController{failures: 1}
	src := newFakeRealizer()
	src.set("p1", 1, "")
	r := startReporter(t, fc, src, ReporterOptions{Debounce: time.Millisecond, Backoff: time.Hour})
	waitUntil(t, "the first, refused, report", func() bool {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		return fc.attempts == 1
	})
	r.Kick()
	waitUntil(t, "a report right after the kick, not an hour later", func() bool { return len(fc.got()) == 1 })
}
